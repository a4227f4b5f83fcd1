//! The web dashboard and the JavaScript client, served as static files.
//!
//! Release builds embed `crates/crier-server/dashboard/` and `clients/js/` in the binary;
//! debug builds read them from the source tree on each request, so editing a page needs no
//! rebuild. Files carry an `ETag` and are revalidated on every load (`no-cache`), so a new
//! hub version never runs against a stale page.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

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
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut out = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, content_type(path))],
            file.data.into_owned(),
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

/// `GET /`: the dashboard's single page (every view is a `#/...` route inside it).
pub async fn index(headers: HeaderMap) -> Response {
    serve(Dashboard::get("index.html"), "index.html", &headers)
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
