//! Push registration, status, the VAPID key, the test push, and notification settings
//! (per conversation and do not disturb).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bytes::Bytes;
use parley_core::ids::ConversationId;
use parley_core::push::{self, Notify, PushAddress, PushKind, SettingsPatch};
use parley_proto::frames::ServerFrame;
use parley_proto::rest::{
    PatchSettings, PushEnvelope, PushError, PushRegistered, PushStatus, PushStatusEnvelope, PushTest, PutPush,
    SettingsEnvelope, VapidKey,
};
use parley_push::Delivery;
use parley_router::Outbound;
use parley_store::PushDone;

use super::path_id;
use crate::auth::Authed;
use crate::convert;
use crate::error::{ApiError, ApiResult};
use crate::json::JsonBody;
use crate::state::App;

/// Device tokens are at most this long (APNs tokens are 64 hex digits, FCM's about 160 chars).
const MAX_TOKEN: usize = 4096;
/// Endpoints are at most this long.
const MAX_ENDPOINT: usize = 2048;

pub(super) async fn put(
    State(app): State<Arc<App>>,
    me: Authed,
    JsonBody(req): JsonBody<PutPush>,
) -> ApiResult<Json<PushEnvelope>> {
    let kind = PushKind::parse(&req.kind)
        .ok_or_else(|| ApiError::bad_request("kind must be webpush, unifiedpush, apns or fcm"))?;
    if app.push.providers.get(kind).is_none() {
        return Err(ApiError::bad_request(format!("this server has no credentials for {}", kind.as_str())));
    }
    let address = if kind.is_web() {
        let (Some(endpoint), Some(keys)) = (&req.endpoint, &req.keys) else {
            return Err(ApiError::bad_request("endpoint and keys {p256dh, auth} are required"));
        };
        if endpoint.len() > MAX_ENDPOINT {
            return Err(ApiError::bad_request(format!("endpoint is longer than {MAX_ENDPOINT} bytes")));
        }
        parley_push::webpush::Keys::from_base64url(&keys.p256dh, &keys.auth)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        parley_push::guard::check_endpoint(endpoint, app.config.push_allow_private_endpoints)
            .await
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        PushAddress::Web { endpoint: endpoint.clone(), p256dh: keys.p256dh.clone(), auth: keys.auth.clone() }
    } else {
        let Some(token) = req.token.as_deref().filter(|t| !t.is_empty()) else {
            return Err(ApiError::bad_request("token is required"));
        };
        if token.len() > MAX_TOKEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ApiError::bad_request("token must be printable ASCII of at most 4096 bytes"));
        }
        if kind == PushKind::Apns && !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::bad_request("an APNs device token is hexadecimal"));
        }
        let sandbox = match req.environment.as_deref() {
            None | Some("production") => false,
            Some("sandbox") => true,
            Some(_) => return Err(ApiError::bad_request("environment must be production or sandbox")),
        };
        PushAddress::Token { token: token.to_owned(), sandbox }
    };
    let reg = app.store.set_push(me.device_id, me.user_id, kind, address).await?;
    Ok(Json(PushEnvelope { push: PushRegistered { kind: kind.as_str().into(), registered_at: reg.registered_at } }))
}

pub(super) async fn delete(State(app): State<Arc<App>>, me: Authed) -> ApiResult<StatusCode> {
    app.store.delete_push(me.device_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn status(State(app): State<Arc<App>>, me: Authed) -> ApiResult<Json<PushStatusEnvelope>> {
    let push = app.store.push_registration(me.device_id).await?.map(|r| PushStatus {
        kind: r.kind.as_str().into(),
        registered_at: r.registered_at,
        last_success_at: r.last_success_at,
        last_error: r.last_error.map(|e| PushError { at: e.at, status: e.status, reason: e.reason }),
        invalidated_at: r.invalidated_at,
    });
    Ok(Json(PushStatusEnvelope { push }))
}

pub(super) async fn vapid(State(app): State<Arc<App>>, _me: Authed) -> ApiResult<Json<VapidKey>> {
    let web = app.push.providers.web.as_ref().ok_or_else(ApiError::not_found)?;
    Ok(Json(VapidKey { public_key: web.vapid().public_key_base64url() }))
}

/// Sends one push through the real provider path and records the answer in the registration's
/// status (a dead registration is invalidated as by any push).
pub(super) async fn test(State(app): State<Arc<App>>, me: Authed) -> ApiResult<Json<PushTest>> {
    let reg = app
        .store
        .push_registration(me.device_id)
        .await?
        .ok_or_else(|| ApiError::bad_request("this device has no push registration"))?;
    if reg.invalidated_at.is_some() {
        return Err(ApiError::bad_request("this device's push registration was invalidated: register again"));
    }
    let (provider, delivery) = app.push.send_test(&reg).await;
    let at = parley_core::now_ms();
    // Outside the queue: the registration's status takes the answer (a "gone" invalidates, as for
    // any push); no queue row has conversation 0, so nothing is merged or retried.
    let outcome = crate::push::outcome(&delivery, &reg, push::MAX_ATTEMPTS, at, 0);
    if let Some(provider) = provider {
        app.push.record(provider, &delivery, &outcome, 0);
    }
    app.store
        .finish_pushes(vec![PushDone {
            device_id: me.device_id,
            conversation_id: ConversationId(0),
            seq: parley_core::ids::Seq(0),
            registered_at: reg.registered_at,
            outcome,
        }])
        .await?;
    let reason = match &delivery {
        Delivery::Delivered => None,
        Delivery::Gone { reason, .. } | Delivery::Retry { reason, .. } | Delivery::Rejected { reason, .. } => {
            Some(reason.clone())
        }
    };
    Ok(Json(PushTest { ok: delivery == Delivery::Delivered, status: delivery.status(), reason }))
}

pub(super) async fn patch_settings(
    State(app): State<Arc<App>>,
    me: Authed,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<PatchSettings>,
) -> ApiResult<Json<SettingsEnvelope>> {
    let id = ConversationId(path_id(&id));
    let notify = match req.notify.as_deref() {
        None => None,
        Some(n) => Some(Notify::parse(n).ok_or_else(|| ApiError::bad_request("notify must be all, mentions or none"))?),
    };
    if let Some(Some(t)) = req.muted_until
        && t < 0
    {
        return Err(ApiError::bad_request("muted_until must be a time in milliseconds or null"));
    }
    let patch = SettingsPatch { muted_until: req.muted_until, notify };
    let settings = app.store.set_settings(me.user_id, id, patch).await?.ok_or_else(ApiError::not_found)?;
    // The user's devices (this one too) get the conversation with its new settings.
    if let Some(view) = app.store.conversation(me.user_id, id, false).await? {
        let json = ServerFrame::Conversation(&convert::conversation(&view)).to_json();
        app.router.deliver(&[me.user_id], &Outbound { json: Bytes::from(json), position: None, device: None });
    }
    Ok(Json(SettingsEnvelope { settings: convert::settings(settings) }))
}

/// The `push_invalidated` frame a device gets when it connects after a provider declared its
/// registration dead (once).
pub(crate) async fn invalidated_frame(app: &App, device: parley_core::ids::DeviceId) -> Option<String> {
    match app.store.take_push_invalidated(device).await {
        Ok(Some(kind)) => Some(
            ServerFrame::PushInvalidated(parley_proto::frames::PushInvalidated { kind: kind.as_str().into() })
                .to_json(),
        ),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the push registration");
            None
        }
    }
}
