//! The tasks of a WebSocket connection besides its reader: the writer that owns the socket's
//! sending half and every live subscription's cursor, one task per replay, and the publish
//! task that commits a connection's publishes in order.
//!
//! Subscriptions are streams polled by the writer itself, not tasks of their own: an event
//! wakes one task per connection, which writes every frame that is ready (from the outbound
//! queue and from each subscription) and flushes once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, Utf8Bytes};
use crier_core::{queue, Cursor, CursorItem};
use futures_util::future::FutureExt;
use futures_util::stream::{BoxStream, SelectAll};
use futures_util::Stream;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::protocol::{close_frame, error_frame, reply, text, PublishReq};
use super::wire::{Wire, MAX_FRAMES};
use crate::monitor::{position_after, ReaderSlot};
use crate::service::publish::{admit, append, prepare, result_json};
use crate::service::replays::{Pacer, Replay};
use crate::state::AppState;

/// What the connection's ops hand to its writer, in order.
pub(super) enum Out {
    /// A frame to send.
    Frame(Message),
    /// A subscription whose events the writer sends from now on (after the frames queued
    /// before it, so `subscribed` precedes its first event).
    Subscribe(LiveStream),
}

/// What an item of the outbound queue weighs beyond its bytes.
const FRAME_WEIGHT: usize = 64;

impl Out {
    /// What the item weighs in the outbound queue: its bytes and a little for the frame, so
    /// the queue is bounded in bytes (§12.2 `reader_buffer_bytes`) and in frames.
    pub(super) fn weight(&self) -> usize {
        match self {
            Out::Frame(m) => Out::weight_of(m),
            Out::Subscribe(_) => FRAME_WEIGHT,
        }
    }

    /// What a frame weighs: its bytes and a little for the frame.
    fn weight_of(m: &Message) -> usize {
        match m {
            Message::Text(t) => FRAME_WEIGHT + t.len(),
            Message::Binary(b) => FRAME_WEIGHT + b.len(),
            _ => FRAME_WEIGHT,
        }
    }
}

impl From<Message> for Out {
    fn from(m: Message) -> Out {
        Out::Frame(m)
    }
}

/// A subscription's frames, until its cursor fails or it is stopped.
pub(super) struct LiveStream {
    frames: BoxStream<'static, Message>,
    stopped: Arc<AtomicBool>,
}

impl Stream for LiveStream {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        // A flag, not a waker registered at each poll: whoever stops a subscription then
        // queues an answer, which wakes the writer, which polls this and drops it.
        if self.stopped.load(Ordering::Acquire) {
            return Poll::Ready(None);
        }
        self.frames.poll_next_unpin(cx)
    }
}

/// Ends a subscription's [`LiveStream`]: once [`Stop::stop`] has returned, the stream yields
/// nothing more.
pub(super) struct Stop(Arc<AtomicBool>);

impl Stop {
    pub(super) fn stop(&self) {
        self.0.store(true, Ordering::Release);
    }
}

struct SubState {
    id: String,
    cursor: Cursor,
    reader: ReaderSlot,
    /// `{"op":"event","sub":<id>,"event":`, the start of each event frame.
    prefix: String,
    sent_total: metrics::Counter,
}

/// One subscription's cursor as a stream of frames, and the handle that ends it: once
/// `stop` has returned, the stream yields nothing more (`unsubscribe` relies on it, its
/// answer being queued after the stop).
pub(super) fn sub_stream(id: &str, cursor: Cursor, reader: ReaderSlot) -> (LiveStream, Stop) {
    let st = SubState {
        prefix: format!("{{\"op\":\"event\",\"sub\":{},\"event\":", Value::from(id)),
        id: id.to_string(),
        cursor,
        reader,
        // Looked up once, not per event.
        sent_total: metrics::counter!("crier_stream_events_sent_total", "transport" => "ws"),
    };
    let frames = futures_util::stream::unfold(Some(st), |st| async move {
        let mut st = st?;
        loop {
            // Waiting on a live cursor with nothing buffered: caught up (lag 0).
            st.reader.waiting(st.cursor.is_live());
            let item = st.cursor.next().await;
            let sent = item.as_ref().ok().map(position_after);
            let frame = match item {
                Ok(CursorItem::Event(e)) => {
                    // The stored JSON is UTF-8 (it was encoded from a string); a frame that
                    // were not would be skipped rather than sent broken.
                    // Every socket shares the cached frame (see `frames`).
                    let frame = match e
                        .frames
                        .ws_text(&st.id, &st.prefix, &e.json, Utf8Bytes::from)
                    {
                        Some(text) => text,
                        None => {
                            tracing::error!(seq = e.seq, "stored event is not UTF-8; not sent");
                            continue;
                        }
                    };
                    st.sent_total.increment(1);
                    Message::Text(frame)
                }
                Ok(CursorItem::Reset(r)) => {
                    let mut v = r.to_json();
                    if let Value::Object(m) = &mut v {
                        m.insert("op".into(), "reset".into());
                        m.insert("sub".into(), st.id.as_str().into());
                    }
                    text(v.to_string())
                }
                Err(e) => {
                    tracing::warn!(error = %e, sub = %st.id, "subscription ended: the log could not be read");
                    let frame = text(
                        json!({"op": "error", "sub": st.id, "code": "store_unavailable",
                               "message": "the event log could not be read; subscribe again with `after`"})
                        .to_string(),
                    );
                    return Some((frame, None));
                }
            };
            // Taken by the writer as soon as it is yielded: handed to the socket.
            if let Some(seq) = sent {
                st.reader.delivered(seq);
            }
            return Some((frame, Some(st)));
        }
    });
    let stopped = Arc::new(AtomicBool::new(false));
    let stream = LiveStream {
        frames: frames.boxed(),
        stopped: stopped.clone(),
    };
    (stream, Stop(stopped))
}

