//! A Server-Sent Events parser (WHATWG field rules:
//! `id`, `event`, `data` lines, comments, a blank line dispatches; a line ends with CRLF, LF
//! or a bare CR, even when the CR and LF of a CRLF arrive in different chunks).

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
    /// The last line ended with a CR: an LF right after it belongs to that line ending.
    after_cr: bool,
}

impl SseParser {
    /// The head the hub announced at the start of the stream, once.
    pub fn take_head(&mut self) -> Option<u64> {
        self.head.take()
    }

    /// Feeds bytes and returns the messages they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseMessage> {
        // What is buffered holds no line ending: scanning starts at the new bytes.
        let mut i = self.buf.len();
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut start = 0;
        while i < self.buf.len() {
            let b = self.buf[i];
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    i += 1;
                    start = i;
                    continue;
                }
            }
            if b == b'\n' || b == b'\r' {
                let line = String::from_utf8_lossy(&self.buf[start..i]).into_owned();
                self.after_cr = b == b'\r';
                i += 1;
                start = i;
                self.line(line, &mut out);
            } else {
                i += 1;
            }
        }
        self.buf.drain(..start);
        out
    }

    fn line(&mut self, line: String, out: &mut Vec<SseMessage>) {
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                out.push(SseMessage {
                    id: self.id.clone(),
                    event: self.event.take().unwrap_or_else(|| "message".into()),
                    data,
                });
            }
            self.event = None;
            return;
        }
        if let Some(comment) = line.strip_prefix(':') {
            // The hub opens a stream with `: crier head=<seq>`.
            if let Some(h) = comment.trim().strip_prefix("crier head=") {
                self.head = h.trim().parse().ok().or(self.head);
            }
            return;
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

    #[test]
    fn every_line_ending_is_one_line_ending() {
        let msg = |id: &str, data: &str| SseMessage {
            id: Some(id.into()),
            event: "message".into(),
            data: data.into(),
        };
        let stream: &[u8] =
            b"id: 1\rdata: a\rdata: b\r\rid: 2\r\ndata: c\r\n\r\nid: 3\ndata: d\n\n";
        let want = vec![msg("1", "a\nb"), msg("2", "c"), msg("3", "d")];
        let mut p = SseParser::default();
        assert_eq!(p.feed(stream), want);
        // Byte by byte: a CRLF split across chunks is still one line ending, not two.
        let mut p = SseParser::default();
        let got: Vec<_> = stream.iter().flat_map(|b| p.feed(&[*b])).collect();
        assert_eq!(got, want);
        let mut p = SseParser::default();
        assert_eq!(p.feed(b"data: x\r"), vec![]);
        assert_eq!(p.feed(b"\ndata: y\r"), vec![]);
        assert_eq!(
            p.feed(b"\r"),
            vec![SseMessage {
                id: None,
                event: "message".into(),
                data: "x\ny".into()
            }]
        );
    }
}
