//! `/blobs/{media_id}`: the local media store's signed URLs, served on the server's own
//! listener. `PUT` streams an upload into the store; `GET` (and `HEAD`) answers the bytes with
//! ranges. The signature is the only credential: an altered or expired URL gets the same 403,
//! which says nothing about the object.
//!
//! What is served is what users uploaded, from the web client's own origin, so a response
//! can never run as a page: `nosniff`, a sandboxing CSP, and anything but images, audio and
//! video (SVG, which can carry script, included) as an attachment.

use std::io::SeekFrom;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use parley_media::{Denied, PutError, Served};
use parley_proto::ErrorCode;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::error::ApiError;
use crate::media::MediaMetrics;
use crate::state::App;

fn served(app: &App) -> Result<&dyn Served, ApiError> {
    app.media.served().ok_or_else(ApiError::not_found)
}

fn denied(d: Denied) -> ApiError {
    tracing::debug!(reason = %d, "signed media URL refused");
    ApiError::forbidden("this link is invalid or has expired")
}

pub(super) async fn put(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let served = served(&app)?;
    let length = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let grant = served
        .authorize_put(&id, query.as_deref().unwrap_or(""), length, content_type, parley_core::now_ms())
        .map_err(denied)?;
    // A URL outlives nothing: once the upload is complete or removed, it stores nothing more.
    if !pending(&app, grant.id).await? {
        return Err(denied(Denied::BadSignature));
    }
    let stream = body.into_data_stream().map(|r| r.map_err(|e| e.to_string())).boxed();
    match served.put(&grant, stream).await {
        Ok(()) => {
            // The collector may have taken the upload while its bytes arrived; then the file
            // must not stay behind with no record.
            if !pending(&app, grant.id).await? {
                let _ = app.media.delete(grant.id).await;
                return Err(denied(Denied::BadSignature));
            }
            Ok(StatusCode::OK)
        }
        Err(PutError::Busy) => Err(ApiError::new(ErrorCode::Conflict, "another upload of this media is in progress")),
        Err(PutError::TooLong(n)) => {
            let mut e =
                ApiError::new(ErrorCode::PayloadTooLarge, format!("the body is longer than the declared {n} bytes"));
            e.max_bytes = Some(n);
            Err(e)
        }
        Err(e @ (PutError::TooShort | PutError::Digest | PutError::Body(_))) => {
            Err(ApiError::bad_request(e.to_string()))
        }
        Err(PutError::Io(e)) => {
            tracing::error!(error = %e, "cannot store an upload");
            Err(ApiError::new(ErrorCode::Unavailable, "the upload could not be stored; retry"))
        }
    }
}

/// Whether the upload is still waiting for its bytes.
async fn pending(app: &App, id: parley_core::ids::MediaId) -> Result<bool, ApiError> {
    Ok(app.store.media(id).await?.is_some_and(|m| m.state == parley_core::media::MediaState::Pending))
}

/// A byte range to answer, or why the `Range` header is ignored or unsatisfiable.
#[derive(Debug, PartialEq, Eq)]
enum Slice {
    Whole,
    Part(u64, u64),
    Unsatisfiable,
}

/// One `bytes=` range (RFC 9110 §14.1.2): `a-b`, `a-` or `-n`. Several ranges, other units or
/// a malformed header are answered with the whole object, as the RFC allows.
fn slice(range: Option<&str>, len: u64) -> Slice {
    let Some(spec) = range.and_then(|r| r.trim().strip_prefix("bytes=")) else { return Slice::Whole };
    if spec.contains(',') {
        return Slice::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else { return Slice::Whole };
    let (a, b) = (a.trim(), b.trim());
    let parse = |s: &str| if s.bytes().all(|c| c.is_ascii_digit()) { s.parse::<u64>().ok() } else { None };
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Slice::Whole,
        (true, false) => match parse(b) {
            Some(0) => Slice::Unsatisfiable,
            Some(n) if len > 0 => Slice::Part(len.saturating_sub(n), len - 1),
            Some(_) => Slice::Unsatisfiable,
            None => Slice::Whole,
        },
        (false, _) => {
            let Some(start) = parse(a) else { return Slice::Whole };
            let end = if b.is_empty() { Some(u64::MAX) } else { parse(b) };
            match end {
                None => Slice::Whole,
                Some(end) if end < start => Slice::Whole,
                Some(_) if start >= len => Slice::Unsatisfiable,
                Some(end) => Slice::Part(start, end.min(len - 1)),
            }
        }
    }
}

pub(super) async fn get(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let served = served(&app)?;
    let grant = served.authorize_get(&id, query.as_deref().unwrap_or(""), parley_core::now_ms()).map_err(denied)?;
    let Some((mut file, len)) = served.open(grant.id).await.map_err(|e| {
        tracing::error!(error = %e, "cannot open a stored upload");
        ApiError::new(ErrorCode::Unavailable, "the file could not be read; retry")
    })?
    else {
        return Err(ApiError::not_found());
    };
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, count) = match slice(range, len) {
        Slice::Whole => (StatusCode::OK, 0, len),
        Slice::Part(a, b) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        Slice::Unsatisfiable => {
            let mut resp =
                ApiError::new(ErrorCode::BadRequest, "the requested range is outside the file").into_response();
            *resp.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(resp);
        }
    };
    if start > 0 {
        file.seek(SeekFrom::Start(start)).await.map_err(|e| {
            tracing::error!(error = %e, "cannot seek in a stored upload");
            ApiError::new(ErrorCode::Unavailable, "the file could not be read; retry")
        })?;
    }
    MediaMetrics::add(&app.media_metrics.bytes_served, count);
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file.take(count), 64 * 1024));
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    let ct = HeaderValue::from_str(&grant.content_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_TYPE, ct);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=900"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox; default-src 'none'"));
    // Uploads never change: the id names the bytes.
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", grant.id)) {
        h.insert(header::ETAG, v);
    }
    if !parley_core::media::inline_safe(&grant.content_type) {
        h.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment"));
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", start + count - 1))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(slice(None, 10), Slice::Whole);
        assert_eq!(slice(Some("bytes=0-4"), 10), Slice::Part(0, 4));
        assert_eq!(slice(Some("bytes=5-"), 10), Slice::Part(5, 9));
        assert_eq!(slice(Some("bytes=5-100"), 10), Slice::Part(5, 9));
        assert_eq!(slice(Some("bytes=-3"), 10), Slice::Part(7, 9));
        assert_eq!(slice(Some("bytes=-30"), 10), Slice::Part(0, 9));
        assert_eq!(slice(Some("bytes=10-"), 10), Slice::Unsatisfiable);
        assert_eq!(slice(Some("bytes=-0"), 10), Slice::Unsatisfiable);
        for ignored in ["bytes=0-1,3-4", "items=0-1", "bytes=x-1", "bytes=4-2", "bytes=-", "bytes=+1-2"] {
            assert_eq!(slice(Some(ignored), 10), Slice::Whole, "{ignored}");
        }
    }
}
