//! `/v1/media`: asking for an upload URL, completing an upload, getting a download URL and
//! deleting an unused upload. The bytes never pass through here (see `blobs.rs` for the local
//! store's own URLs); a stranger gets 404 for every media id, existing or not.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use base64::Engine;
use parley_core::ids::{MediaId, UserId};
use parley_core::media::{Media, MediaState, URL_TTL_MS};
use parley_media::Stored;
use parley_proto::rest::{CreateMedia, DownloadTarget, MediaCreated, MediaEnvelope, MediaWithDownload, UploadTarget};
use parley_proto::{ErrorCode, Id};
use parley_store::StoreError;

use super::path_id;
use crate::auth::Authed;
use crate::error::{ApiError, ApiResult};
use crate::json::JsonBody;
use crate::media::{MediaMetrics, info, object};
use crate::metrics::Metrics;
use crate::state::App;

/// How long the URLs handed out stay valid.
fn ttl(app: &App) -> i64 {
    (app.config.media_url_ttl_ms as i64).clamp(1, URL_TTL_MS)
}

/// The window of the daily byte budget.
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

fn media_error(e: parley_media::MediaError) -> ApiError {
    tracing::warn!(error = %e, "media store");
    ApiError::new(ErrorCode::Unavailable, "media storage is unavailable; retry")
}

pub(super) async fn create(
    State(app): State<Arc<App>>,
    me: Authed,
    JsonBody(req): JsonBody<CreateMedia>,
) -> ApiResult<(StatusCode, Json<MediaCreated>)> {
    let max = app.config.media_max_bytes;
    if req.size > max {
        let mut e = ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("size {} is larger than this server's limit of {max} bytes", req.size),
        );
        e.max_bytes = Some(max);
        return Err(e);
    }
    if req.size == 0 {
        return Err(ApiError::bad_request("size must be at least 1 byte"));
    }
    let content_type = parley_core::media::content_type(&req.content_type).map_err(ApiError::bad_request)?;
    let sha256: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(req.sha256.trim())
        .ok()
        .and_then(|d| d.try_into().ok())
        .ok_or_else(|| ApiError::bad_request("sha256 must be the standard base64 of a 32-byte SHA-256 digest"))?;
    if let Err(wait) = app.uploads.check(me.user_id) {
        Metrics::inc(&app.metrics.rate_limited);
        return Err(ApiError::rate_limited(wait));
    }
    budget(&app, me.user_id, req.size).await?;
    let media = app.store.create_media(me.user_id, req.size, &content_type, sha256).await?;
    let up = app.media.upload_url(&object(&media), parley_core::now_ms() + ttl(&app)).map_err(media_error)?;
    MediaMetrics::add(&app.media_metrics.uploads_created, 1);
    Ok((
        StatusCode::CREATED,
        Json(MediaCreated {
            media_id: Id(media.id.0),
            upload: UploadTarget { method: "PUT".into(), url: up.url, headers: up.headers, expires_at: up.expires_at },
            media: Some(info(&media)),
        }),
    ))
}

/// The daily byte budget: what `user` uploaded in the last 24 hours plus `size` must fit.
async fn budget(app: &App, user: UserId, size: u64) -> ApiResult<()> {
    let now = parley_core::now_ms();
    let used = app.store.media_usage(user, now - DAY_MS).await?;
    if used.bytes.saturating_add(size) <= app.config.media_daily_bytes {
        return Ok(());
    }
    // The earliest moment anything frees up: the oldest upload leaving the window.
    let wait = used.oldest.map_or(DAY_MS, |t| (t + DAY_MS - now).max(1000)) as u64;
    Metrics::inc(&app.metrics.rate_limited);
    let mut e = ApiError::rate_limited(wait);
    e.message = format!(
        "daily upload budget of {} bytes reached ({} used in the last 24 hours)",
        app.config.media_daily_bytes, used.bytes
    );
    Err(e)
}

/// The caller's own upload, or 404 (whoever else's it is, and whether or not it exists).
async fn own(app: &App, me: &Authed, raw: &str) -> ApiResult<Media> {
    match app.store.media(MediaId(path_id(raw))).await? {
        Some(m) if m.uploader == me.user_id && m.state != MediaState::Doomed => Ok(m),
        _ => Err(ApiError::not_found()),
    }
}

