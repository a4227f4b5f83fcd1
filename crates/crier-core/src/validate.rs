//! Validation errors and the character-class checks shared by events, filters and ids.
//!
//! Every rule of the contract that can reject input produces a [`ValidationError`] with a
//! stable snake_case `code`, a sentence a person understands, and the class of HTTP status
//! it maps to at the edge ([`ErrorKind`]).

use std::fmt;

/// What kind of refusal a validation error is; the server maps it to a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Malformed or invalid input (400).
    BadRequest,
    /// Well-formed, but the credential may not do it (403).
    Forbidden,
    /// Larger than a configured limit (413).
    TooLarge,
    /// What it names does not exist (404).
    NotFound,
    /// A precondition (`If-Match`, `If-None-Match`) does not hold (412).
    PreconditionFailed,
    /// It contradicts what is stored (409).
    Conflict,
}

/// A refusal of client input, with a machine code and a human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// The status class.
    pub kind: ErrorKind,
    /// A stable snake_case code, e.g. `invalid_event`.
    pub code: &'static str,
    /// A sentence for a person.
    pub message: String,
}

impl ValidationError {
    /// A 400-class error.
    pub fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::BadRequest,
            code,
            message: message.into(),
        }
    }
    /// A 403-class error.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Forbidden,
            code,
            message: message.into(),
        }
    }
    /// A 413-class error.
    pub fn too_large(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::TooLarge,
            code,
            message: message.into(),
        }
    }
    /// Prefixes the message with where the error was found (e.g. `event 3: `).
    pub fn at(mut self, place: impl fmt::Display) -> Self {
        self.message = format!("{place}: {}", self.message);
        self
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ValidationError {}

/// `[A-Za-z0-9._:-]`: the charset of `type` and `category`.
pub(crate) fn is_type_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')
}

/// `[A-Za-z0-9._:/-]`: the charset of `source`.
pub(crate) fn is_source_char(c: char) -> bool {
    is_type_char(c) || c == '/'
}

/// Checks a string against a charset and a length range, naming the field in the message.
pub(crate) fn check_charset(
    field: &str,
    value: &str,
    max: usize,
    allowed: fn(char) -> bool,
    charset: &str,
) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::bad(
            "invalid_event",
            format!("`{field}` must not be empty"),
        ));
    }
    if value.len() > max {
        return Err(ValidationError::bad(
            "invalid_event",
            format!(
                "`{field}` is {} characters long; at most {max} are allowed",
                value.len()
            ),
        ));
    }
    if let Some(c) = value.chars().find(|c| !allowed(*c)) {
        return Err(ValidationError::bad(
            "invalid_event",
            format!("`{field}` contains {c:?}; only {charset} are allowed"),
        ));
    }
    Ok(())
}

/// Checks a string of the `type` charset ([`is_type_char`]) of 1 to `max` characters.
pub(crate) fn check_type_chars(
    field: &str,
    value: &str,
    max: usize,
) -> Result<(), ValidationError> {
    check_charset(
        field,
        value,
        max,
        is_type_char,
        "letters, digits and . _ : -",
    )
}

/// Checks a free-text field: non-empty, at most `max` characters, no control characters.
pub(crate) fn check_text(field: &str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::bad(
            "invalid_event",
            format!("`{field}` must not be empty"),
        ));
    }
    let n = value.chars().count();
    if n > max {
        return Err(ValidationError::bad(
            "invalid_event",
            format!("`{field}` is {n} characters long; at most {max} are allowed"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ValidationError::bad(
            "invalid_event",
            format!("`{field}` must not contain control characters"),
        ));
    }
    Ok(())
}
