//! The tasks of a WebSocket connection besides its reader: one per subscription (a cursor
//! feeding the outbound queue), one per replay, the publish task that commits a connection's
//! publishes in order, and the writer that owns the socket's sending half.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use crier_core::{Cursor, CursorItem};
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::protocol::{close_frame, error_frame, reply, text, PublishReq};
use crate::monitor::{position_after, ReaderSlot};
use crate::service::publish::{admit, append, prepare, result_json};
use crate::service::replays::{Pacer, Replay};
use crate::state::AppState;

/// Feeds one subscription's cursor into the connection's outbound queue until the writer
/// is gone. Stopped by aborting its task (`unsubscribe`, the connection's end): it holds no
/// state that must outlive an await, and so needs no cancellation token polled per event.
pub(super) async fn sub_loop(
    id: String,
    mut cursor: Cursor,
    reader: ReaderSlot,
    out: mpsc::Sender<Message>,
) {
    let prefix = format!(
        "{{\"op\":\"event\",\"sub\":{},\"event\":",
        Value::from(id.as_str())
    );
    // Looked up once, not per event.
    let sent_total = metrics::counter!("crier_stream_events_sent_total", "transport" => "ws");
    loop {
        // Waiting on a live cursor with nothing buffered: caught up (lag 0).
        reader.waiting(cursor.is_live());
        let item = cursor.next().await;
        let sent = item.as_ref().ok().map(position_after);
        let frame = match item {
            Ok(CursorItem::Event(e)) => {
                let frame = e.frames.ws(&id, prefix.as_bytes(), &e.json);
                // The stored JSON is UTF-8 (it was encoded from a string); a frame that were
                // not would be skipped rather than sent broken.
                let Ok(frame) = Utf8Bytes::try_from(frame) else {
                    tracing::error!(seq = e.seq, "stored event is not UTF-8; not sent");
                    continue;
                };
                sent_total.increment(1);
                Message::Text(frame)
            }
            Ok(CursorItem::Reset(r)) => {
                let mut v = r.to_json();
                if let Value::Object(m) = &mut v {
                    m.insert("op".into(), "reset".into());
                    m.insert("sub".into(), id.as_str().into());
                }
                text(v.to_string())
            }
            Err(e) => {
                tracing::warn!(error = %e, sub = %id, "subscription ended: the log could not be read");
                let _ = out
                    .send(text(
                        json!({"op": "error", "sub": id, "code": "store_unavailable",
                               "message": "the event log could not be read; subscribe again with `after`"})
                        .to_string(),
                    ))
                    .await;
                return;
            }
        };
        if out.send(frame).await.is_err() {
            return;
        }
        if let Some(seq) = sent {
            reader.delivered(seq);
        }
    }
}

fn replay_status(replay: &Replay) -> Message {
    let Value::Object(mut status) = replay.status() else {
        return text(String::new());
    };
    let id = status.remove("id").unwrap_or(Value::Null);
    status.insert("replay".into(), id);
    reply("replay_status", None, status)
}

pub(super) async fn replay_loop(state: AppState, replay: Arc<Replay>, out: mpsc::Sender<Message>) {
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
            r = out.send(text(s)) => if r.is_err() { return },
        }
        let sent = pacer.sent();
        if sent.is_multiple_of(step) || last_status.elapsed() >= Duration::from_secs(1) {
            last_status = tokio::time::Instant::now();
            if sent < replay.total && out.send(replay_status(&replay)).await.is_err() {
                return;
            }
        }
    }
    let _ = out.send(replay_status(&replay)).await;
}

pub(super) async fn publish_loop(
    state: AppState,
    mut rx: mpsc::Receiver<Box<PublishReq>>,
    out: mpsc::Sender<Message>,
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
        if out.send(answer).await.is_err() {
            return;
        }
    }
}

pub(super) async fn write_loop(
    mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Message>,
    cancel: CancellationToken,
    heartbeat: Duration,
    last_seen: Arc<AtomicU64>,
    started: Instant,
) {
    let mut tick = tokio::time::interval(heartbeat);
    tick.tick().await;
    // One wait on the token for the connection's life, not one made and dropped per frame.
    let cancelled = cancel.cancelled();
    tokio::pin!(cancelled);
    loop {
        tokio::select! {
            // A fixed order (no random start per wake), the token and the timer first, so a
            // queue that never empties cannot starve them.
            biased;
            _ = &mut cancelled => {
                let _ = sink.send(close_frame(1001, "server shutting down")).await;
                break;
            }
            _ = tick.tick() => {
                let idle = started.elapsed().as_millis() as u64 - last_seen.load(Ordering::Relaxed);
                if idle > 2 * heartbeat.as_millis() as u64 + 1000 {
                    tracing::debug!("closing an unresponsive websocket");
                    let _ = sink.send(close_frame(1001, "no answer to pings")).await;
                    break;
                }
                if sink.send(Message::Ping(Default::default())).await.is_err() { break }
            },
            msg = rx.recv() => match msg {
                Some(m) => {
                    // Queue what is waiting and flush once: one write for a burst of frames.
                    let mut closing = matches!(m, Message::Close(_));
                    let mut ok = sink.feed(m).await.is_ok();
                    while ok && !closing {
                        match rx.try_recv() {
                            Ok(next) => {
                                closing = matches!(next, Message::Close(_));
                                ok = sink.feed(next).await.is_ok();
                            }
                            Err(_) => break,
                        }
                    }
                    if !ok || sink.flush().await.is_err() || closing { break }
                }
                None => { let _ = sink.send(close_frame(1000, "bye")).await; break }
            },
        }
    }
    // Ends the closing handshake: after a close frame of the peer the library only queued its
    // answer (a close message of ours is refused once the peer has closed), and after one of
    // ours this is a flush.
    let _ = sink.close().await;
    cancel.cancel();
}
