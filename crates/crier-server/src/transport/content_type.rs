//! How a `Content-Type` is read: its media type, without parameters, in lower case. Each
//! path still decides what a missing or unreadable header means (that differs by contract),
//! but they all compare the same essence.

/// The media type of a `Content-Type` value: the part before `;`, trimmed, in lower case
/// (`"Application/JSON; charset=utf-8"` → `"application/json"`).
pub fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::essence;

    #[test]
    fn parameters_and_case_are_dropped() {
        assert_eq!(
            essence("Application/JSON; charset=utf-8"),
            "application/json"
        );
        assert_eq!(essence(" text/plain "), "text/plain");
        assert_eq!(essence(""), "");
        assert_eq!(essence(";x=1"), "");
    }
}
