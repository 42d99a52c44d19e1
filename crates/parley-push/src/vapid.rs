//! VAPID (RFC 8292): the server's identity towards Web Push services. One P-256 key pair per
//! deployment, made at first start and kept (its public half is the `applicationServerKey`
//! browsers subscribe with, so losing it orphans every subscription); each request carries
//! `Authorization: vapid t=<ES256 JWT>, k=<public key>` with the push service's origin as `aud`.

use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

/// Why a VAPID key could not be made, loaded or used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VapidError {
    #[error("cannot generate a VAPID key")]
    Generate,
    #[error("the stored VAPID key is not a PKCS#8 P-256 key")]
    BadKey,
    #[error("the push endpoint is not an http(s) URL")]
    BadEndpoint,
    #[error("cannot sign the VAPID token")]
    Sign,
}

/// The deployment's VAPID key pair.
pub struct VapidKey {
    pair: EcdsaKeyPair,
    /// The PKCS#8 document, what is stored to reload the same key.
    pkcs8: Vec<u8>,
}

impl std::fmt::Debug for VapidKey {
    /// Shows the public half only: the private key never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VapidKey").field("public", &self.public_key_base64url()).finish_non_exhaustive()
    }
}

impl VapidKey {
    /// A new random key pair.
    pub fn generate() -> Result<VapidKey, VapidError> {
        let rng = SystemRandom::new();
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).map_err(|_| VapidError::Generate)?;
        VapidKey::from_pkcs8(doc.as_ref())
    }

    /// The key stored earlier ([`VapidKey::pkcs8`]).
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<VapidKey, VapidError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &SystemRandom::new())
            .map_err(|_| VapidError::BadKey)?;
        Ok(VapidKey { pair, pkcs8: pkcs8.to_vec() })
    }

    /// What to store to reload this key (secret: keep it with the rest of the server's secrets).
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The uncompressed public key (65 bytes).
    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// The public key as browsers take it for `applicationServerKey`.
    pub fn public_key_base64url(&self) -> String {
        crate::b64url(self.public_key())
    }

    /// The `Authorization` header value for a request to `endpoint`: a token for the endpoint's
    /// origin, valid until `expires_at` (seconds since the epoch; at most 24 h ahead, RFC 8292
    /// §2), naming `subject` (a `mailto:` or `https:` contact).
    pub fn authorization(&self, endpoint: &str, subject: &str, expires_at: u64) -> Result<String, VapidError> {
        let aud = origin(endpoint).ok_or(VapidError::BadEndpoint)?;
        let header = crate::b64url(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = serde_json::json!({ "aud": aud, "exp": expires_at, "sub": subject });
        let claims = crate::b64url(claims.to_string().as_bytes());
        let input = format!("{header}.{claims}");
        let sig = self.pair.sign(&SystemRandom::new(), input.as_bytes()).map_err(|_| VapidError::Sign)?;
        Ok(format!("vapid t={input}.{}, k={}", crate::b64url(sig.as_ref()), self.public_key_base64url()))
    }
}

/// The origin of an http(s) URL (`scheme://host[:port]`, the port kept unless it is the
/// scheme's default), which a push service checks the token's `aud` against.
pub fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "https" && scheme != "http" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h).to_ascii_lowercase();
    if host_port.is_empty() {
        return None;
    }
    let default = if scheme == "https" { ":443" } else { ":80" };
    Some(format!("{scheme}://{}", host_port.strip_suffix(default).unwrap_or(&host_port)))
}

#[cfg(test)]
mod tests {
    use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};

    use super::*;
    use crate::from_b64url;

    #[test]
    fn a_stored_key_reloads_as_the_same_key() {
        let key = VapidKey::generate().unwrap();
        let again = VapidKey::from_pkcs8(key.pkcs8()).unwrap();
        assert_eq!(key.public_key(), again.public_key());
        assert_eq!(key.public_key().len(), 65);
        assert_eq!(VapidKey::from_pkcs8(b"not a key").unwrap_err(), VapidError::BadKey);
        assert!(!format!("{key:?}").contains(&crate::b64url(key.pkcs8())), "no private key in Debug");
    }

    #[test]
    fn the_token_is_an_es256_jwt_for_the_endpoints_origin() {
        let key = VapidKey::generate().unwrap();
        let h = key
            .authorization("https://push.example.net:8443/wpush/v2/abc?x=1", "mailto:ops@example.org", 1_700_000_000)
            .unwrap();
        let (t, k) = h.strip_prefix("vapid t=").unwrap().split_once(", k=").unwrap();
        assert_eq!(k, key.public_key_base64url());
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: serde_json::Value = serde_json::from_slice(&from_b64url(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["aud"], "https://push.example.net:8443");
        assert_eq!(claims["exp"], 1_700_000_000);
        assert_eq!(claims["sub"], "mailto:ops@example.org");
        let header: serde_json::Value = serde_json::from_slice(&from_b64url(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "ES256");
        let signed = format!("{}.{}", parts[0], parts[1]);
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key.public_key())
            .verify(signed.as_bytes(), &from_b64url(parts[2]).unwrap())
            .expect("the signature verifies with the public key");
    }

    #[test]
    fn origins_keep_non_default_ports_only() {
        assert_eq!(origin("https://fcm.googleapis.com/fcm/send/x").as_deref(), Some("https://fcm.googleapis.com"));
        assert_eq!(origin("https://h:443/p").as_deref(), Some("https://h"));
        assert_eq!(origin("http://127.0.0.1:9000/push/1").as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(origin("HTTPS://Push.Example/x").as_deref(), Some("https://push.example"));
        assert_eq!(origin("ftp://x/y"), None);
        assert_eq!(origin("https:///nohost"), None);
    }
}
