//! The web dashboard and the JavaScript client, served as static files.
//!
//! Release builds embed `crates/crier-server/dashboard/` and `clients/js/` in the binary;
//! debug builds read them from the source tree on each request, so editing a page needs no
//! rebuild. Files carry an `ETag` and are revalidated on every load (`no-cache`), so a new
//! hub version never runs against a stale page.
//!
//! The hub may be nested under a prefix of another application's router (§14.1). The page
//! names its own assets with the prefix it was requested under, and the scripts import each
//! other and find the API relative to their own URL, so everything works at any prefix.

use std::borrow::Cow;

use axum::extract::{OriginalUri, Path};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

#[derive(RustEmbed)]
#[folder = "dashboard/"]
struct Dashboard;

#[derive(RustEmbed)]
#[folder = "../../clients/js/"]
struct Client;

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "json" | "map" => "application/json",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "ts" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn serve(file: Option<rust_embed::EmbeddedFile>, path: &str, headers: &HeaderMap) -> Response {
    let Some(file) = file else {
        return ApiError::not_found("no such file").into_response();
    };
    let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()[..12]));
    serve_bytes(file.data, etag, path, headers)
}

fn serve_bytes(
    data: Cow<'static, [u8]>,
    etag: String,
    path: &str,
    headers: &HeaderMap,
) -> Response {
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut out = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, content_type(path))],
            data.into_owned(),
        )
            .into_response()
    };
    let h = out.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if path.ends_with(".html") {
        // The pages load only their own scripts and talk only to this hub.
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; img-src 'self' data:; style-src 'self'; \
                 connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
            ),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `GET /`: the dashboard's single page (every view is a `#/...` route inside it), its asset
/// URLs under the prefix the hub is mounted at.
pub async fn index(OriginalUri(original): OriginalUri, uri: Uri, headers: HeaderMap) -> Response {
    let Some(file) = Dashboard::get("index.html") else {
        return ApiError::not_found("no such file").into_response();
    };
    let prefix = mount_prefix(original.path(), uri.path());
    let html = String::from_utf8_lossy(&file.data).replace("=\"/ui/", &format!("=\"{prefix}/ui/"));
    let etag = format!(
        "\"{}-{}\"",
        hex(&file.metadata.sha256_hash()[..12]),
        hex(&Sha256::digest(prefix.as_bytes())[..6])
    );
    serve_bytes(Cow::Owned(html.into_bytes()), etag, "index.html", &headers)
}

/// The prefix a nested router is mounted at: the request's full path less the path the
/// nested router saw, without a trailing slash, and with anything that could leave an HTML
/// attribute percent-encoded.
fn mount_prefix(original: &str, nested: &str) -> String {
    let prefix = original.strip_suffix(nested).unwrap_or(original);
    let mut out = String::with_capacity(prefix.len());
    for c in prefix.trim_end_matches('/').chars() {
        if c.is_ascii_alphanumeric() || "-._~/%!$()*+,;=:@".contains(c) {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

/// `GET /ui/{*path}`: the dashboard's modules, styles and images.
pub async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(Dashboard::get(&path), &path, &headers)
}

/// `GET /client/{*path}`: the JavaScript client (`/client/crier.js`, `/client/crier.d.ts`).
pub async fn client(Path(path): Path<String>, headers: HeaderMap) -> Response {
    // Only the module and its declarations, not the package's tests or notes.
    let published = !path.contains('/') && (path.ends_with(".js") || path.ends_with(".d.ts"));
    let file = if published { Client::get(&path) } else { None };
    serve(file, &path, &headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mount_prefix_is_what_nesting_added() {
        assert_eq!(mount_prefix("/", "/"), "");
        assert_eq!(mount_prefix("/events", "/"), "/events");
        assert_eq!(mount_prefix("/events/", "/"), "/events");
        assert_eq!(mount_prefix("/a/b/", "/"), "/a/b");
        assert_eq!(mount_prefix("/x\"<y", "/"), "/x%22%3Cy");
    }

    #[test]
    fn every_dashboard_file_has_a_known_type() {
        for path in Dashboard::iter() {
            assert_ne!(
                content_type(&path),
                "application/octet-stream",
                "{path} would be served without a type"
            );
        }
    }
}
