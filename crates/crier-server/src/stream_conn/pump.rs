//! Writing an event stream's body to its socket as it is produced.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes gathered into one write at most.
const WRITE_BATCH: usize = 64 * 1024;
/// What a client may send after its request before the stream is ended: an event stream's
/// client sends nothing more (a pipelined request or two is tolerated and dropped), and one
/// that keeps sending would only make the hub spend itself reading.
const MAX_DISCARDED: usize = 16 * 1024;

/// What [`Pump`] is doing.
enum PumpState {
    /// Taking what the body has ready, or waiting for it.
    Gather,
    /// Writing `out`, then the lone piece.
    Write,
    /// Flushing what was written.
    Flush,
}

/// Writes a response body to the socket as it is produced.
///
/// The body is delimited by the connection's close, not framed in HTTP/1.1 chunks: an event
/// stream has no end a client must tell from a dropped connection (a replay announces its
/// own), and without chunk lines each write is the events' own bytes. Everything the body
/// has ready goes out in one write, and a lone piece (the live case: one event) is written
/// from its shared bytes, without a copy or a buffer. The body is polled with the
/// task's own waker only: once it has answered "nothing ready" in a poll, it is not polled
/// again until the task is woken, so a live event costs one poll that takes it and one that
/// finds nothing more. Meanwhile the socket is read, to notice the client closing (anything
/// it sends after the request is dropped: the connection closes after this answer).
pub(super) struct Pump<'a, I> {
    io: &'a mut I,
    frames: axum::body::BodyDataStream,
    /// Bytes to write before `lone`: the response head, or several pieces packed.
    out: Vec<u8>,
    /// A piece taken alone, written from its own bytes.
    lone: Option<Bytes>,
    /// Bytes of the current write already written.
    done: usize,
    state: PumpState,
    ended: bool,
    /// Bytes the client sent after its request, read and dropped.
    discarded: usize,
}

impl<'a, I: AsyncWrite + Unpin> Pump<'a, I> {
    /// Writes `head`, then `body` as it comes, until it ends or the client goes away.
    pub(super) fn new(io: &'a mut I, body: Body, head: Vec<u8>) -> Self {
        Pump {
            io,
            frames: body.into_data_stream(),
            out: head,
            lone: None,
            done: 0,
            state: PumpState::Gather,
            ended: false,
            discarded: 0,
        }
    }

    /// Takes one piece of body into the next write.
    fn take(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        if self.out.is_empty() && self.lone.is_none() {
            self.lone = Some(data);
            return;
        }
        // Behind bytes already buffered (the response head, other pieces) it joins them.
        if let Some(first) = self.lone.take() {
            self.out.extend_from_slice(&first);
        }
        self.out.extend_from_slice(&data);
    }

    /// Bytes taken and not yet written. The batch counts the lone piece too: a stuck
    /// reader's connection holds at most one batch (or one piece larger than a batch) beyond
    /// what its cursor holds.
    fn taken(&self) -> usize {
        self.out.len() + self.lone.as_ref().map_or(0, Bytes::len)
    }

    /// Sets up the write of everything taken.
    fn start_write(&mut self) {
        self.done = 0;
        self.state = PumpState::Write;
    }

