//! The key directory of end-to-end encryption: `PUT /v1/keys`, `GET /v1/keys/count`,
//! `POST /v1/keys/claim` and `GET /v1/users/{user_id}/devices`. Key material is opaque JSON the
//! server keeps and hands out, at most 4 KiB a piece.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use parley_core::ids::{DeviceId, UserId};
use parley_core::limits::MAX_GROUP_MEMBERS;
use parley_proto::Id;
use parley_proto::frames::{KeysLow, ServerFrame};
use parley_proto::rest::{
    ClaimKeys, ClaimedDevice, ClaimedKeys, DeviceKeys, KeysCount, KeysUploaded, PublishedKey, PutKeys, UserDevices,
};
use parley_store::e2ee::{KEYS_LOW, KeyUpload, MAX_KEYS_PER_UPLOAD};
use serde_json::Value;

use super::path_id;
use crate::auth::Authed;
use crate::error::{ApiError, ApiResult};
use crate::json::JsonBody;
use crate::state::App;

/// Largest key (or identity), as JSON text.
const MAX_KEY_BYTES: usize = 4 * 1024;
/// Longest key id.
const MAX_KEY_ID_BYTES: usize = 128;

fn key_text(what: &str, v: &Value) -> ApiResult<String> {
    if v.is_null() {
        return Err(ApiError::bad_request(format!("{what} must not be null")));
    }
    let text = v.to_string();
    if text.len() > MAX_KEY_BYTES {
        return Err(ApiError::bad_request(format!("{what} is larger than {MAX_KEY_BYTES} bytes")));
    }
    Ok(text)
}

fn key_id(id: &str) -> ApiResult<String> {
    if id.is_empty() || id.len() > MAX_KEY_ID_BYTES || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::bad_request(format!("key_id must be 1 to {MAX_KEY_ID_BYTES} printable ASCII bytes")));
    }
    Ok(id.to_owned())
}

fn published(id: String, key: &str) -> PublishedKey {
    PublishedKey { key_id: id, key: serde_json::from_str(key).unwrap_or(Value::Null) }
}

pub(super) async fn put(
    State(app): State<Arc<App>>,
    me: Authed,
    JsonBody(req): JsonBody<PutKeys>,
) -> ApiResult<Json<KeysUploaded>> {
    if req.one_time_keys.len() > MAX_KEYS_PER_UPLOAD {
        return Err(ApiError::bad_request(format!("at most {MAX_KEYS_PER_UPLOAD} one-time keys per request")));
    }
    let identity = match &req.identity {
        Some(v) if !v.is_object() => return Err(ApiError::bad_request("identity must be a JSON object")),
        Some(v) => Some(key_text("identity", v)?),
        None => None,
    };
    let mut one_time = Vec::with_capacity(req.one_time_keys.len());
    for k in &req.one_time_keys {
        let id = key_id(&k.key_id)?;
        if one_time.iter().any(|(i, _): &(String, String)| *i == id) {
            return Err(ApiError::bad_request(format!("one-time key {id:?} is named twice")));
        }
        one_time.push((id, key_text("a one-time key", &k.key)?));
    }
    let fallback = match &req.fallback_key {
        Some(k) => Some((key_id(&k.key_id)?, key_text("fallback_key", &k.key)?)),
        None => None,
    };
    let count = app.store.put_keys(me.user_id, me.device_id, KeyUpload { identity, one_time, fallback }).await?;
    Ok(Json(KeysUploaded { one_time_key_count: count }))
}

pub(super) async fn count(State(app): State<Arc<App>>, me: Authed) -> ApiResult<Json<KeysCount>> {
    let (one_time_key_count, fallback_key) = app.store.key_counts(me.device_id).await?;
    Ok(Json(KeysCount { one_time_key_count, fallback_key }))
}

pub(super) async fn claim(
    State(app): State<Arc<App>>,
    me: Authed,
    JsonBody(req): JsonBody<ClaimKeys>,
) -> ApiResult<Json<ClaimedKeys>> {
    if req.devices.is_empty() || req.devices.len() > MAX_GROUP_MEMBERS {
        return Err(ApiError::bad_request(format!("devices must name 1 to {MAX_GROUP_MEMBERS} devices")));
    }
    let asked = req.devices.iter().map(|d| (UserId(d.user_id.0), DeviceId(d.device_id.0))).collect();
    let claimed = app.store.claim_keys(me.user_id, asked).await?;
    let devices = claimed
        .into_iter()
        .map(|c| ClaimedDevice {
            user_id: Id(c.user.0),
            device_id: Id(c.device.0),
            identity: serde_json::from_str(&c.identity).unwrap_or(Value::Null),
            one_time_key: c.key.map(|(id, key)| published(id, &key)),
            fallback: c.fallback,
        })
        .collect();
    Ok(Json(ClaimedKeys { devices }))
}

pub(super) async fn user_devices(
    State(app): State<Arc<App>>,
    me: Authed,
    Path(raw): Path<String>,
) -> ApiResult<Json<UserDevices>> {
    let user = UserId(path_id(&raw));
    let list = app.store.device_list(me.user_id, user).await?.ok_or_else(ApiError::not_found)?;
    Ok(Json(UserDevices {
        user_id: Id(user.0),
        list_version: list.list_version,
        devices: list
            .devices
            .into_iter()
            .map(|(d, identity)| DeviceKeys {
                device_id: Id(d.0),
                identity: identity.and_then(|i| serde_json::from_str(&i).ok()),
            })
            .collect(),
    }))
}

/// The `keys_low` frame a device gets on connect while it has published an identity and holds
/// fewer than 10 unused one-time keys.
pub(crate) async fn low_frame(app: &App, device: DeviceId) -> Option<String> {
    let (count, _) = app.store.key_counts(device).await.ok()?;
    if count >= KEYS_LOW || !app.store.has_identity(device).await.ok()? {
        return None;
    }
    Some(ServerFrame::KeysLow(KeysLow { one_time_key_count: count }).to_json())
}
