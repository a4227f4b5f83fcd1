//! The embedding API's error: the same code and message an HTTP client would get.

use std::fmt;

/// Why a call was refused or failed: the §3 error `code` (`invalid_event`,
/// `event_too_large`, `rate_limited`, ...), the HTTP status it maps to, and a message for
/// people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The HTTP status the same refusal gets over HTTP.
    pub status: u16,
    /// Stable snake_case code.
    pub code: String,
    /// What is wrong.
    pub message: String,
}

impl Error {
    pub(crate) fn new(status: u16, code: &str, message: impl Into<String>) -> Error {
        Error {
            status,
            code: code.to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for Error {}

impl From<crier_server::ApiError> for Error {
    fn from(e: crier_server::ApiError) -> Error {
        Error::new(e.status.as_u16(), e.code, e.message)
    }
}

impl From<crier_server::service::Error> for Error {
    /// A service's refusal, with the status the HTTP API would answer.
    fn from(e: crier_server::service::Error) -> Error {
        crier_server::ApiError::from(e).into()
    }
}

impl From<crier_server::ConfigError> for Error {
    fn from(e: crier_server::ConfigError) -> Error {
        Error::new(400, "invalid_config", e.to_string())
    }
}

impl From<crier_server::ServeError> for Error {
    fn from(e: crier_server::ServeError) -> Error {
        Error::new(503, "unavailable", e.to_string())
    }
}

impl From<crier_core::LogError> for Error {
    fn from(e: crier_core::LogError) -> Error {
        crier_server::ApiError::from(e).into()
    }
}