pub(super) async fn complete(
    State(app): State<Arc<App>>,
    me: Authed,
    Path(raw): Path<String>,
) -> ApiResult<Json<MediaEnvelope>> {
    let mut media = own(&app, &me, &raw).await?;
    if media.state == MediaState::Ready {
        return Ok(Json(MediaEnvelope { media: info(&media) }));
    }
    match app.media.verify(&object(&media)).await.map_err(media_error)? {
        Stored::Missing => Err(ApiError::bad_request("nothing has been uploaded for this media yet")),
        Stored::Mismatch => {
            MediaMetrics::add(&app.media_metrics.uploads_mismatched, 1);
            discard(&app, me.user_id, media.id).await;
            Err(ApiError::bad_request(
                "the stored object's size or SHA-256 differs from the declared one; the upload was discarded",
            ))
        }
        Stored::Matches => {
            if !app.store.media_ready(media.id).await? {
                // A second completion got there first (then it is ready), or the collector
                // took it meanwhile (then it is gone).
                return match app.store.media(media.id).await? {
                    Some(m) if m.state == MediaState::Ready => Ok(Json(MediaEnvelope { media: info(&m) })),
                    _ => Err(ApiError::not_found()),
                };
            }
            media.state = MediaState::Ready;
            MediaMetrics::add(&app.media_metrics.uploads_completed, 1);
            MediaMetrics::add(&app.media_metrics.bytes_uploaded, media.size);
            Ok(Json(MediaEnvelope { media: info(&media) }))
        }
    }
}

/// Removes an upload nothing references: marks it, removes the object, forgets it. If the
/// object cannot be removed now, the collector finishes the job.
async fn discard(app: &App, user: UserId, id: MediaId) {
    match app.store.doom_upload(user, id).await {
        Ok(true) => match app.media.delete(id).await {
            Ok(()) => {
                if let Err(e) = app.store.forget_media(&[id]).await {
                    tracing::warn!(media_id = %id, error = %e, "cannot forget a removed upload; the collector will");
                }
            }
            Err(e) => tracing::warn!(media_id = %id, error = %e, "cannot remove an upload; the collector will"),
        },
        Ok(false) => {}
        Err(e) => tracing::warn!(media_id = %id, error = %e, "cannot discard an upload"),
    }
}

pub(super) async fn get_one(
    State(app): State<Arc<App>>,
    me: Authed,
    Path(raw): Path<String>,
) -> ApiResult<Json<MediaWithDownload>> {
    let id = MediaId(path_id(&raw));
    // Both lookups run whatever the answer, so the time taken says nothing about whether the
    // media exists.
    let (media, visible) = tokio::try_join!(app.store.media(id), app.store.media_visible(me.user_id, id))?;
    let Some(media) = media.filter(|m| m.state != MediaState::Doomed && visible) else {
        return Err(ApiError::not_found());
    };
    let now = parley_core::now_ms();
    let expires_at = now + ttl(&app);
    let down = app.media.download_url(&object(&media), expires_at).map_err(media_error)?;
    // No upload URL outlives the time the collector may take the pending upload: one used after
    // would put back an object nothing records.
    let collectable_at = media.created_at + app.config.media_orphan_after_ms as i64;
    let upload = if media.state == MediaState::Pending && media.uploader == me.user_id && expires_at <= collectable_at {
        let up = app.media.upload_url(&object(&media), expires_at).map_err(media_error)?;
        Some(UploadTarget { method: "PUT".into(), url: up.url, headers: up.headers, expires_at: up.expires_at })
    } else {
        None
    };
    MediaMetrics::add(&app.media_metrics.downloads_granted, 1);
    Ok(Json(MediaWithDownload {
        media: info(&media),
        download: DownloadTarget { url: down.url, expires_at: down.expires_at },
        upload,
    }))
}

pub(super) async fn delete(State(app): State<Arc<App>>, me: Authed, Path(raw): Path<String>) -> ApiResult<StatusCode> {
    let id = MediaId(path_id(&raw));
    match app.store.doom_upload(me.user_id, id).await {
        Ok(true) => {}
        Ok(false) => return Err(ApiError::not_found()),
        Err(StoreError::Conflict(m)) => return Err(ApiError::new(ErrorCode::Conflict, m)),
        Err(e) => return Err(e.into()),
    }
    // The record is marked: whatever fails from here, the collector finishes it.
    match app.media.delete(id).await {
        Ok(()) => {
            if let Err(e) = app.store.forget_media(&[id]).await {
                tracing::warn!(media_id = %id, error = %e, "cannot record a removed upload; the collector will");
            }
        }
        Err(e) => tracing::warn!(media_id = %id, error = %e, "cannot remove an upload; the collector will"),
    }
    Ok(StatusCode::NO_CONTENT)
}
