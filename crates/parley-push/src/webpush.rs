//! Web Push message encryption (RFC 8291): the payload is encrypted for one browser subscription
//! with `aes128gcm` (RFC 8188), keyed by an ECDH agreement between a fresh sender key and the
//! subscription's P-256 key, mixed with its 16-byte authentication secret. The push service in
//! between sees only ciphertext.
//!
//! The primitives are the `p256`, `hkdf` and `ece-native` crates; this module only wires them as
//! RFC 8291 §3.3–3.4 says, so the sender key and salt can be given, which lets a test reproduce
//! the RFC's own example byte for byte.

use hkdf::Hkdf;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::{PublicKey, SecretKey};
use sha2::Sha256;

/// The record size written in the header: larger than any payload we send (RFC 8291 §4 asks
/// for one record, and for `rs` greater than the plaintext plus padding and tag).
const RECORD_SIZE: u32 = 4096;
/// The most a single-record payload may hold: 4096 − 16 (tag) − 1 (delimiter), and push
/// services cap a message body at 4096 bytes with its 86-byte header.
pub const MAX_PAYLOAD: usize = 3993;

/// Why a payload could not be encrypted for a subscription.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncryptError {
    #[error("the subscription's p256dh key is not an uncompressed P-256 point")]
    BadPublicKey,
    #[error("the subscription's auth secret is not 16 bytes")]
    BadAuthSecret,
    #[error("the payload is larger than one record ({MAX_PAYLOAD} bytes)")]
    TooLarge,
    #[error("encryption failed")]
    Cipher,
}

/// A browser's push subscription keys, as its `PushSubscription.toJSON().keys` gives them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    /// The user agent's P-256 public key, uncompressed (65 bytes).
    pub p256dh: Vec<u8>,
    /// The 16-byte authentication secret.
    pub auth: Vec<u8>,
}

impl Keys {
    /// From the base64url strings of a subscription (`keys.p256dh`, `keys.auth`).
    pub fn from_base64url(p256dh: &str, auth: &str) -> Result<Keys, EncryptError> {
        let p256dh = crate::from_b64url(p256dh).ok_or(EncryptError::BadPublicKey)?;
        let auth = crate::from_b64url(auth).ok_or(EncryptError::BadAuthSecret)?;
        let keys = Keys { p256dh, auth };
        keys.public_key()?;
        if keys.auth.len() != 16 {
            return Err(EncryptError::BadAuthSecret);
        }
        Ok(keys)
    }

    fn public_key(&self) -> Result<PublicKey, EncryptError> {
        if self.p256dh.len() != 65 {
            return Err(EncryptError::BadPublicKey);
        }
        PublicKey::from_sec1_bytes(&self.p256dh).map_err(|_| EncryptError::BadPublicKey)
    }
}

/// Encrypts `payload` for the subscription with a fresh sender key and salt: the request body
/// of a Web Push message (`Content-Encoding: aes128gcm`).
///
/// The ECDH is ring's (its P-256 is assembly, about ten times the pure-Rust `p256` this module
/// uses where a key must be given, [`encrypt_with`]): it is most of the cost of a push.
pub fn encrypt(payload: &[u8], keys: &Keys) -> Result<Vec<u8>, EncryptError> {
    use ring::agreement::{ECDH_P256, EphemeralPrivateKey, UnparsedPublicKey, agree_ephemeral};
    check(payload, keys)?;
    let rng = ring::rand::SystemRandom::new();
    let sender = EphemeralPrivateKey::generate(&ECDH_P256, &rng).map_err(|_| EncryptError::Cipher)?;
    let as_public = sender.compute_public_key().map_err(|_| EncryptError::Cipher)?;
    let ikm = agree_ephemeral(sender, &UnparsedPublicKey::new(&ECDH_P256, &keys.p256dh), |shared| {
        input_key(shared, &keys.auth, &keys.p256dh, as_public.as_ref())
    })
    .map_err(|_| EncryptError::BadPublicKey)??;
    ece_native::encrypt(ikm, rand::random(), as_public.as_ref(), std::iter::once(payload.to_vec()), RECORD_SIZE)
        .map_err(|_| EncryptError::Cipher)
}

fn check(payload: &[u8], keys: &Keys) -> Result<(), EncryptError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(EncryptError::TooLarge);
    }
    if keys.auth.len() != 16 {
        return Err(EncryptError::BadAuthSecret);
    }
    Ok(())
}

/// [`encrypt`] with the sender key and salt given (RFC 8291 §3.3–3.4).
pub fn encrypt_with(payload: &[u8], keys: &Keys, sender: &SecretKey, salt: [u8; 16]) -> Result<Vec<u8>, EncryptError> {
    check(payload, keys)?;
    let ua_public = keys.public_key()?;
    let as_public = sender.public_key().to_encoded_point(false);
    let shared = p256::ecdh::diffie_hellman(sender.to_nonzero_scalar(), ua_public.as_affine());
    let ikm = input_key(shared.raw_secret_bytes().as_slice(), &keys.auth, &keys.p256dh, as_public.as_bytes())?;
    ece_native::encrypt(ikm, salt, as_public.as_bytes(), std::iter::once(payload.to_vec()), RECORD_SIZE)
        .map_err(|_| EncryptError::Cipher)
}

