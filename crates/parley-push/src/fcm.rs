//! The FCM HTTP v1 client: an OAuth2 access token from the service account (a JWT-bearer grant
//! signed RS256 with its private key, at its `token_uri`), cached until a minute before it
//! expires, then `POST /v1/projects/{project}/messages:send` with the payload as `data`.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use parley_core::push::PushAddress;
use ring::signature::RsaKeyPair;

use crate::jwt;
use crate::provider::{self, Delivery, Provider, Push, retry_after, short, unix_now};

const GOOGLE: &str = "https://fcm.googleapis.com";
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// The fields of a Google service account key file this client uses.
#[derive(serde::Deserialize)]
struct ServiceAccount {
    project_id: String,
    client_email: String,
    private_key: String,
    token_uri: String,
}

#[derive(Debug, thiserror::Error)]
pub enum FcmError {
    #[error("the service account file is not a Google service account key (JSON): {0}")]
    BadFile(String),
    #[error("the service account's private_key is not an RSA PKCS#8 key in PEM")]
    BadKey,
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

pub struct Fcm {
    client: reqwest::Client,
    url: String,
    project_id: String,
    client_email: String,
    token_uri: String,
    key: RsaKeyPair,
    /// One fetch at a time: pushes waiting for a token share the one being fetched.
    token: tokio::sync::Mutex<Option<(String, Instant)>>,
}

impl Fcm {
    /// `account_json` is the key file's contents; `url` replaces Google's host (a fake in tests).
    pub fn new(account_json: &str, url: Option<String>, timeout: Duration) -> Result<Fcm, FcmError> {
        let a: ServiceAccount = serde_json::from_str(account_json).map_err(|e| FcmError::BadFile(e.to_string()))?;
        let der = jwt::pkcs8_pem(&a.private_key).ok_or(FcmError::BadKey)?;
        let key = RsaKeyPair::from_pkcs8(&der).map_err(|_| FcmError::BadKey)?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            .build()
            .map_err(|e| FcmError::Client(e.to_string()))?;
        Ok(Fcm {
            client,
            url: url.map_or_else(|| GOOGLE.into(), |u| u.trim_end_matches('/').to_owned()),
            project_id: a.project_id,
            client_email: a.client_email,
            token_uri: a.token_uri,
            key,
            token: tokio::sync::Mutex::new(None),
        })
    }

    async fn access_token(&self) -> Result<String, Delivery> {
        let mut cached = self.token.lock().await;
        if let Some((t, until)) = cached.as_ref()
            && Instant::now() < *until
        {
            return Ok(t.clone());
        }
        let now = unix_now();
        let claims = serde_json::json!({
            "iss": self.client_email, "scope": SCOPE, "aud": self.token_uri, "iat": now, "exp": now + 3600,
        });
        let assertion = jwt::rs256(&self.key, &serde_json::json!({ "alg": "RS256", "typ": "JWT" }), &claims)
            .map_err(|_| Delivery::Rejected { status: 0, reason: "cannot sign the token request".into() })?;
        // The assertion is base64url and dots: nothing to escape in a form body.
        let form = format!("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}");
        let resp = self
            .client
            .post(&self.token_uri)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .map_err(|e| Delivery::unanswered(&e))?;
        let status = resp.status().as_u16();
        let wait = retry_after(resp.headers());
        let answer: serde_json::Value = resp.json().await.unwrap_or_default();
        match answer["access_token"].as_str() {
            Some(t) if status == 200 => {
                let lifetime = answer["expires_in"].as_u64().unwrap_or(3600);
                let until = Instant::now() + Duration::from_secs(lifetime.saturating_sub(60).max(1));
                *cached = Some((t.to_owned(), until));
                Ok(t.to_owned())
            }
            _ => {
                let reason = format!("token: {}", short(answer["error"].as_str().unwrap_or("no access_token")));
                Err(if status == 429 || status >= 500 || status == 0 {
                    Delivery::Retry { status, reason, retry_after: wait }
                } else {
                    Delivery::Rejected { status, reason }
                })
            }
        }
    }

    async fn forget_token(&self) {
        *self.token.lock().await = None;
    }
}

#[async_trait]
impl Provider for Fcm {
    fn name(&self) -> &'static str {
        "fcm"
    }

    async fn send(&self, push: &Push<'_>) -> Delivery {
        let PushAddress::Token { token, .. } = push.address else {
            return Delivery::Rejected { status: 0, reason: "not a registration token".into() };
        };
        let bearer = match self.access_token().await {
            Ok(t) => t,
            Err(d) => return d,
        };
        let body = serde_json::json!({ "message": {
            "token": token,
            "data": push.payload.string_map(),
            "android": { "priority": "high", "collapse_key": push.topic, "ttl": format!("{}s", push.ttl.as_secs()) },
        }});
        let request = self
            .client
            .post(format!("{}/v1/projects/{}/messages:send", self.url, self.project_id))
            .bearer_auth(bearer)
            .json(&body);
        let r = match provider::send(request).await {
            Ok(None) => return Delivery::Delivered,
            Ok(Some(r)) => r,
            Err(d) => return d,
        };
        let (status, wait, answer) = (r.status, r.wait, r.body);
        let code = answer["error"]["details"]
            .as_array()
            .and_then(|d| d.iter().find_map(|x| x["errorCode"].as_str()))
            .or_else(|| answer["error"]["status"].as_str())
            .unwrap_or("")
            .to_owned();
        let reason = short(&code);
        match (status, code.as_str()) {
            (_, "UNREGISTERED") | (_, "SENDER_ID_MISMATCH") => Delivery::Gone { status, reason, at: None },
            (401, _) => {
                self.forget_token().await;
                Delivery::Retry { status, reason, retry_after: Some(Duration::from_secs(1)) }
            }
            (429 | 500..=599, _) => Delivery::Retry { status, reason, retry_after: wait },
            _ => Delivery::Rejected { status, reason },
        }
    }
}
