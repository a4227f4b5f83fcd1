//! The hub's services: what several transports do, written once over [`AppState`].
//!
//! HTTP handlers, SSE, `/v1/ws`, GraphQL and Pusher each parse their own requests and write
//! their own answers; between the two they call these functions, which hold the rules
//! (validation, limits, metrics, the log) and answer with a typed [`Error`] that knows nothing
//! of HTTP. Each transport maps [`Error`] into its own refusal in one place: `ApiError`'s
//! `From` for HTTP (and, through it, GraphQL's extensions and Pusher's answers), the `/v1/ws`
//! `error` op's `From`.
//!
//! [`AppState`]: crate::state::AppState

pub mod entities;
pub mod filters;
pub mod history;
pub mod publish;
pub mod replays;
pub mod subscriptions;

use crier_core::{ErrorKind, LogError, ValidationError};

/// Why a service refused or failed. Each variant carries a stable snake_case `code` and a
/// sentence for a person; the transport chooses how to say it (a status, an op, a close).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Malformed or invalid input.
    #[error("{message}")]
    Invalid {
        /// Stable code.
        code: &'static str,
        /// Human message.
        message: String,
    },
    /// Well-formed, but the credential may not do it.
    #[error("{message}")]
    Forbidden {
        /// Stable code.
        code: &'static str,
        /// Human message.
        message: String,
    },
    /// What it names does not exist (or may not be seen).
    #[error("{message}")]
    NotFound {
        /// Stable code.
        code: &'static str,
        /// Human message.
        message: String,
    },
    /// It contradicts what is stored.
    #[error("{message}")]
    Conflict {
        /// Stable code.
        code: &'static str,
        /// Human message.
        message: String,
    },
    /// A precondition (a version the client named) does not hold.
    #[error("{message}")]
    PreconditionFailed {
        /// Stable code.
        code: &'static str,
        /// Human message.
        message: String,
    },
    /// Larger than a configured size limit.
    #[error("{message}")]
    TooLarge {
        /// Stable code.
        code: &'static str,
        /// Human message.
        message: String,
    },
    /// A rate or count limit was hit; trying again after `retry_after` seconds may work.
    #[error("{message}")]
    LimitHit {
        /// Stable code.
        code: &'static str,
        /// Human message.
        message: String,
        /// Seconds to wait.
        retry_after: u64,
    },
    /// Something the hub holds is broken (the cause was logged when this was made).
    #[error("{message}")]
    Internal {
        /// Stable code.
        code: &'static str,
        /// Human message.
        message: String,
    },
    /// The log (or another store) is unavailable; the cause was logged when this was made.
    #[error("{message}")]
    Unavailable {
        /// Stable code.
        code: &'static str,
        /// Human message.
        message: String,
        /// Seconds to wait.
        retry_after: u64,
    },
}

impl Error {
    /// Invalid input with `code`.
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Error::Invalid {
            code,
            message: message.into(),
        }
    }

    /// `forbidden`: the credential may not do it.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Error::Forbidden {
            code: "forbidden",
            message: message.into(),
        }
    }

    /// `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Error::NotFound {
            code: "not_found",
            message: message.into(),
        }
    }

    /// A size limit with `code`.
    pub fn too_large(code: &'static str, message: impl Into<String>) -> Self {
        Error::TooLarge {
            code,
            message: message.into(),
        }
    }

    /// A rate or count limit with `code`, retried after at least a second.
    pub fn limit_hit(code: &'static str, message: impl Into<String>, retry_after: u64) -> Self {
        Error::LimitHit {
            code,
            message: message.into(),
            retry_after: retry_after.max(1),
        }
    }

    /// The code and the message, borrowed.
    fn parts(&self) -> (&'static str, &str) {
        match self {
            Error::Invalid { code, message }
            | Error::Forbidden { code, message }
            | Error::NotFound { code, message }
            | Error::Conflict { code, message }
            | Error::PreconditionFailed { code, message }
            | Error::TooLarge { code, message }
            | Error::Internal { code, message }
            | Error::LimitHit { code, message, .. }
            | Error::Unavailable { code, message, .. } => (code, message),
        }
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.parts().0
    }

    /// The human message.
    pub fn message(&self) -> &str {
        self.parts().1
    }

    /// The code and the message, taken apart.
    pub fn into_parts(self) -> (&'static str, String) {
        let (code, message) = self.parts();
        (code, message.to_owned())
    }
}

impl From<ValidationError> for Error {
    fn from(e: ValidationError) -> Self {
        let (code, message) = (e.code, e.message);
        match e.kind {
            ErrorKind::Forbidden => Error::Forbidden { code, message },
            ErrorKind::TooLarge => Error::TooLarge { code, message },
            ErrorKind::NotFound => Error::NotFound { code, message },
            ErrorKind::PreconditionFailed => Error::PreconditionFailed { code, message },
            ErrorKind::Conflict => Error::Conflict { code, message },
            _ => Error::Invalid { code, message },
        }
    }
}

impl From<LogError> for Error {
    /// Logs the cause once; clients only learn that the log is unavailable.
    fn from(e: LogError) -> Self {
        tracing::error!(error = %e, "event log error");
        Error::Unavailable {
            code: "store_unavailable",
            message: "the event log is unavailable; retry shortly".into(),
            retry_after: 1,
        }
    }
}
