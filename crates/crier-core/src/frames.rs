//! Encode once per transport: the wire frames of a committed event, built by the first
//! reader that sends it and shared (as `Bytes`) by every other reader of the same transport.
//!
//! An SSE message (`id:`, `event:`, `data:` around the stored JSON) is the same for every
//! stream, so it is built once. A WebSocket `event` op names the subscription, so the frame
//! is kept for the first subscription id that asks; readers using another id (rare: clients
//! tend to use the same few ids) build their own. Either way the stored JSON is never
//! re-encoded, and a fan-out to 10,000 readers is one frame, not 10,000 `format!`s.
//!
//! The WebSocket frame is kept as text, checked as UTF-8 once per event. Each socket copies
//! it (its writer copies it again into the socket's buffer anyway): a copy made and freed on
//! one thread costs less than a shared buffer whose reference count every worker thread
//! takes and gives back for every event.

use std::borrow::Cow;
use std::sync::OnceLock;

use bytes::{BufMut, Bytes, BytesMut};

/// The cached frames of one event. Empty until a transport asks.
#[derive(Debug, Clone, Default)]
pub struct Frames {
    sse: OnceLock<Bytes>,
    ws: OnceLock<(Box<str>, Option<Box<str>>)>,
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
    /// that subscription's `{"op":"event","sub":...,"event":`: the cached one when `sub` is
    /// the id it was first built for. `None` when the stored JSON is not UTF-8.
    pub fn ws_text(&self, sub: &str, prefix: &str, json: &[u8]) -> Option<Cow<'_, str>> {
        let build = || {
            let json = std::str::from_utf8(json).ok()?;
            let mut s = String::with_capacity(prefix.len() + json.len() + 1);
            s.push_str(prefix);
            s.push_str(json);
            s.push('}');
            Some(s)
        };
        let (id, frame) = self
            .ws
            .get_or_init(|| (sub.into(), build().map(String::into_boxed_str)));
        if &**id == sub {
            frame.as_deref().map(Cow::Borrowed)
        } else {
            build().map(Cow::Owned)
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
        let w1 = f.ws_text("s1", p1, b"{}").expect("UTF-8");
        let w1b = f.ws_text("s1", p1, b"{}").expect("UTF-8");
        let w2 = f.ws_text("s2", p2, b"{}").expect("UTF-8");
        assert_eq!(w1, r#"{"op":"event","sub":"s1","event":{}}"#);
        assert!(
            matches!((&w1, &w1b), (Cow::Borrowed(a), Cow::Borrowed(b)) if a.as_ptr() == b.as_ptr())
        );
        assert_eq!(w2, r#"{"op":"event","sub":"s2","event":{}}"#);
        assert!(matches!(w2, Cow::Owned(_)), "another id builds its own");
        let bad = Frames::default();
        assert_eq!(bad.ws_text("s1", p1, b"{\"x\":\"\xff\"}"), None);
        let mut z = BytesMut::new();
        decimal(0, &mut z);
        decimal(u64::MAX, &mut z);
        assert_eq!(&z[..], format!("0{}", u64::MAX).as_bytes());
    }
}
