//! Event streams served without hyper's per-connection buffers (§12.2: an idle connection
//! costs at most 10 KiB).
//!
//! An SSE stream lives for hours and sends a few bytes now and then, but a connection served
//! by hyper keeps its HTTP/1 read buffer (8 KiB, allocated for the request head and never
//! shrunk) and its write buffers for the whole life of the response. So when the first
//! request of a new connection is a plain `GET` of an event stream (`/v1/stream`,
//! `/v1/replays/{id}/stream`), the listener reads the head itself into a small buffer, runs
//! the request through the same router (authentication, limits, browser rules, logging:
//! nothing is skipped), and writes the answer to the socket itself: the head once, then the
//! body as it comes, everything already queued in one write, with no buffer kept between
//! writes. The body is delimited by the connection's close (`connection: close`, no chunk
//! framing), which is how an event stream ends anyway.
//!
//! Anything else (another path or method, a request with a body or an upgrade) is handed to
//! hyper with the bytes already read put back in front of the socket, so it is served
//! exactly as before; the listener still holds the first head to `header_read_timeout`
//! counted from the accept.

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderName, HeaderValue, Method, Request, Response, Uri, Version};
use axum::Router;
use hyper::service::Service as _;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;

mod pump;

/// The most an event stream's request head may take (browsers' cookies included); a larger
/// one is answered 431.
pub const HEAD_MAX: usize = 16 * 1024;
/// Headers parsed at most; a request with more goes to hyper.
const MAX_HEADERS: usize = 48;

/// What the first request of a connection turned out to be.
pub enum First<I> {
    /// An event stream, answered here; the connection is done.
    Served,
    /// Anything else: serve this with hyper (it replays the bytes already read).
    Hyper(Rewind<I>),
    /// The client closed, failed or sent no complete head in time.
    Gone,
}

/// How request heads of event streams begin; a connection whose first bytes diverge from
/// both goes to hyper at once.
const STREAM_PREFIXES: [&[u8]; 2] = [b"GET /v1/stream", b"GET /v1/replays/"];

/// Reads the first request head of `io` and serves it here when it is an event stream. It
/// reads no further than needed to tell: a connection whose first bytes are not the start
/// of an event stream request goes to hyper at once.
pub async fn first_request<I>(
    mut io: I,
    slot: OwnedSemaphorePermit,
    router: &Router,
    peer: SocketAddr,
    head_timeout: Duration,
) -> First<I>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut head = Vec::new();
    let read = tokio::time::timeout(head_timeout, read_head(&mut io, &mut head)).await;
    let req = match read {
        Err(_) => {
            metrics::counter!("crier_limit_hits_total", "limit" => "header_read_timeout")
                .increment(1);
            return First::Gone;
        }
        Ok(Err(_)) => return First::Gone,
        Ok(Ok(HeadRead::Closed)) if head.is_empty() => return First::Gone,
        Ok(Ok(HeadRead::TooLong)) => {
            let res = too_long();
            let _ = respond(&mut io, res).await;
            let _ = io.shutdown().await;
            return First::Served;
        }
        Ok(Ok(HeadRead::Complete(len))) => parse_stream_request(&head[..len]),
        Ok(Ok(HeadRead::NotAStream | HeadRead::Closed)) => None,
    };
    let Some(mut req) = req else {
        return First::Hyper(Rewind::new(head, io, slot));
    };
    req.extensions_mut().insert(ConnectInfo(peer));
    let res = match TowerToHyperService::new(router.clone()).call(req).await {
        Ok(res) => res,
        Err(never) => match never {},
    };
    if let Err(e) = respond(&mut io, res).await {
        tracing::debug!(error = %e, "event stream connection ended");
    }
    let _ = io.shutdown().await;
    First::Served
}

