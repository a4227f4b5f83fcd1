//! Encode once per transport: the wire frames of a committed event, built by the first
//! reader that sends it and shared (as `Bytes`) by every other reader of the same transport.
//!
//! An SSE message (`id:`, `event:`, `data:` around the stored JSON) is the same for every
//! stream, so it is built once. A WebSocket `event` op names the subscription, so the frame
//! is kept for the first subscription id that asks; readers using another id (rare: clients
//! tend to use the same few ids) build their own. Either way the stored JSON is never
//! re-encoded, and a fan-out to 10,000 readers is one frame, not 10,000 `format!`s.
//!
//! The WebSocket frame is checked as UTF-8 once per event and kept in the transport's own
//! text type (the server's is a reference-counted buffer), so each socket takes a reference,
//! not a copy: the stream threads' sockets share one frame the way SSE streams share theirs.

use std::any::Any;
use std::sync::OnceLock;

use bytes::{BufMut, Bytes, BytesMut};

/// A WebSocket frame cached for one subscription id, in the transport's own text type
/// (`None` when the stored JSON is not UTF-8).
type WsFrame = (Box<str>, Option<Box<dyn Any + Send + Sync>>);

/// The cached frames of one event. Empty until a transport asks.
#[derive(Default)]
pub struct Frames {
    sse: OnceLock<Bytes>,
    ws: OnceLock<WsFrame>,
}

impl std::fmt::Debug for Frames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frames")
            .field("sse", &self.sse.get().is_some())
            .field("ws", &self.ws.get().map(|(id, _)| id))
            .finish()
    }
}

/// A clone keeps the SSE message and builds its WebSocket frame again on demand (events are
/// shared behind an `Arc`; a copy is made only on purpose).
impl Clone for Frames {
    fn clone(&self) -> Frames {
        Frames {
            sse: self.sse.clone(),
            ws: OnceLock::new(),
        }
    }
}

fn decimal(mut n: u64, out: &mut BytesMut) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&buf[i..]);
}

impl Frames {
    /// The SSE message of the event `json` with `seq` and `kind`, built on first use.
    pub fn sse(&self, seq: u64, kind: &str, json: &[u8]) -> Bytes {
        self.sse
            .get_or_init(|| {
                let mut b = BytesMut::with_capacity(json.len() + kind.len() + 40);
                b.put_slice(b"id: ");
                decimal(seq, &mut b);
                b.put_slice(b"\nevent: ");
                b.put_slice(kind.as_bytes());
                b.put_slice(b"\ndata: ");
                b.put_slice(json);
                b.put_slice(b"\n\n");
                b.freeze()
            })
            .clone()
    }

    /// The WebSocket text frame `{prefix}{json}}` for subscription `sub`, where `prefix` is
    /// that subscription's `{"op":"event","sub":...,"event":`, as the transport's text type
    /// `T` (made by `wrap` from the frame's text). The cached frame, cloned, when `sub` is the
    /// id it was first built for; a fresh one for another id (rare: clients tend to use the
    /// same few ids) or another `T`. `None` when the stored JSON is not UTF-8.
    pub fn ws_text<T>(
        &self,
        sub: &str,
        prefix: &str,
        json: &[u8],
        wrap: impl Fn(String) -> T,
    ) -> Option<T>
    where
        T: Clone + Send + Sync + 'static,
    {
        let build = || {
            let json = std::str::from_utf8(json).ok()?;
            let mut s = String::with_capacity(prefix.len() + json.len() + 1);
            s.push_str(prefix);
            s.push_str(json);
            s.push('}');
            Some(wrap(s))
        };
        let (id, frame) = self.ws.get_or_init(|| {
            let frame = build().map(|t| Box::new(t) as Box<dyn Any + Send + Sync>);
            (sub.into(), frame)
        });
        if &**id != sub {
            return build();
        }
        match frame.as_deref()?.downcast_ref::<T>() {
            Some(t) => Some(t.clone()),
            None => build(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_built_once_and_shared() {
        let f = Frames::default();
        let a = f.sse(120, "site.created", br#"{"seq":120}"#);
        let b = f.sse(120, "site.created", br#"{"seq":120}"#);
        assert_eq!(
            &a[..],
            b"id: 120\nevent: site.created\ndata: {\"seq\":120}\n\n"
        );
        assert_eq!(
            a.as_ptr(),
            b.as_ptr(),
            "the second reader shares the first's bytes"
        );
        let p1 = r#"{"op":"event","sub":"s1","event":"#;
        let p2 = r#"{"op":"event","sub":"s2","event":"#;
        let shared = |s: String| Bytes::from(s.into_bytes());
        let w1 = f.ws_text("s1", p1, b"{}", shared).expect("UTF-8");
        let w1b = f.ws_text("s1", p1, b"{}", shared).expect("UTF-8");
        let w2 = f.ws_text("s2", p2, b"{}", shared).expect("UTF-8");
        assert_eq!(&w1[..], br#"{"op":"event","sub":"s1","event":{}}"#);
        assert_eq!(w1.as_ptr(), w1b.as_ptr(), "the same id shares one frame");
        assert_eq!(&w2[..], br#"{"op":"event","sub":"s2","event":{}}"#);
        assert_ne!(w1.as_ptr(), w2.as_ptr(), "another id builds its own");
        let text = f.ws_text("s1", p1, b"{}", |s| s).expect("UTF-8");
        assert_eq!(
            text, r#"{"op":"event","sub":"s1","event":{}}"#,
            "another type too"
        );
        let bad = Frames::default();
        assert_eq!(bad.ws_text("s1", p1, b"{\"x\":\"\xff\"}", shared), None);
        let mut z = BytesMut::new();
        decimal(0, &mut z);
        decimal(u64::MAX, &mut z);
        assert_eq!(&z[..], format!("0{}", u64::MAX).as_bytes());
    }
}
