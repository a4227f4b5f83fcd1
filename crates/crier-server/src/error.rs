//! The edge's error type: every refusal becomes `{"error": {"code", "message"}}` with the
//! fitting status. Internal errors are logged once here and never echoed to clients.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use crier_core::{LogError, ValidationError};

use crate::service;

/// An error answer of the HTTP API.
#[derive(Debug)]
pub struct ApiError {
    /// Status code.
    pub status: StatusCode,
    /// Stable snake_case code.
    pub code: &'static str,
    /// Human message.
    pub message: String,
    /// Seconds for `Retry-After` (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    /// 400.
    pub fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    /// 413.
    pub fn too_large(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, code, message)
    }
    /// 429 with `Retry-After`.
    pub fn too_many(code: &'static str, message: impl Into<String>, retry_after: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after.max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, code, message)
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"error": {"code": self.code, "message": self.message}})
    }
}

impl From<service::Error> for ApiError {
    /// The HTTP face of a service's refusal: one status per kind.
    fn from(e: service::Error) -> Self {
        let status = match &e {
            service::Error::Invalid { .. } => StatusCode::BAD_REQUEST,
            service::Error::Forbidden { .. } => StatusCode::FORBIDDEN,
            service::Error::NotFound { .. } => StatusCode::NOT_FOUND,
            service::Error::Conflict { .. } => StatusCode::CONFLICT,
            service::Error::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            service::Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            service::Error::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            service::Error::LimitHit { .. } => StatusCode::TOO_MANY_REQUESTS,
            service::Error::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        };
        let retry_after = match &e {
            service::Error::LimitHit { retry_after, .. }
            | service::Error::Unavailable { retry_after, .. } => Some(*retry_after),
            _ => None,
        };
        let (code, message) = e.into_parts();
        ApiError {
            retry_after,
            ..ApiError::new(status, code, message)
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        service::Error::from(e).into()
    }
}

impl From<LogError> for ApiError {
    fn from(e: LogError) -> Self {
        service::Error::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        metrics::counter!("crier_http_errors_total", "code" => self.code).increment(1);
        let mut res = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                res.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        res
    }
}