/// 431 for an event stream request whose head passes [`HEAD_MAX`].
fn too_long() -> Response<Body> {
    let body = serde_json::json!({"error": {
        "code": "request_head_too_large",
        "message": format!("the request head of an event stream may take {HEAD_MAX} bytes at most"),
    }});
    let mut res = Response::new(Body::from(body.to_string()));
    *res.status_mut() = axum::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

enum HeadRead {
    /// The head ends at this many bytes (more may follow: a pipelined request).
    Complete(usize),
    /// The first bytes are not those of an event stream request.
    NotAStream,
    /// The buffer is full and the head is not complete.
    TooLong,
    /// The client closed before the head was complete.
    Closed,
}

/// Whether `buf` (the first bytes of a connection) may still begin an event stream request.
fn may_be_stream(buf: &[u8]) -> bool {
    STREAM_PREFIXES.iter().any(|p| {
        let n = p.len().min(buf.len());
        buf[..n] == p[..n]
    })
}

/// Reads until the blank line that ends a request head, at most [`HEAD_MAX`] bytes, or
/// until the bytes cannot begin an event stream request.
async fn read_head<I: AsyncRead + Unpin>(io: &mut I, buf: &mut Vec<u8>) -> io::Result<HeadRead> {
    let mut chunk = [0u8; 1024];
    loop {
        let room = (HEAD_MAX - buf.len()).min(chunk.len());
        if room == 0 {
            return Ok(HeadRead::TooLong);
        }
        let n = io.read(&mut chunk[..room]).await?;
        if n == 0 {
            return Ok(HeadRead::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        if !may_be_stream(buf) {
            return Ok(HeadRead::NotAStream);
        }
        // The parser finds the end of the head (lines may end in CRLF or a bare LF); a head
        // it refuses is hyper's to answer.
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match httparse::Request::new(&mut headers).parse(buf) {
            Ok(httparse::Status::Complete(len)) => return Ok(HeadRead::Complete(len)),
            Ok(httparse::Status::Partial) => {}
            Err(_) => return Ok(HeadRead::NotAStream),
        }
    }
}

/// The request, when `head` is a bodiless `GET` of an event stream over HTTP/1.x.
fn parse_stream_request(head: &[u8]) -> Option<Request<Body>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    if !matches!(parsed.parse(head), Ok(httparse::Status::Complete(_))) {
        return None;
    }
    if parsed.method != Some("GET") {
        return None;
    }
    let target = parsed.path?;
    let path = target.split('?').next().unwrap_or(target);
    if !is_stream_path(path) {
        return None;
    }
    let version = match parsed.version? {
        1 => Version::HTTP_11,
        0 => Version::HTTP_10,
        _ => return None,
    };
    let mut req = Request::builder()
        .method(Method::GET)
        .uri(Uri::try_from(target).ok()?)
        .version(version);
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        // A body, an upgrade or an expectation is hyper's to handle.
        if name == header::CONTENT_LENGTH && h.value != b"0"
            || name == header::TRANSFER_ENCODING
            || name == header::UPGRADE
            || name == header::EXPECT
        {
            return None;
        }
        req = req.header(name, HeaderValue::from_bytes(h.value).ok()?);
    }
    req.body(Body::empty()).ok()
}

/// `/v1/stream` and `/v1/replays/{id}/stream`.
fn is_stream_path(path: &str) -> bool {
    path == "/v1/stream"
        || path
            .strip_prefix("/v1/replays/")
            .and_then(|rest| rest.strip_suffix("/stream"))
            .is_some_and(|id| !id.is_empty() && !id.contains('/'))
}

/// Writes `res` to `io`: the head, then the body, with its length when it is known (an
/// error) and otherwise delimited by the close (an event stream; HTTP/1.0 and 1.1 clients
/// alike read it to the end of the connection), until it ends or the client goes away.
async fn respond<I>(io: &mut I, res: Response<Body>) -> io::Result<()>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let (parts, body) = res.into_parts();
    let known = axum::body::HttpBody::size_hint(&body).exact();
    let mut head = Vec::with_capacity(256);
    let reason = parts.status.canonical_reason().unwrap_or("");
    let _ = write!(head, "HTTP/1.1 {} {reason}\r\n", parts.status.as_u16());
    for (name, value) in &parts.headers {
        if name == header::CONNECTION
            || name == header::TRANSFER_ENCODING
            || name == header::CONTENT_LENGTH
        {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if !parts.headers.contains_key(header::DATE) {
        head.extend_from_slice(b"date: ");
        head.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if let Some(n) = known {
        let _ = write!(head, "content-length: {n}\r\n");
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    pump::Pump::new(io, body, head).await
}

/// A socket with bytes already read from it put back in front, holding its connection's
/// slot (free again when the socket is dropped, by hyper or by the WebSocket that took it
/// over after an upgrade).
pub struct Rewind<I> {
    prefix: Vec<u8>,
    at: usize,
    inner: I,
    _slot: OwnedSemaphorePermit,
}

impl<I> Rewind<I> {
    fn new(prefix: Vec<u8>, inner: I, slot: OwnedSemaphorePermit) -> Self {
        Rewind {
            prefix,
            at: 0,
            inner,
            _slot: slot,
        }
    }

    /// Whether the bytes read ahead start with `p`.
    pub fn starts_with(&self, p: &[u8]) -> bool {
        self.prefix[self.at..].starts_with(p)
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            if self.at == self.prefix.len() {
                self.prefix = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bodiless_gets_of_streams_are_taken() {
        let take = |h: &str| parse_stream_request(h.as_bytes()).is_some();
        assert!(take("GET /v1/stream?types=a.* HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(take(
            "GET /v1/replays/rp_1/stream HTTP/1.1\r\nHost: x\r\n\r\n"
        ));
        assert!(take("GET /v1/stream HTTP/1.0\r\n\r\n"));
        assert!(take("GET /v1/stream HTTP/1.1\nHost: x\n\n"));
        assert!(!take("GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(!take("GET /v1/replays/a/b/stream HTTP/1.1\r\n\r\n"));
        assert!(!take("GET /v1/replays//stream HTTP/1.1\r\n\r\n"));
        assert!(!take("HEAD /v1/stream HTTP/1.1\r\n\r\n"));
        assert!(!take(
            "POST /v1/stream HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"
        ));
        assert!(!take(
            "GET /v1/stream HTTP/1.1\r\nContent-Length: 2\r\n\r\n"
        ));
        assert!(!take(
            "GET /v1/stream HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert!(!take(
            "GET /v1/stream HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"
        ));
        assert!(!take("GET /v1/stream HTTP/1.1\r\nBad Header: x\r\n\r\n"));
        assert!(!take("GET /v1/stream HTTP/1.1\r\n"));
        assert!(!take("\u{0}\u{1}garbage\r\n\r\n"));
    }

    #[test]
    fn the_first_bytes_decide_early() {
        assert!(may_be_stream(b"G"));
        assert!(may_be_stream(b"GET /v1/"));
        assert!(may_be_stream(b"GET /v1/stream?x"));
        assert!(may_be_stream(b"GET /v1/replays/rp_1/stream"));
        assert!(!may_be_stream(b"POST"));
        assert!(!may_be_stream(b"GET /v1/events"));
        assert!(!may_be_stream(b"GET /healthz"));
    }
}
