//! A JSON body extractor whose every failure is a protocol `bad_request` (or
//! `payload_too_large`), never axum's plain-text rejections.

use axum::extract::{FromRequest, Request};
use futures_util::StreamExt;
use parley_proto::ErrorCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Largest REST body accepted.
pub(crate) const MAX_BODY_BYTES: usize = 256 * 1024;
/// An oversized body is still read (and dropped) up to this size before answering 413, so the
/// client sees the answer instead of a connection reset in the middle of its upload.
const DRAIN_BYTES: usize = 8 * 1024 * 1024;

pub(crate) struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let mut stream = req.into_body().into_data_stream();
        let mut body = Vec::new();
        let mut total = 0usize;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ApiError::bad_request(format!("cannot read body: {e}")))?;
            total += chunk.len();
            if total <= MAX_BODY_BYTES {
                body.extend_from_slice(&chunk);
            } else if total > DRAIN_BYTES {
                break;
            }
        }
        if total > MAX_BODY_BYTES {
            return Err(ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("body is larger than {MAX_BODY_BYTES} bytes"),
            ));
        }
        serde_json::from_slice(&body)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}
