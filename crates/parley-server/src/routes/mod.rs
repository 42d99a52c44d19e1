//! The HTTP surface: one file per resource under `/v1/`, plus health and metrics, and the web
//! client at `/`.

mod accounts;
mod admin;
mod blobs;
mod conversations;
mod devices;
mod health;
pub(crate) mod keys;
mod media;
mod messages;
mod presence;
pub(crate) mod push;
mod web;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, patch, post};

use crate::error::ApiError;
use crate::json::MAX_BODY_BYTES;
use crate::state::App;

pub(crate) fn router(app: Arc<App>) -> Router {
    let api = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/v1/ws", get(crate::ws::upgrade))
        .route("/v1/accounts", post(accounts::create))
        .route("/v1/sessions", post(accounts::login))
        .route("/v1/sessions/current", delete(accounts::logout))
        .route("/v1/me", get(accounts::me).patch(accounts::patch_me))
        .route("/v1/presence", get(presence::list))
        .route("/v1/users/{username}", get(accounts::lookup))
        .route("/v1/devices", get(devices::list))
        .route("/v1/devices/current/push", axum::routing::put(push::put).delete(push::delete))
        .route("/v1/devices/{device_id}", delete(devices::remove))
        .route("/v1/push/status", get(push::status))
        .route("/v1/push/vapid", get(push::vapid))
        .route("/v1/push/test", post(push::test))
        .route("/v1/conversations/{id}/settings", patch(push::patch_settings))
        .route("/v1/conversations", post(conversations::create).get(conversations::list))
        .route("/v1/conversations/{id}", get(conversations::get_one).patch(conversations::patch))
        .route("/v1/conversations/{id}/members", post(conversations::add_members))
        .route(
            "/v1/conversations/{id}/members/{user_id}",
            delete(conversations::remove_member).patch(conversations::patch_member),
        )
        .route("/v1/admin/accounts", post(admin::bulk_accounts))
        .route("/v1/conversations/{id}/messages", get(messages::history).post(messages::post))
        .route("/v1/conversations/{id}/messages/{seq}/receipts", get(messages::receipts))
        .route("/v1/keys", axum::routing::put(keys::put))
        .route("/v1/keys/count", get(keys::count))
        .route("/v1/keys/claim", post(keys::claim))
        .route("/v1/users/{user_id}/devices", get(keys::user_devices))
        .route("/v1/media", post(media::create))
        .route("/v1/media/{media_id}", get(media::get_one).delete(media::delete))
        .route("/v1/media/{media_id}/complete", post(media::complete));
    // The local media store's signed URLs: bodies stream to disk, bounded by the signed size.
    let blobs =
        Router::new().route("/blobs/{media_id}", get(blobs::get).put(blobs::put)).layer(DefaultBodyLimit::disable());
    // The client's files have fixed paths outside `/v1/`; anything else stays a JSON 404.
    let media_origin = app.media.origin();
    web::mount(api, media_origin.as_deref())
        .merge(blobs)
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(parley_proto::ErrorCode::MethodNotAllowed, "method not allowed on this path")
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(app.clone(), count_rest_errors))
        .with_state(app)
}

/// Parses a path id; anything that is not one names nothing.
fn path_id(raw: &str) -> i64 {
    parley_proto::Id::parse(raw).0
}

/// Counts every REST error response by its code, which [`crate::error::ApiError`] leaves in
/// the response's extensions (the body is already serialized by then).
async fn count_rest_errors(
    axum::extract::State(app): axum::extract::State<Arc<App>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let resp = next.run(req).await;
    if let Some(&code) = resp.extensions().get::<parley_proto::ErrorCode>() {
        app.metrics.rest_error(code);
    }
    resp
}
