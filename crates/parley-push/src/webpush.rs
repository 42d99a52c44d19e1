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
pub fn encrypt(payload: &[u8], keys: &Keys) -> Result<Vec<u8>, EncryptError> {
    let sender = loop {
        // A random 32-byte string is a valid P-256 scalar except with negligible probability.
        if let Ok(k) = SecretKey::from_slice(&rand::random::<[u8; 32]>()) {
            break k;
        }
    };
    encrypt_with(payload, keys, &sender, rand::random())
}

/// [`encrypt`] with the sender key and salt given (RFC 8291 §3.3–3.4).
pub fn encrypt_with(payload: &[u8], keys: &Keys, sender: &SecretKey, salt: [u8; 16]) -> Result<Vec<u8>, EncryptError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(EncryptError::TooLarge);
    }
    if keys.auth.len() != 16 {
        return Err(EncryptError::BadAuthSecret);
    }
    let ua_public = keys.public_key()?;
    let as_public = sender.public_key().to_encoded_point(false);
    let shared = p256::ecdh::diffie_hellman(sender.to_nonzero_scalar(), ua_public.as_affine());
    // IKM = HKDF(salt = auth secret, ikm = ECDH secret, info = "WebPush: info\0" ‖ ua ‖ as).
    let mut info = Vec::with_capacity(14 + 65 + 65);
    info.extend_from_slice(b"WebPush: info\0");
    info.extend_from_slice(&keys.p256dh);
    info.extend_from_slice(as_public.as_bytes());
    let mut ikm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(&keys.auth), shared.raw_secret_bytes().as_slice())
        .expand(&info, &mut ikm)
        .map_err(|_| EncryptError::Cipher)?;
    ece_native::encrypt(ikm, salt, as_public.as_bytes(), std::iter::once(payload.to_vec()), RECORD_SIZE)
        .map_err(|_| EncryptError::Cipher)
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
