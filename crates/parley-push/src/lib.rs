//! The push boundary: what Parley sends to a device that has no open connection, and the
//! cryptography each provider requires. Payloads never carry message content.
//!
//! Built so far: Web Push payload encryption (RFC 8291, `aes128gcm` of RFC 8188) in [`webpush`]
//! and the VAPID signature (RFC 8292) in [`vapid`]. The provider clients, the decision of who is
//! pushed and the durable job queue follow (issue 12).

pub mod vapid;
pub mod webpush;

/// Base64url without padding, the encoding Web Push and JWTs use for keys and tokens.
pub(crate) fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url, with or without padding (subscriptions from browsers come both ways).
pub(crate) fn from_b64url(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()
}
