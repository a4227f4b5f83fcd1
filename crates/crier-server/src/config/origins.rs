//! Origins as the configuration and the browser rules (§12.7) read them: the
//! `scheme://host[:port]` of a URL, and `public_url` validated into one. Pure functions over
//! strings, so the configuration needs nothing from the request path.

/// The origin (`scheme://host[:port]`, lower case, default port left out) of a URL, or `None`
/// for anything that has no such origin (`null`, `file:`, not a URL).
pub fn origin_of(url: &str) -> Option<String> {
    let u = url::Url::parse(url.trim()).ok()?;
    if !matches!(u.scheme(), "http" | "https") || u.host().is_none() {
        return None;
    }
    Some(u.origin().ascii_serialization())
}

/// Validates `public_url`: empty, or an `http(s)://` URL with a host. Answers its origin.
pub fn public_origin(raw: &str) -> Result<Option<String>, String> {
    if raw.trim().is_empty() {
        return Ok(None);
    }
    origin_of(raw).map(Some).ok_or_else(|| {
        format!("{raw:?} is not an http:// or https:// URL with a host, like https://events.example.com")
    })
}