fn replay_status(replay: &Replay) -> Message {
    let Value::Object(mut status) = replay.status() else {
        return text(String::new());
    };
    let id = status.remove("id").unwrap_or(Value::Null);
    status.insert("replay".into(), id);
    reply("replay_status", None, status)
}

pub(super) async fn replay_loop(state: AppState, replay: Arc<Replay>, out: queue::Sender<Out>) {
    let prefix = format!(
        "{{\"op\":\"event\",\"sub\":{},\"replay\":true,\"event\":",
        Value::from(replay.id.as_str())
    );
    let mut pacer = Pacer::new(&state, replay.clone());
    let step = (replay.total / 10).max(1);
    let mut last_status = tokio::time::Instant::now();
    loop {
        let next = tokio::select! {
            _ = replay.cancel.cancelled() => break,
            n = pacer.next() => n,
        };
        let e = match next {
            Ok(Some(e)) => e,
            Ok(None) => {
                replay.finish_done();
                break;
            }
            Err(err) => {
                tracing::warn!(replay = %replay.id, error = %err.message(), "replay ended early");
                replay.stop();
                break;
            }
        };
        let body = String::from_utf8_lossy(&e.json);
        let mut s = String::with_capacity(prefix.len() + body.len() + 1);
        s.push_str(&prefix);
        s.push_str(&body);
        s.push('}');
        tokio::select! {
            _ = replay.cancel.cancelled() => break,
            r = out.send(text(s).into()) => if r.is_err() { return },
        }
        let sent = pacer.sent();
        if sent.is_multiple_of(step) || last_status.elapsed() >= Duration::from_secs(1) {
            last_status = tokio::time::Instant::now();
            if sent < replay.total && out.send(replay_status(&replay).into()).await.is_err() {
                return;
            }
        }
    }
    let _ = out.send(replay_status(&replay).into()).await;
}

pub(super) async fn publish_loop(
    state: AppState,
    mut rx: mpsc::Receiver<Box<PublishReq>>,
    out: queue::Sender<Out>,
) {
    while let Some(req) = rx.recv().await {
        let (r, event, principal) = *req;
        let prepared = prepare(&state, &principal, vec![event], false)
            .and_then(|batch| admit(&state, &principal.tenant, batch.len()).map(|()| batch));
        let answer = match prepared {
            Err(e) => error_frame(r.as_ref(), e.code(), e.message()),
            Ok(batch) => match append(&state, batch).await {
                Ok(results) => {
                    metrics::counter!("crier_publish_requests_total", "transport" => "ws")
                        .increment(1);
                    let Some(res) = results.first() else { continue };
                    let Value::Object(fields) = result_json(res) else {
                        continue;
                    };
                    reply("published", r.as_ref(), fields)
                }
                Err(e) => error_frame(r.as_ref(), e.code(), e.message()),
            },
        };
        if out.send(answer.into()).await.is_err() {
            return;
        }
    }
}

/// The connection's live subscriptions. Most connections hold one: it is polled directly,
/// and only the others go through a `SelectAll`, whose bookkeeping per wake costs more than
/// the event.
#[derive(Default)]
struct Subs {
    first: Option<LiveStream>,
    /// Made by the second subscription: an empty `SelectAll` allocates.
    more: Option<SelectAll<LiveStream>>,
    /// Which of the two is polled first on the next poll, turn about.
    more_first: bool,
}

impl Subs {
    fn push(&mut self, s: LiveStream) {
        if self.first.is_none() {
            self.first = Some(s);
        } else {
            self.more.get_or_insert_with(SelectAll::new).push(s);
        }
    }

    fn is_empty(&self) -> bool {
        self.first.is_none() && self.more.as_ref().is_none_or(SelectAll::is_empty)
    }

