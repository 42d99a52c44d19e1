//! A user's devices: list them, and sign one out remotely.

use parley_core::ids::DeviceId;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use parley_proto::rest::Devices;
use parley_router::Kick;

use super::path_id;
use crate::auth::Authed;
use crate::convert;
use crate::error::{ApiError, ApiResult};
use crate::state::App;

pub(super) async fn list(State(app): State<Arc<App>>, me: Authed) -> ApiResult<Json<Devices>> {
    let devices = app.store.devices(me.user_id).await?;
    Ok(Json(Devices { devices: devices.iter().map(convert::device).collect() }))
}

pub(super) async fn remove(State(app): State<Arc<App>>, me: Authed, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let id = path_id(&id);
    // Another user's device is indistinguishable from a missing one.
    if !app.store.delete_device(me.user_id, DeviceId(id)).await? {
        return Err(ApiError::not_found());
    }
    app.router.kick_device(me.user_id, DeviceId(id), Kick::Revoked);
    Ok(StatusCode::NO_CONTENT)
}
