//! The one place where failures become protocol error codes, for REST and the WebSocket alike.
//! Internal details are logged, never sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use parley_core::validate::Invalid;
use parley_proto::ErrorCode;
use parley_proto::frames::{ErrorFrame, ServerFrame};
use parley_proto::rest::{ErrorBody, ErrorDetail};
use parley_store::StoreError;

#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub retry_after_ms: Option<u64>,
    /// The size limit a `payload_too_large` upload broke.
    pub max_bytes: Option<u64>,
    /// With `stale_devices`: the conversation's current device epoch.
    pub device_epoch: Option<i64>,
}

impl ApiError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into(), retry_after_ms: None, max_bytes: None, device_epoch: None }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub(crate) fn not_found() -> Self {
        Self::new(ErrorCode::NotFound, "not found")
    }

    pub(crate) fn unauthorized() -> Self {
        Self::new(ErrorCode::Unauthorized, "missing, invalid or revoked token")
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub(crate) fn rate_limited(retry_after_ms: u64) -> Self {
        ApiError {
            code: ErrorCode::RateLimited,
            message: "too many requests; slow down".into(),
            retry_after_ms: Some(retry_after_ms),
            max_bytes: None,
            device_epoch: None,
        }
    }

    /// The WebSocket `error` frame for this error, answering the frame that carried `r#ref`.
    pub(crate) fn to_frame(&self, r#ref: Option<String>) -> String {
        ServerFrame::Error(ErrorFrame {
            code: self.code,
            message: self.message.clone(),
            r#ref,
            retry_after_ms: self.retry_after_ms,
            device_epoch: self.device_epoch,
        })
        .to_json()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => ApiError::new(ErrorCode::Conflict, m),
            StoreError::NotFound => ApiError::not_found(),
            StoreError::NotMember => ApiError::new(ErrorCode::NotMember, "not a member of this conversation"),
            StoreError::Invalid(m) => ApiError::bad_request(m),
            StoreError::Forbidden(m) => ApiError::forbidden(m),
            StoreError::StaleDevices(epoch) => {
                let mut e = ApiError::new(
                    ErrorCode::StaleDevices,
                    "the conversation's devices changed: share keys with the current devices and retry",
                );
                e.device_epoch = Some(epoch);
                e
            }
            StoreError::Full { message, retry_after_ms } => {
                let mut e = ApiError::rate_limited(retry_after_ms);
                e.message = message;
                e
            }
            StoreError::Unavailable(m) => {
                tracing::warn!(error = %m, "store unavailable");
                ApiError::new(ErrorCode::Unavailable, "temporarily unavailable; retry")
            }
            StoreError::Backend(m) => {
                tracing::error!(error = %m, "store error");
                ApiError::new(ErrorCode::Internal, "internal error")
            }
        }
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        match e {
            Invalid::BadRequest(m) => ApiError::bad_request(m),
            Invalid::TooLarge(m) => ApiError::new(ErrorCode::PayloadTooLarge, m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                retry_after_ms: self.retry_after_ms,
                max_bytes: self.max_bytes,
                device_epoch: self.device_epoch,
            },
        };
        let mut resp = (status, axum::Json(body)).into_response();
        resp.extensions_mut().insert(self.code);
        if let Some(ms) = self.retry_after_ms {
            let secs = ms.div_ceil(1000).max(1);
            if let Ok(v) = secs.to_string().parse() {
                resp.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;