/// The receiving side (what a browser does): decrypts a Web Push body for the subscription whose
/// private key is `ua` and authentication secret `auth`. For tools that stand in for a push
/// service (`parley bench push`); the server only encrypts.
pub fn decrypt(body: &[u8], ua: &SecretKey, auth: &[u8]) -> Result<Vec<u8>, EncryptError> {
    // Header: salt (16), record size (4), key id length (1), key id (the sender's public key).
    let idlen = usize::from(*body.get(20).ok_or(EncryptError::Cipher)?);
    let as_public = body.get(21..21 + idlen).ok_or(EncryptError::Cipher)?;
    let sender = PublicKey::from_sec1_bytes(as_public).map_err(|_| EncryptError::BadPublicKey)?;
    let shared = p256::ecdh::diffie_hellman(ua.to_nonzero_scalar(), sender.as_affine());
    let ua_public = ua.public_key().to_encoded_point(false);
    let ikm = input_key(shared.raw_secret_bytes().as_slice(), auth, ua_public.as_bytes(), as_public)?;
    ece_native::decrypt(ikm, body.to_vec()).map_err(|_| EncryptError::Cipher)
}

/// IKM = HKDF(salt = auth secret, ikm = ECDH secret, info = "WebPush: info\0" ‖ ua ‖ as)
/// (RFC 8291 §3.3).
fn input_key(ecdh: &[u8], auth: &[u8], ua_public: &[u8], as_public: &[u8]) -> Result<[u8; 32], EncryptError> {
    let mut info = Vec::with_capacity(14 + 65 + 65);
    info.extend_from_slice(b"WebPush: info\0");
    info.extend_from_slice(ua_public);
    info.extend_from_slice(as_public);
    let mut ikm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(auth), ecdh).expand(&info, &mut ikm).map_err(|_| EncryptError::Cipher)?;
    Ok(ikm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::from_b64url as b;

    /// RFC 8291 §5 and Appendix A: the same keys, salt and plaintext give the RFC's body.
    #[test]
    fn reproduces_the_rfc_8291_example() {
        let keys = Keys::from_base64url(
            "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
            "BTBZMqHH6r4Tts7J_aSIgg",
        )
        .unwrap();
        let sender = SecretKey::from_slice(&b("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw").unwrap()).unwrap();
        let salt: [u8; 16] = b("DGv6ra1nlYgDCS1FRnbzlw").unwrap().try_into().unwrap();
        let body = encrypt_with(b"When I grow up, I want to be a watermelon", &keys, &sender, salt).unwrap();
        assert_eq!(
            crate::b64url(&body),
            "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
        );
    }

    /// The RFC's body decrypts with the RFC's user agent key.
    #[test]
    fn decrypts_the_rfc_8291_example() {
        let body = b("DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN").unwrap();
        let ua = SecretKey::from_slice(&b("q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94").unwrap()).unwrap();
        let plain = decrypt(&body, &ua, &b("BTBZMqHH6r4Tts7J_aSIgg").unwrap()).unwrap();
        assert_eq!(plain, b"When I grow up, I want to be a watermelon");
        assert_eq!(decrypt(&body, &ua, &[0; 16]), Err(EncryptError::Cipher), "a wrong auth secret");
    }

    /// The production path (ring's ECDH) and the given-key path (`p256`) agree: what `encrypt`
    /// makes, the receiver's side opens.
    #[test]
    fn what_encrypt_makes_decrypts() {
        let ua = SecretKey::from_slice(&[9u8; 32]).unwrap();
        let keys = Keys { p256dh: ua.public_key().to_encoded_point(false).as_bytes().to_vec(), auth: vec![3; 16] };
        let body = encrypt(b"{\"v\":1}", &keys).unwrap();
        assert_eq!(decrypt(&body, &ua, &keys.auth).unwrap(), b"{\"v\":1}");
    }

    #[test]
    fn fresh_keys_each_time_and_bad_input_is_refused() {
        let ua = SecretKey::from_slice(&[7u8; 32]).unwrap();
        let keys = Keys { p256dh: ua.public_key().to_encoded_point(false).as_bytes().to_vec(), auth: vec![1; 16] };
        let (a, b2) = (encrypt(b"x", &keys).unwrap(), encrypt(b"x", &keys).unwrap());
        assert_ne!(a, b2, "a new salt and sender key per message");
        assert_eq!(a.len(), 16 + 4 + 1 + 65 + 1 + 1 + 16, "header, one record: byte, delimiter, tag");
        assert_eq!(encrypt(&[0; MAX_PAYLOAD + 1], &keys), Err(EncryptError::TooLarge));
        assert_eq!(Keys::from_base64url("AAAA", "BTBZMqHH6r4Tts7J_aSIgg"), Err(EncryptError::BadPublicKey));
        let bad_auth = Keys { auth: vec![1; 15], ..keys };
        assert_eq!(encrypt(b"x", &bad_auth), Err(EncryptError::BadAuthSecret));
    }
}
