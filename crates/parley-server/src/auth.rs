//! Passwords, tokens and the bearer-token extractor.
//!
//! Passwords are hashed with argon2id off the async threads, a few at a time, because each hash
//! costs ~50 ms of CPU. Tokens are 256 random bits shown to the client once; the server keeps
//! only their SHA-256, so checking one is an index lookup, never an argon2 run.

use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use parley_core::ids::{DeviceId, UserId};
use parley_core::model::Device;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::error::{ApiError, ApiResult};
use crate::state::App;

pub struct Passwords {
    permits: Arc<Semaphore>,
    /// Verified against when a username does not exist, so a wrong username costs as much time
    /// as a wrong password and logins do not reveal which accounts exist.
    dummy_hash: String,
}

impl Passwords {
    pub async fn new(concurrency: usize) -> Passwords {
        let dummy_hash = tokio::task::spawn_blocking(|| hash_blocking("parley-dummy-password"))
            .await
            .expect("hashing task")
            .expect("hashing a constant cannot fail");
        Passwords { permits: Arc::new(Semaphore::new(concurrency.max(1))), dummy_hash }
    }

    pub async fn hash(&self, password: &str) -> ApiResult<String> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ApiError::new(parley_proto::ErrorCode::Unavailable, "shutting down"))?;
        let pw = password.to_owned();
        tokio::task::spawn_blocking(move || hash_blocking(&pw)).await.map_err(|_| internal())?.map_err(|_| internal())
    }

    /// Checks `password` against `hash`, or against the dummy hash when there is no account.
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> ApiResult<bool> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ApiError::new(parley_proto::ErrorCode::Unavailable, "shutting down"))?;
        let exists = hash.is_some();
        let (pw, h) = (password.to_owned(), hash.unwrap_or(&self.dummy_hash).to_owned());
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&h).is_ok_and(|parsed| Argon2::default().verify_password(pw.as_bytes(), &parsed).is_ok())
        })
        .await
        .map_err(|_| internal())?;
        Ok(ok && exists)
    }
}

fn internal() -> ApiError {
    ApiError::new(parley_proto::ErrorCode::Internal, "internal error")
}

fn hash_blocking(password: &str) -> Result<String, argon2::password_hash::Error> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt)?;
    Ok(Argon2::default().hash_password(password.as_bytes(), &salt)?.to_string())
}

/// A new session token: 256 random bits, hex-encoded.
pub fn new_token() -> String {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Resolves a token to its device, recording the device's activity now and then.
pub async fn device_for_token(app: &App, token: &str) -> ApiResult<Option<Device>> {
    if token.is_empty() || token.len() > 256 {
        return Ok(None);
    }
    let device = app.store.device_by_token(token_hash(token)).await?;
    if let Some(d) = &device {
        let now = parley_core::now_ms();
        // Activity is informational: write it at most once a minute per device, lazily.
        if now - d.last_active_at > 60_000 {
            let store = app.store.clone();
            let id = d.id;
            app.tasks.spawn(async move {
                let _ = store.touch_device(id, now).await;
            });
        }
    }
    Ok(device)
}

/// The authenticated caller of a REST request (`Authorization: Bearer <token>`).
#[derive(Clone, Copy, Debug)]
pub struct Authed {
    pub user_id: UserId,
    pub device_id: DeviceId,
}

impl FromRequestParts<Arc<App>> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let token = header
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(ApiError::unauthorized)?;
        match device_for_token(app, token).await? {
            Some(d) => Ok(Authed { user_id: d.user_id, device_id: d.id }),
            None => Err(ApiError::unauthorized()),
        }
    }
}
