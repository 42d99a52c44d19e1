//! Compact JWS tokens signed with `ring` (ES256 for APNs and VAPID, RS256 for Google's OAuth
//! assertion), and PEM unwrapping of the keys operators download. Only the encoding is here; the
//! signatures are ring's, the PEM parsing rustls-pki-types'.

use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, RSA_PKCS1_SHA256, RsaKeyPair};

use crate::b64url;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cannot sign the token")]
pub struct SignError;

/// `header.claims.signature` with an ES256 (P-256, fixed-size r‖s) signature.
pub fn es256(key: &EcdsaKeyPair, header: &serde_json::Value, claims: &serde_json::Value) -> Result<String, SignError> {
    let input = signing_input(header, claims);
    let sig = key.sign(&SystemRandom::new(), input.as_bytes()).map_err(|_| SignError)?;
    Ok(format!("{input}.{}", b64url(sig.as_ref())))
}

/// `header.claims.signature` with an RS256 (RSASSA-PKCS1-v1_5 with SHA-256) signature.
pub fn rs256(key: &RsaKeyPair, header: &serde_json::Value, claims: &serde_json::Value) -> Result<String, SignError> {
    let input = signing_input(header, claims);
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), input.as_bytes(), &mut sig).map_err(|_| SignError)?;
    Ok(format!("{input}.{}", b64url(&sig)))
}

fn signing_input(header: &serde_json::Value, claims: &serde_json::Value) -> String {
    format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()))
}

/// The PKCS#8 DER of a private key in PEM (`-----BEGIN PRIVATE KEY-----`), the form of Apple's
/// `.p8` files and of Google's service account `private_key`.
pub fn pkcs8_pem(text: &str) -> Option<Vec<u8>> {
    use rustls_pki_types::PrivatePkcs8KeyDer;
    use rustls_pki_types::pem::PemObject;
    PrivatePkcs8KeyDer::from_pem_slice(text.as_bytes()).ok().map(|k| k.secret_pkcs8_der().to_vec())
}

#[cfg(test)]
mod tests {
    use ring::signature::{ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, KeyPair, UnparsedPublicKey};

    use super::*;

    #[test]
    fn es256_tokens_verify_with_the_public_key() {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref(), &rng).unwrap();
        let t = es256(&key, &serde_json::json!({"alg": "ES256"}), &serde_json::json!({"iss": "T"})).unwrap();
        let (input, sig) = t.rsplit_once('.').unwrap();
        let sig = crate::from_b64url(sig).unwrap();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key.public_key().as_ref())
            .verify(input.as_bytes(), &sig)
            .unwrap();
    }

    #[test]
    fn pem_private_keys_are_unwrapped() {
        let text = "junk\n-----BEGIN PRIVATE KEY-----\nAAEC\nAw==\n-----END PRIVATE KEY-----\n";
        assert_eq!(pkcs8_pem(text), Some(vec![0, 1, 2, 3]));
        assert_eq!(pkcs8_pem("-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n"), None);
    }
}
