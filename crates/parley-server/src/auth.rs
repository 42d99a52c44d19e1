//! Passwords, tokens and the bearer-token extractor.
//!
//! Passwords are hashed with argon2id off the async threads (see `passwords.rs`). Tokens are 256
//! random bits shown to the client once; the server keeps only their SHA-256, so checking one is
//! an index lookup, never an argon2 run.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use parley_core::ids::{DeviceId, UserId};
use parley_core::model::Device;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};
use crate::state::App;

/// A new session token: 256 random bits, hex-encoded.
pub(crate) fn new_token() -> String {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Resolves a token to its device, recording the device's activity now and then.
pub(crate) async fn device_for_token(app: &App, token: &str) -> ApiResult<Option<Device>> {
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
pub(crate) struct Authed {
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
