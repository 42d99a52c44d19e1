//! The Web Push and UnifiedPush client (RFC 8030): the payload encrypted for the subscription
//! ([`crate::webpush`]), VAPID authorization ([`crate::vapid`]) cached per push service origin,
//! and `TTL`, `Urgency` and `Topic` headers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use parley_core::push::PushAddress;

use crate::guard::{self, GuardedResolver};
use crate::provider::{self, Delivery, Provider, Push, unix_now};
use crate::vapid::VapidKey;
use crate::webpush::{self, Keys};

/// VAPID tokens are made valid this long (RFC 8292 allows up to 24 h)...
const TOKEN_LIFETIME: u64 = 12 * 3600;
/// ...and replaced when less than this is left.
const TOKEN_MARGIN: u64 = 3600;

pub struct WebPush {
    client: reqwest::Client,
    vapid: VapidKey,
    subject: String,
    allow_private: bool,
    /// origin → (authorization header, expiry in seconds since the epoch).
    tokens: Mutex<HashMap<String, (String, u64)>>,
}

impl std::fmt::Debug for WebPush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebPush").field("vapid", &self.vapid).finish_non_exhaustive()
    }
}

impl WebPush {
    /// `subject` is the operator's contact (`mailto:` or `https:`), sent in every token.
    pub fn new(
        vapid: VapidKey,
        subject: String,
        allow_private: bool,
        timeout: Duration,
    ) -> Result<WebPush, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver { allow_private }))
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            .build()?;
        Ok(WebPush { client, vapid, subject, allow_private, tokens: Mutex::new(HashMap::new()) })
    }

    pub fn vapid(&self) -> &VapidKey {
        &self.vapid
    }

    fn authorization(&self, endpoint: &str) -> Option<String> {
        let origin = crate::vapid::origin(endpoint)?;
        let now = unix_now();
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((header, exp)) = tokens.get(&origin)
            && *exp > now + TOKEN_MARGIN
        {
            return Some(header.clone());
        }
        let exp = now + TOKEN_LIFETIME;
        let header = self.vapid.authorization(endpoint, &self.subject, exp).ok()?;
        if tokens.len() > 10_000 {
            // Endpoints come from clients: never let their origins grow this map without bound.
            tokens.clear();
        }
        tokens.insert(origin, (header.clone(), exp));
        Some(header)
    }
}

#[async_trait]
impl Provider for WebPush {
    fn name(&self) -> &'static str {
        "webpush"
    }

    async fn send(&self, push: &Push<'_>) -> Delivery {
        let PushAddress::Web { endpoint, p256dh, auth } = push.address else {
            return Delivery::Rejected { status: 0, reason: "not a web push registration".into() };
        };
        let url = match reqwest::Url::parse(endpoint) {
            Ok(u) if guard::check_literal(&u, self.allow_private).is_ok() => u,
            _ => return Delivery::Rejected { status: 0, reason: "endpoint refused".into() },
        };
        let body = match Keys::from_base64url(p256dh, auth)
            .and_then(|k| webpush::encrypt(push.payload.json().to_string().as_bytes(), &k))
        {
            Ok(b) => b,
            Err(e) => return Delivery::Rejected { status: 0, reason: e.to_string() },
        };
        let Some(authorization) = self.authorization(endpoint) else {
            return Delivery::Rejected { status: 0, reason: "cannot sign the VAPID token".into() };
        };
        let request = self
            .client
            .post(url)
            .header("content-encoding", "aes128gcm")
            .header("content-type", "application/octet-stream")
            .header("ttl", push.ttl.as_secs().to_string())
            .header("urgency", "high")
            .header("topic", push.topic)
            .header("authorization", authorization)
            .body(body);
        let r = match provider::send(request).await {
            Ok(None) => return Delivery::Delivered,
            Ok(Some(r)) => r,
            Err(d) => return d,
        };
        // The status's name, not the body: a push service may echo the endpoint, which is the
        // subscription's secret, and the reason is stored and logged.
        let (status, reason) = (r.status, r.reason_phrase.to_owned());
        match status {
            404 | 410 => Delivery::Gone { status, reason, at: None },
            429 | 500..=599 => Delivery::Retry { status, reason, retry_after: r.wait },
            _ => Delivery::Rejected { status, reason },
        }
    }
}
