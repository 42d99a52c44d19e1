//! A JSON body extractor whose every failure is a protocol `bad_request` (or
//! `payload_too_large`), never axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use parley_proto::ErrorCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Largest REST body accepted.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    format!("body is larger than {MAX_BODY_BYTES} bytes"),
                )
            } else {
                ApiError::bad_request(format!("cannot read body: {e}"))
            }
        })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}
