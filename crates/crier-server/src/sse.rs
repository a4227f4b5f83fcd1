//! `GET /v1/stream`: Server-Sent Events as §4 specifies, so a browser's `EventSource` works
//! unchanged.
//!
//! The body is a stream over one cursor. A live event goes out as one chunk: its SSE
//! message, built once for the event and shared with every other stream
//! ([`crier_core::frames`]), never re-encoded or copied. When several events are ready at once —
//! a reader catching up — they are packed into one chunk of at most 64 KiB instead, so the
//! reader gets large writes. A client that stops reading stops the body from
//! being polled, its cursor's live queue fills, and the cursor falls back to the log: the
//! server's memory for it stays bounded and other clients are not slowed.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::BytesMut;
use crier_core::{Cursor, CursorItem};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::auth::{narrow, Auth};
use crate::error::ApiError;
use crate::lifetime::Lifetime;
use crate::monitor::{Peer, Reader, ReaderSlot};
use crate::query::Query;
use crate::state::{AppState, ConnGuard, Transport};
use crate::transport::{event_stream, start_position};

/// Largest chunk assembled from ready events.
const MAX_CHUNK: usize = 64 * 1024;

struct SseState {
    cursor: Cursor,
    out: VecDeque<Bytes>,
    heartbeat: Duration,
    /// Fires a heartbeat after `heartbeat` without a write. Re-armed when it fires, not per
    /// event: an event only moves `last_write`.
    ping: Pin<Box<Sleep>>,
    last_write: Instant,
    /// The hub's shutdown, waited on through a token of the stream's own: one registration
    /// for the stream's life, polled without a lock that other streams share.
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    sent_total: metrics::Counter,
    /// When the credential ends, so does the stream (the client reconnects with a fresh one).
    lifetime: Lifetime,
    done: bool,
    /// The stream's reader in the connection registry (declared before the guard: dropped
    /// first).
    reader: ReaderSlot,
    _guard: ConnGuard,
}

fn pack(buf: &mut BytesMut, reader: &Reader, item: CursorItem) -> u64 {
    reader.sent(&item);
    match item {
        CursorItem::Event(e) => {
            buf.extend_from_slice(&e.frames.sse(e.seq, &e.kind, &e.json));
            1
        }
        CursorItem::Reset(r) => {
            buf.extend_from_slice(
                format!("event: crier.reset\ndata: {}\n\n", r.to_json()).as_bytes(),
            );
            0
        }
    }
}

impl SseState {
    /// Queues `first` and whatever else is ready; returns the number of events. A lone event
    /// (the live case) goes out around its shared stored bytes without a copy; several ready
    /// events (catching up) are packed into one chunk of at most [`MAX_CHUNK`].
    fn frame(&mut self, first: CursorItem) -> u64 {
        let Some(second) = self.cursor.try_next() else {
            self.reader.sent(&first);
            if let CursorItem::Event(e) = first {
                self.out.push_back(e.frames.sse(e.seq, &e.kind, &e.json));
                return 1;
            }
            let mut buf = BytesMut::new();
            pack(&mut buf, &self.reader, first);
            self.out.push_back(buf.freeze());
            return 0;
        };
        let mut buf = BytesMut::new();
        let mut events = pack(&mut buf, &self.reader, first) + pack(&mut buf, &self.reader, second);
        while buf.len() < MAX_CHUNK {
            let Some(item) = self.cursor.try_next() else {
                break;
            };
            events += pack(&mut buf, &self.reader, item);
        }
        self.out.push_back(buf.freeze());
        events
    }

    /// Produces the next chunk, or `None` when the stream ends.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if let Some(b) = self.out.pop_front() {
                return Some(b);
            }
            if self.done {
                return None;
            }
            // Waiting on a live cursor with nothing buffered: caught up (lag 0).
            self.reader.waiting(self.cursor.is_live());
            tokio::select! {
                biased;
                _ = self.shutdown.as_mut() => self.done = true,
                // Before the cursor: a stream full of ready events still notices the end.
                ended = self.lifetime.ended() => {
                    self.out.push_back(Bytes::from_static(ended.sse_comment()));
                    self.done = true;
                }
                item = self.cursor.next() => match item {
                    Ok(first) => {
                        let events = self.frame(first);
                        self.sent_total.increment(events);
                        self.last_write = Instant::now();
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "SSE stream ended: the log could not be read");
                        self.done = true;
                    }
                },
                _ = self.ping.as_mut() => {
                    let now = Instant::now();
                    let due = self.last_write + self.heartbeat;
                    if now >= due {
                        self.out.push_back(Bytes::from_static(b": ping\n\n"));
                        self.last_write = now;
                        self.ping.as_mut().reset(now + self.heartbeat);
                    } else {
                        self.ping.as_mut().reset(due);
                    }
                }
            }
        }
    }
}

/// `GET /v1/stream`.
pub async fn stream(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Peer(remote): Peer,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref(), &["after", "last", "tenant", "filter"])?;
    let (scope, filter) = crate::service::filters::from_query(&state, &principal, &q).await?;
    crate::reader_limits::check_filter(&state.settings.limits, &filter)?;
    let filter = Arc::new(narrow(&principal, filter));
    let last_event_id = headers.get("last-event-id").map(|v| {
        v.to_str()
            .map_err(|_| ApiError::bad("invalid_cursor", "Last-Event-ID must be a seq number"))
    });
    let last_event_id = last_event_id.transpose()?;
    let start = start_position(last_event_id, q.u64("after")?, q.u64("last")?)?;
    let guard = state.conns.open(
        &state,
        &principal.tenant,
        Transport::Sse,
        &principal.subject,
        remote,
    )?;
    // The reader is listed with its filter at once, then placed where its cursor opened.
    let reader = guard.info().reader(None, &filter, state.hub.head());
    let queue = state.settings.limits.queue_per_connection;
    let (cursor, head) = state.hub.open(scope, filter, start, queue).await?;
    reader.delivered(cursor.position());
    let heartbeat = state.settings.heartbeat;
    let mut out = VecDeque::new();
    out.push_back(Bytes::from(format!(
        "retry: {}\n: crier head={head}\n\n",
        state.settings.sse_retry.as_millis()
    )));
    let st = SseState {
        cursor,
        out,
        heartbeat,
        ping: Box::pin(tokio::time::sleep(heartbeat)),
        last_write: Instant::now(),
        shutdown: Box::pin(state.shutdown.child_token().cancelled_owned()),
        sent_total: metrics::counter!("crier_stream_events_sent_total", "transport" => "sse"),
        lifetime: Lifetime::new(&state, &principal),
        done: false,
        reader,
        _guard: guard,
    };
    let body = futures_util::stream::unfold(st, |mut st| async move {
        st.next_chunk().await.map(|b| (Ok::<_, Infallible>(b), st))
    });
    Ok(event_stream(Body::from_stream(body)))
}
