//! The socket of a `/v1/ws` connection, split between the WebSocket library, which reads
//! (frame parsing, unmasking, UTF-8 and size checks, answers to pings and closes), and the
//! connection's writer, which writes every frame it sends itself.
//!
//! Why not let the library write too: it copies each frame into a buffer of its own before
//! the socket takes it, behind a lock shared by the two halves; at 5,000 subscribers × 200
//! events/s that copy and its bookkeeping were 5–8 % of the hub's CPU per delivery. Here an
//! event frame is its shared bytes (one per event and subscription id, built once for every
//! socket, see `crier_core::Frames`) behind a header of at most ten bytes, and everything
//! ready goes to the socket in one vectored write, with no copy and no frame kept between
//! writes.
//!
//! The library still writes its own answers (a pong, the reply to a close): the read side's
//! socket hands those bytes to the writer ([`Control`]), which sends them before its next
//! frames, so frames are never interleaved.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use axum::extract::ws::Message;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Bytes of the library's answers held for the writer at most, and in the library's own
/// buffer at most. Past that its writes wait and it keeps only the latest pong, which only
/// a client sending pings faster than it reads the pongs can cause.
pub(super) const CONTROL_MAX: usize = 4 * 1024;

/// Frames one write takes at most (two slices each, under Linux's 1024 per `writev`).
pub(super) const MAX_FRAMES: usize = 256;

#[derive(Default)]
struct ControlState {
    /// Whole frames the library wrote, in order.
    bytes: Vec<u8>,
    /// A close frame is among `bytes` or went out (the library's or the writer's): nothing
    /// may follow it.
    closing: bool,
    /// The writer, waiting for bytes.
    writer: Option<Waker>,
    /// The library, waiting for room.
    library: Option<Waker>,
    /// The writer is gone: the library's writes fail (a reader waiting on one ends).
    gone: bool,
}

/// What the library's writes hand to the connection's writer.
#[derive(Default)]
pub(super) struct Control(Mutex<ControlState>);

impl Control {
    fn lock(&self) -> MutexGuard<'_, ControlState> {
        // Nothing panics while holding the lock; if something did, the state is still whole.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ready once the library has written something for the writer to send.
    pub(super) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.lock();
        if !s.bytes.is_empty() {
            return Poll::Ready(());
        }
        if !s.writer.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.writer = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Takes what the library wrote, and whether a close frame is among it or went out
    /// before.
    fn take(&self) -> (Vec<u8>, bool) {
        let mut s = self.lock();
        let bytes = std::mem::take(&mut s.bytes);
        let closing = s.closing;
        let library = s.library.take();
        drop(s);
        if let Some(w) = library {
            w.wake();
        }
        (bytes, closing)
    }

    fn set_closing(&self) {
        self.lock().closing = true;
    }

    /// The writer ended: nothing the library writes will be sent.
    fn writer_gone(&self) {
        let mut s = self.lock();
        s.gone = true;
        let library = s.library.take();
        drop(s);
        if let Some(w) = library {
            w.wake();
        }
    }
}

/// Whether `bytes`, whole unmasked frames as a server writes them, hold a close frame.
fn holds_close(mut bytes: &[u8]) -> bool {
    while let [b0, b1, rest @ ..] = bytes {
        if b0 & 0x0f == 0x8 {
            return true;
        }
        let (len, rest) = match b1 & 0x7f {
            126 if rest.len() >= 2 => (u16::from_be_bytes([rest[0], rest[1]]) as usize, &rest[2..]),
            127 if rest.len() >= 8 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&rest[..8]);
                (
                    usize::try_from(u64::from_be_bytes(n)).unwrap_or(usize::MAX),
                    &rest[8..],
                )
            }
            126 | 127 => return false,
            n => (n as usize, rest),
        };
        bytes = rest.get(len..).unwrap_or_default();
    }
    false
}

/// The read half of the socket as the library sees it: reads go to the socket, writes to
/// the connection's writer.
pub(super) struct ReadSide<R> {
    io: R,
    control: Arc<Control>,
}

