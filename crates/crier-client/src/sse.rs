//! A Server-Sent Events parser (WHATWG field rules:
//! `id`, `event`, `data` lines, comments, a blank line dispatches).

/// One dispatched message.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SseMessage {
    /// `id:` field, if any.
    pub id: Option<String>,
    /// `event:` field, `message` when absent.
    pub event: String,
    /// `data:` lines joined by newlines.
    pub data: String,
}

/// Incremental parser: feed bytes, take complete messages.
#[derive(Default)]
pub struct SseParser {
    buf: Vec<u8>,
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
    head: Option<u64>,
}

impl SseParser {
    /// The head the hub announced at the start of the stream, once.
    pub fn take_head(&mut self) -> Option<u64> {
        self.head.take()
    }

    /// Feeds bytes and returns the messages they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseMessage> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            if line.is_empty() {
                if let Some(data) = self.data.take() {
                    out.push(SseMessage {
                        id: self.id.clone(),
                        event: self.event.take().unwrap_or_else(|| "message".into()),
                        data,
                    });
                }
                self.event = None;
                continue;
            }
            if let Some(comment) = line.strip_prefix(':') {
                // The hub opens a stream with `: crier head=<seq>`.
                if let Some(h) = comment.trim().strip_prefix("crier head=") {
                    self.head = h.trim().parse().ok().or(self.head);
                }
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_str(), ""),
            };
            match field {
                "id" => self.id = Some(value.to_string()),
                "event" => self.event = Some(value.to_string()),
                "data" => match &mut self.data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => self.data = Some(value.to_string()),
                },
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_split_frames() {
        let mut p = SseParser::default();
        assert!(p
            .feed(b"retry: 1000\n: crier head=0\n\nid: 1\nevent: a.b\nda")
            .is_empty());
        let m = p.feed(b"ta: {\"x\":1}\r\n\n: ping\n\n");
        assert_eq!(
            m,
            vec![SseMessage {
                id: Some("1".into()),
                event: "a.b".into(),
                data: "{\"x\":1}".into()
            }]
        );
    }
}
