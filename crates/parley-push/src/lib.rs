//! The push boundary: what Parley sends to a device that has no open connection. Payloads never
//! carry message content ([`payload`]).
//!
//! [`Provider`] is the boundary; each provider is a small client of its own with a base URL an
//! operator (or a test) may point elsewhere: Web Push and UnifiedPush ([`web`], with the RFC 8291
//! encryption in [`webpush`] and RFC 8292 VAPID in [`vapid`]), APNs ([`apns`]) and FCM HTTP v1
//! ([`fcm`]). [`guard`] keeps client-named endpoints off private networks. Who is pushed, and
//! the durable queue, are the server's and the store's (`parley_core::push`,
//! `parley_store::push`).

pub mod apns;
pub mod fcm;
pub mod guard;
pub mod jwt;
pub mod payload;
pub mod provider;
pub mod vapid;
pub mod web;
pub mod webpush;

pub use payload::{Payload, Topics};
pub use provider::{Delivery, Provider, Push};

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
