//! The headers of an event-stream answer, shared by `/v1/stream` and replay streams: the
//! media type, no caching, and no buffering by a proxy in front (nginx's
//! `X-Accel-Buffering`), so events reach the client when they are sent.

use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

/// A `text/event-stream` response over `body`.
pub fn event_stream(body: Body) -> Response {
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    res
}
