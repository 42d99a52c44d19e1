//! Accounts and sessions: sign up, sign in (a new device each time), sign out, who am I, and
//! user lookup.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use parley_core::validate;
use parley_proto::Id;
use parley_proto::rest::{CreateAccount, CreateSession, PatchMe, Session, User};
use parley_router::Kick;

use crate::auth::{self, Authed};
use crate::convert;
use crate::error::{ApiError, ApiResult};
use crate::json::JsonBody;
use crate::state::App;

pub(super) async fn create(
    State(app): State<Arc<App>>,
    JsonBody(req): JsonBody<CreateAccount>,
) -> ApiResult<(StatusCode, Json<User>)> {
    let username = validate::username(&req.username)?;
    validate::password(&req.password)?;
    let display_name = match &req.display_name {
        Some(d) => validate::name("display_name", d)?,
        None => username.clone(),
    };
    // Refuse a taken name before spending ~50 ms on the hash; the store's unique index still
    // decides a race.
    if app.store.user_by_username(&username).await?.is_some() {
        return Err(ApiError::new(parley_proto::ErrorCode::Conflict, "username is taken"));
    }
    let hash = app.passwords.hash(&req.password).await?;
    let user = app.store.create_user(&username, &display_name, &hash).await?;
    Ok((StatusCode::CREATED, Json(convert::user(&user))))
}

pub(super) async fn login(
    State(app): State<Arc<App>>,
    JsonBody(req): JsonBody<CreateSession>,
) -> ApiResult<(StatusCode, Json<Session>)> {
    let wrong = || ApiError::new(parley_proto::ErrorCode::Unauthorized, "wrong username or password");
    // A malformed username cannot exist; answer like any wrong login.
    let creds = match validate::username(&req.username) {
        Ok(name) => app.store.user_credentials(&name).await?,
        Err(_) => None,
    };
    if !app.passwords.verify(&req.password, creds.as_ref().map(|c| c.password_hash.as_str())).await? {
        return Err(wrong());
    }
    let user = creds.ok_or_else(wrong)?.user;
    let device_name = match &req.device_name {
        Some(n) => validate::name("device_name", n)?,
        None => "unnamed device".to_owned(),
    };
    let token = auth::new_token();
    let device = app.store.create_device(user.id, &device_name, auth::token_hash(&token)).await?;
    Ok((StatusCode::CREATED, Json(Session { user_id: Id(user.id.0), device_id: Id(device.id.0), token })))
}

pub(super) async fn logout(State(app): State<Arc<App>>, me: Authed) -> ApiResult<StatusCode> {
    app.store.delete_device(me.user_id, me.device_id).await?;
    app.router.kick_device(me.user_id, me.device_id, Kick::Revoked);
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn me(State(app): State<Arc<App>>, me: Authed) -> ApiResult<Json<User>> {
    let user = app.store.user(me.user_id).await?.ok_or_else(ApiError::unauthorized)?;
    let visible = app.store.presence_records(&[me.user_id]).await?.first().is_none_or(|r| r.last_seen_visible);
    let dnd_until = app.store.dnd_until(me.user_id).await?;
    Ok(Json(User { last_seen_visible: Some(visible), dnd_until: Some(dnd_until), ..convert::user(&user) }))
}

/// `PATCH /v1/me`: privacy settings. Hiding last seen also hides everyone else's from you.
pub(super) async fn patch_me(
    State(app): State<Arc<App>>,
    me: Authed,
    JsonBody(req): JsonBody<PatchMe>,
) -> ApiResult<Json<User>> {
    if let Some(visible) = req.last_seen_visible {
        app.store.set_last_seen_visible(me.user_id, visible).await?;
        app.presence.set_visible(me.user_id, visible);
    }
    if let Some(until) = req.dnd_until {
        if until.is_some_and(|t| t < 0) {
            return Err(ApiError::bad_request("dnd_until must be a time in milliseconds or null"));
        }
        app.store.set_dnd(me.user_id, until).await?;
    }
    self::me(State(app), me).await
}

pub(super) async fn lookup(
    State(app): State<Arc<App>>,
    _me: Authed,
    Path(username): Path<String>,
) -> ApiResult<Json<User>> {
    let name = validate::username(&username).map_err(|_| ApiError::not_found())?;
    let user = app.store.user_by_username(&name).await?.ok_or_else(ApiError::not_found)?;
    Ok(Json(convert::user(&user)))
}