impl<R> ReadSide<R> {
    pub(super) fn new(io: R, control: Arc<Control>) -> Self {
        ReadSide { io, control }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for ReadSide<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<R: Unpin> AsyncWrite for ReadSide<R> {
    /// Takes the whole of `buf` or nothing, so the writer only ever sees whole frames (the
    /// library writes whole frames from its buffer and keeps what is not taken).
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut s = self.control.lock();
        if s.gone {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if !s.bytes.is_empty() && s.bytes.len() + buf.len() > CONTROL_MAX {
            s.library = Some(cx.waker().clone());
            return Poll::Pending;
        }
        s.bytes.extend_from_slice(buf);
        s.closing |= holds_close(buf);
        let writer = s.writer.take();
        drop(s);
        if let Some(w) = writer {
            w.wake();
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// The writer ends the socket, after the last frame.
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A frame's opcode and payload, as [`Wire::write`] sends it. A close frame's payload (its
/// code and reason) is small and goes with the header.
fn parts(m: &Message) -> (u8, &[u8]) {
    match m {
        Message::Text(t) => (0x1, t.as_str().as_bytes()),
        Message::Binary(b) => (0x2, b),
        Message::Close(_) => (0x8, &[]),
        Message::Ping(b) => (0x9, b),
        Message::Pong(b) => (0xa, b),
    }
}

/// Appends the header of `m` as an unmasked final frame (RFC 6455 §5.2), then, for a close
/// frame, its code and reason.
fn put_head(out: &mut Vec<u8>, m: &Message) {
    let (opcode, payload) = parts(m);
    let close = match m {
        // A reason is cut to what a control frame may carry (125 bytes with the code).
        Message::Close(Some(c)) => {
            let reason = c.reason.as_str();
            let mut n = reason.len().min(123);
            while !reason.is_char_boundary(n) {
                n -= 1;
            }
            Some((c.code, &reason.as_bytes()[..n]))
        }
        _ => None,
    };
    let len = payload.len() + close.map_or(0, |(_, r)| 2 + r.len());
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(n) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if let Some((code, reason)) = close {
        out.extend_from_slice(&code.to_be_bytes());
        out.extend_from_slice(reason);
    }
}

/// The write half of a connection's socket, owned by its writer.
pub(super) struct Wire<W> {
    io: W,
    control: Arc<Control>,
    /// The frames' headers of the write under way (kept between writes while small).
    heads: Vec<u8>,
}

/// Header bytes kept between writes at most.
const HEADS_KEPT: usize = 256;

impl<W: AsyncWrite + Unpin> Wire<W> {
    pub(super) fn new(io: W, control: Arc<Control>) -> Self {
        Wire {
            io,
            control,
            heads: Vec::new(),
        }
    }

    /// What the library writes to: ready when it has something for [`Wire::write`].
    pub(super) fn control(&self) -> Arc<Control> {
        self.control.clone()
    }

    /// Writes what the library has written, then `frames` (at most [`MAX_FRAMES`]), in one
    /// vectored write when the socket takes it all, and flushes. Fails once a close frame has
    /// gone out: nothing may follow it.
    pub(super) async fn write(&mut self, frames: &[Message]) -> io::Result<()> {
        let (control, closing) = self.control.take();
        if closing && control.is_empty() {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let frames = if closing { &[][..] } else { frames };
        if frames.iter().any(|m| matches!(m, Message::Close(_))) {
            self.control.set_closing();
        }
        let mut heads = std::mem::take(&mut self.heads);
        heads.clear();
        let written = match frames {
            // The live case, one event per wake: no list to allocate.
            [] | [_] => {
                let payload: &[u8] = match frames.first() {
                    Some(m) => {
                        put_head(&mut heads, m);
                        parts(m).1
                    }
                    None => &[],
                };
                let mut slices = [
                    IoSlice::new(&control),
                    IoSlice::new(&heads),
                    IoSlice::new(payload),
                ];
                write_all(&mut self.io, &mut slices).await
            }
            _ => {
                let mut ends = Vec::with_capacity(frames.len());
                for m in frames {
                    put_head(&mut heads, m);
                    ends.push(heads.len());
                }
                let mut slices = Vec::with_capacity(1 + 2 * frames.len());
                slices.push(IoSlice::new(&control));
                let mut start = 0;
                for (m, &end) in frames.iter().zip(&ends) {
                    slices.push(IoSlice::new(&heads[start..end]));
                    slices.push(IoSlice::new(parts(m).1));
                    start = end;
                }
                write_all(&mut self.io, &mut slices).await
            }
        };
        if heads.capacity() <= HEADS_KEPT {
            self.heads = heads;
        }
        written?;
        self.io.flush().await?;
        if closing {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        Ok(())
    }

    /// Ends the socket's sending side, after the last frame.
    pub(super) async fn shutdown(&mut self) {
        let _ = self.io.shutdown().await;
    }
}

impl<W> Drop for Wire<W> {
    fn drop(&mut self) {
        self.control.writer_gone();
    }
}

/// Writes every slice, resuming after partial writes.
async fn write_all<W: AsyncWrite + Unpin>(
    io: &mut W,
    slices: &mut [IoSlice<'_>],
) -> io::Result<()> {
    let mut rest = slices;
    // Drops the empty slices in front (no bytes of the library's, say).
    IoSlice::advance_slices(&mut rest, 0);
    while !rest.is_empty() {
        let n = poll_fn(|cx| Pin::new(&mut *io).poll_write_vectored(cx, rest)).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::ws::{CloseFrame, Utf8Bytes};

    fn head(m: &Message) -> Vec<u8> {
        let mut out = Vec::new();
        put_head(&mut out, m);
        out
    }

    #[test]
    fn headers_follow_rfc_6455() {
        assert_eq!(head(&Message::Text("hi".into())), [0x81, 2]);
        assert_eq!(head(&Message::Ping(Default::default())), [0x89, 0]);
        let t = "x".repeat(300);
        assert_eq!(head(&Message::Text(t.into())), [0x81, 126, 1, 44]);
        let t = "x".repeat(70_000);
        assert_eq!(
            head(&Message::Text(t.into())),
            [0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]
        );
        let close = Message::Close(Some(CloseFrame {
            code: 4001,
            reason: Utf8Bytes::from_static("bye"),
        }));
        assert_eq!(head(&close), [0x88, 5, 0x0f, 0xa1, b'b', b'y', b'e']);
        assert_eq!(head(&Message::Close(None)), [0x88, 0]);
    }

    #[test]
    fn a_close_is_found_among_whole_frames() {
        let mut bytes = head(&Message::Pong(vec![1, 2, 3].into()));
        bytes.extend_from_slice(&[1, 2, 3]);
        assert!(!holds_close(&bytes));
        bytes.extend(head(&Message::Close(None)));
        assert!(holds_close(&bytes));
        let mut long = head(&Message::Text("y".repeat(200).into()));
        long.extend_from_slice("y".repeat(200).as_bytes());
        assert!(!holds_close(&long));
        // A length past the end stops the scan instead of reading beyond it.
        assert!(!holds_close(&[0x81, 127, 0xff]));
        assert!(!holds_close(&[0x81, 126]));
    }

    #[tokio::test]
    async fn frames_go_out_after_what_the_library_wrote_and_nothing_after_a_close() {
        let control = Arc::new(Control::default());
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let mut wire = Wire::new(a, control.clone());
        let mut side = ReadSide::new(tokio::io::empty(), control.clone());
        side.write_all(&[0x8a, 1, 7])
            .await
            .expect("a pong is taken");
        wire.write(&[Message::Text("ab".into())])
            .await
            .expect("written");
        let mut got = [0u8; 7];
        tokio::io::AsyncReadExt::read_exact(&mut b, &mut got)
            .await
            .expect("read");
        assert_eq!(got, [0x8a, 1, 7, 0x81, 2, b'a', b'b']);

        // The library answered a close: it goes out, the frames queued behind it do not.
        side.write_all(&[0x88, 0]).await.expect("a close is taken");
        assert!(wire.write(&[Message::Text("c".into())]).await.is_err());
        let mut got = [0u8; 2];
        tokio::io::AsyncReadExt::read_exact(&mut b, &mut got)
            .await
            .expect("read");
        assert_eq!(got, [0x88, 0]);
        assert!(wire.write(&[]).await.is_err());

        // Once the writer is gone, the library's writes fail instead of waiting for room.
        drop(wire);
        assert!(side.write_all(&[0x8a, 0]).await.is_err());
    }
}
