//! The APNs client: HTTP/2 to Apple's provider API with token authentication. The provider
//! token (an ES256 JWT of the team id and the time, signed with the `.p8` key) is reused for
//! 40 minutes: Apple rejects tokens older than an hour and refuses refreshes more often than
//! every 20 minutes (`TooManyProviderTokenUpdates`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parley_core::push::PushAddress;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

use crate::jwt;
use crate::provider::{self, Delivery, Provider, Push, short, unix_now};

const PRODUCTION: &str = "https://api.push.apple.com";
const SANDBOX: &str = "https://api.sandbox.push.apple.com";
/// How long a provider token is reused.
const TOKEN_REUSE: Duration = Duration::from_secs(40 * 60);

/// What an operator configures (see docs/OPERATIONS.md).
pub struct ApnsConfig {
    /// The `.p8` file's contents (a PKCS#8 P-256 key in PEM).
    pub key_pem: String,
    pub key_id: String,
    pub team_id: String,
    /// The app's bundle id.
    pub topic: String,
    /// Replaces both of Apple's hosts (a local fake in tests).
    pub url: Option<String>,
    /// Extra CA certificates (PEM) to trust, for a fake with its own CA.
    pub ca_pem: Option<Vec<u8>>,
    /// Pushes as `background` (content-available, priority 5) instead of `alert`.
    pub background: bool,
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ApnsError {
    #[error("the APNs key is not a PKCS#8 P-256 key in PEM (the .p8 file Apple gives)")]
    BadKey,
    #[error("the APNs CA file is not PEM certificates: {0}")]
    BadCa(String),
    #[error("cannot build the HTTP/2 client: {0}")]
    Client(String),
}

pub struct Apns {
    client: reqwest::Client,
    production: String,
    sandbox: String,
    key: EcdsaKeyPair,
    key_id: String,
    team_id: String,
    topic: String,
    background: bool,
    token: Mutex<Option<(String, Instant)>>,
}

impl Apns {
    pub fn new(c: ApnsConfig) -> Result<Apns, ApnsError> {
        let der = jwt::pkcs8_pem(&c.key_pem).ok_or(ApnsError::BadKey)?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &SystemRandom::new())
            .map_err(|_| ApnsError::BadKey)?;
        let mut builder = reqwest::Client::builder()
            .http2_prior_knowledge()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(c.timeout.min(Duration::from_secs(5)))
            .timeout(c.timeout)
            .http2_keep_alive_interval(Duration::from_secs(60));
        if let Some(pem) = &c.ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem).map_err(|e| ApnsError::BadCa(e.to_string()))? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| ApnsError::Client(e.to_string()))?;
        let base = c.url.map(|u| u.trim_end_matches('/').to_owned());
        Ok(Apns {
            client,
            production: base.clone().unwrap_or_else(|| PRODUCTION.into()),
            sandbox: base.unwrap_or_else(|| SANDBOX.into()),
            key,
            key_id: c.key_id,
            team_id: c.team_id,
            topic: c.topic,
            background: c.background,
            token: Mutex::new(None),
        })
    }

    /// The cached provider token, or a new one when it is 40 minutes old.
    fn provider_token(&self) -> Option<String> {
        let mut cached = self.token.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((t, at)) = cached.as_ref()
            && at.elapsed() < TOKEN_REUSE
        {
            return Some(t.clone());
        }
        let header = serde_json::json!({ "alg": "ES256", "kid": self.key_id });
        let claims = serde_json::json!({ "iss": self.team_id, "iat": unix_now() });
        let t = jwt::es256(&self.key, &header, &claims).ok()?;
        *cached = Some((t.clone(), Instant::now()));
        Some(t)
    }

    fn forget_token(&self) {
        *self.token.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

#[async_trait]
impl Provider for Apns {
    fn name(&self) -> &'static str {
        "apns"
    }

    async fn send(&self, push: &Push<'_>) -> Delivery {
        let PushAddress::Token { token, sandbox } = push.address else {
            return Delivery::Rejected { status: 0, reason: "not a device token".into() };
        };
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Delivery::Gone { status: 400, reason: "BadDeviceToken".into(), at: None };
        }
        let Some(bearer) = self.provider_token() else {
            return Delivery::Rejected { status: 0, reason: "cannot sign the provider token".into() };
        };
        let base = if *sandbox { &self.sandbox } else { &self.production };
        let mut body = push.payload.json();
        let (push_type, priority) = if self.background {
            body["aps"] = serde_json::json!({ "content-available": 1 });
            ("background", "5")
        } else {
            // A generic alert the app's notification service extension replaces from its own
            // state: the words are the same for every push and say nothing of the message.
            body["aps"] =
                serde_json::json!({ "alert": { "title": "New message" }, "mutable-content": 1, "sound": "default" });
            ("alert", "10")
        };
        let expiration = unix_now() + push.ttl.as_secs();
        let request = self
            .client
            .post(format!("{base}/3/device/{token}"))
            .header("authorization", format!("bearer {bearer}"))
            .header("apns-topic", &self.topic)
            .header("apns-push-type", push_type)
            .header("apns-priority", priority)
            .header("apns-expiration", expiration.to_string())
            .header("apns-collapse-id", push.topic)
            .header("content-type", "application/json")
            .body(body.to_string());
        let r = match provider::send(request).await {
            Ok(None) => return Delivery::Delivered,
            Ok(Some(r)) => r,
            Err(d) => return d,
        };
        let (status, wait, answer) = (r.status, r.wait, r.body);
        let reason = short(answer["reason"].as_str().unwrap_or(""));
        match (status, reason.as_str()) {
            (410, _) | (400, "BadDeviceToken" | "DeviceTokenNotForTopic") => {
                Delivery::Gone { status, at: answer["timestamp"].as_i64(), reason }
            }
            (403, "ExpiredProviderToken" | "InvalidProviderToken") => {
                self.forget_token();
                Delivery::Retry { status, reason, retry_after: Some(Duration::from_secs(1)) }
            }
            (429 | 500..=599, _) => Delivery::Retry { status, reason, retry_after: wait },
            _ => Delivery::Rejected { status, reason },
        }
    }
}