    fn poll_first(&mut self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        let Some(s) = self.first.as_mut() else {
            return Poll::Ready(None);
        };
        match s.poll_next_unpin(cx) {
            Poll::Ready(None) => {
                self.first = None;
                Poll::Ready(None)
            }
            other => other,
        }
    }

    fn poll_more(&mut self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        match self.more.as_mut() {
            Some(more) if !more.is_empty() => more.poll_next_unpin(cx),
            _ => Poll::Ready(None),
        }
    }
}

type PollSubs = fn(&mut Subs, &mut Context<'_>) -> Poll<Option<Message>>;

impl Stream for Subs {
    type Item = Message;

    /// The next frame of any subscription; `None` only once every one has ended.
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        let this = &mut *self;
        this.more_first = !this.more_first;
        let order: [PollSubs; 2] = if this.more_first {
            [Subs::poll_more, Subs::poll_first]
        } else {
            [Subs::poll_first, Subs::poll_more]
        };
        let mut pending = false;
        for poll in order {
            match poll(this, cx) {
                Poll::Ready(Some(m)) => return Poll::Ready(Some(m)),
                Poll::Ready(None) => {}
                Poll::Pending => pending = true,
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(None)
        }
    }
}

/// Frames written between two flushes at most, so a subscription reading a long history
/// does not hold off the heartbeat or the shutdown.
const BURST: usize = MAX_FRAMES;
/// Bytes of frames one write takes at most (past one frame): what a connection whose
/// client stopped reading holds beyond its queues (§12.2 `reader_buffer_bytes`).
const BURST_BYTES: usize = 64 * 1024;

/// Owns the socket's sending half and the connection's subscriptions: writes what the ops
/// queue and every subscription's events, all that is ready at each wake, in one write.
pub(super) async fn write_loop<W: AsyncWrite + Unpin>(
    mut wire: Wire<W>,
    mut rx: queue::Receiver<Out>,
    cancel: CancellationToken,
    heartbeat: Duration,
    last_seen: Arc<AtomicU64>,
    started: Instant,
) {
    let mut tick = tokio::time::interval(heartbeat);
    tick.tick().await;
    let mut subs = Subs::default();
    let control = wire.control();
    loop {
        let first = tokio::select! {
            // A fixed order (no random start per wake), the timer first, so frames that
            // never stop coming cannot starve it. The shutdown comes as a close frame,
            // queued by the reader.
            biased;
            _ = tick.tick() => {
                let idle = started.elapsed().as_millis() as u64 - last_seen.load(Ordering::Relaxed);
                if idle > 2 * heartbeat.as_millis() as u64 + 1000 {
                    tracing::debug!("closing an unresponsive websocket");
                    let _ = wire.write(&[close_frame(1001, "no answer to pings")]).await;
                    break;
                }
                if wire.write(&[Message::Ping(Default::default())]).await.is_err() { break }
                continue;
            }
            // The library answered a ping or a close.
            () = std::future::poll_fn(|cx| control.poll_ready(cx)) => {
                if wire.write(&[]).await.is_err() { break }
                continue;
            }
            out = rx.recv() => match out {
                Some(o) => o,
                None => { let _ = wire.write(&[close_frame(1000, "bye")]).await; break }
            },
            Some(frame) = subs.next(), if !subs.is_empty() => Out::Frame(frame),
        };
        // Made per burst: a list kept between bursts would stay with an idle connection.
        let mut batch = Vec::new();
        let closing = gather(first, &mut rx, &mut subs, &mut batch);
        let written = wire.write(&batch).await;
        drop(batch);
        if closing || written.is_err() {
            break;
        }
    }
    // After a close frame of ours, or the library's answer to the peer's: the closing
    // handshake is done on this side.
    wire.shutdown().await;
    cancel.cancel();
}

/// Takes `first` and whatever else is ready (queued frames, subscriptions' events) into
/// `batch`, up to [`BURST`] frames, in the order taken. True when the batch ends with a
/// close frame: the connection is done.
fn gather(
    first: Out,
    rx: &mut queue::Receiver<Out>,
    subs: &mut Subs,
    batch: &mut Vec<Message>,
) -> bool {
    let mut next = Some(first);
    let mut bytes = 0;
    while let Some(out) = next.take() {
        match out {
            Out::Subscribe(stream) => subs.push(stream),
            Out::Frame(m) => {
                let closing = matches!(m, Message::Close(_));
                bytes += Out::weight_of(&m);
                batch.push(m);
                if closing {
                    return true;
                }
            }
        }
        if batch.len() >= BURST || bytes >= BURST_BYTES {
            break;
        }
        next = match rx.try_recv() {
            Some(o) => Some(o),
            None if subs.is_empty() => None,
            None => subs.next().now_or_never().flatten().map(Out::Frame),
        };
    }
    false
}