    /// Writes what [`Pump::start_write`] set up, resuming after partial writes: one vectored
    /// write when the socket takes it all. (Resumed by hand rather than through
    /// `write_all_buf` over a chain of buffers: that one prepares 64 slices per write, and
    /// measured about 8 % more CPU per SSE delivery.)
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let out = &self.out[..];
        let lone: &[u8] = self.lone.as_deref().unwrap_or_default();
        while self.done < out.len() + lone.len() {
            let io = Pin::new(&mut *self.io);
            let wrote = if self.done < out.len() {
                let slices = [io::IoSlice::new(&out[self.done..]), io::IoSlice::new(lone)];
                std::task::ready!(io.poll_write_vectored(cx, &slices))?
            } else {
                let rest = io::IoSlice::new(&lone[self.done - out.len()..]);
                std::task::ready!(io.poll_write_vectored(cx, &[rest]))?
            };
            if wrote == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.done += wrote;
        }
        // No buffer is kept while the stream waits.
        self.out = Vec::new();
        self.lone = None;
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> std::future::Future for Pump<'_, I> {
    type Output = io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // The body answered "nothing ready" in this very poll: its waker is set, and polling
        // it again before the task is woken would find nothing.
        let mut armed = false;
        loop {
            match this.state {
                PumpState::Write => {
                    std::task::ready!(this.poll_write(cx))?;
                    this.state = PumpState::Flush;
                }
                PumpState::Flush => {
                    std::task::ready!(Pin::new(&mut *this.io).poll_flush(cx))?;
                    if this.ended {
                        return Poll::Ready(Ok(()));
                    }
                    this.state = PumpState::Gather;
                }
                PumpState::Gather => {
                    while !armed && !this.ended && this.taken() < WRITE_BATCH {
                        match this.frames.poll_next_unpin(cx) {
                            Poll::Ready(Some(Ok(data))) => this.take(data),
                            Poll::Ready(Some(Err(e))) => {
                                return Poll::Ready(Err(io::Error::other(e)))
                            }
                            Poll::Ready(None) => this.ended = true,
                            Poll::Pending => armed = true,
                        }
                    }
                    if this.taken() > 0 || this.ended {
                        this.start_write();
                        continue;
                    }
                    // Nothing to write: wait for the body, and notice the client closing.
                    let mut scratch = [0u8; 1024];
                    loop {
                        let mut buf = ReadBuf::new(&mut scratch);
                        match Pin::new(&mut *this.io).poll_read(cx, &mut buf) {
                            Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                                return Poll::Ready(Ok(()))
                            }
                            Poll::Ready(Ok(())) => {
                                this.discarded += buf.filled().len();
                                if this.discarded > MAX_DISCARDED {
                                    tracing::debug!(
                                        "event stream ended: the client kept sending after its request"
                                    );
                                    return Poll::Ready(Ok(()));
                                }
                            }
                            Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                            Poll::Pending => return Poll::Pending,
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A socket that takes at most `max_write` bytes per write, and that has endless bytes
    /// to read when `chatty` (else nothing, ever).
    struct TestSocket {
        written: Vec<u8>,
        max_write: usize,
        chatty: bool,
        read: usize,
    }

    impl TestSocket {
        fn new(max_write: usize, chatty: bool) -> Self {
            TestSocket {
                written: Vec::new(),
                max_write,
                chatty,
                read: 0,
            }
        }
    }

    impl AsyncWrite for TestSocket {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.max_write);
            self.written.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncRead for TestSocket {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if !self.chatty {
                return Poll::Pending;
            }
            let n = buf.remaining();
            buf.initialize_unfilled().fill(b'x');
            buf.advance(n);
            self.read += n;
            Poll::Ready(Ok(()))
        }
    }

    /// What [`Pump`] writes of `chunks`, after `head`, through three-byte writes.
    async fn pumped(head: &[u8], chunks: &[&'static [u8]]) -> Vec<u8> {
        let chunks: Vec<Result<Bytes, io::Error>> =
            chunks.iter().map(|c| Ok(Bytes::from_static(c))).collect();
        let body = Body::from_stream(futures_util::stream::iter(chunks));
        let mut io = TestSocket::new(3, false);
        tokio::time::timeout(
            Duration::from_secs(5),
            Pump::new(&mut io, body, head.to_vec()),
        )
        .await
        .expect("the body ends, so the pump ends")
        .expect("the socket takes every write");
        io.written
    }

    #[tokio::test]
    async fn a_client_that_keeps_sending_is_let_go() {
        // A stream that never ends and a client that never stops talking.
        let body = Body::from_stream(futures_util::stream::pending::<Result<Bytes, io::Error>>());
        let mut io = TestSocket::new(usize::MAX, true);
        tokio::time::timeout(
            Duration::from_secs(5),
            Pump::new(&mut io, body, b"HEAD\r\n\r\n".to_vec()),
        )
        .await
        .expect("the pump gives up on the client")
        .expect("not an error: the stream just ends");
        assert!(
            io.read > MAX_DISCARDED && io.read <= MAX_DISCARDED + 1024,
            "read {}",
            io.read
        );
    }

    #[tokio::test]
    async fn a_body_is_written_whole_across_partial_writes() {
        // A lone piece, written from its own bytes.
        assert_eq!(pumped(b"", &[&[b'x'; 26]]).await, [b'x'; 26]);
        assert_eq!(pumped(b"", &[b"data: {}\n\n"]).await, b"data: {}\n\n");
        // Behind the head, ready pieces are packed (empty ones are dropped), in order.
        assert_eq!(
            pumped(b"HEAD\r\n\r\n", &[b"ab", b"", b"c"]).await,
            b"HEAD\r\n\r\nabc"
        );
        assert_eq!(pumped(b"H", &[b"ab", b"c"]).await, b"Habc");
    }
}
