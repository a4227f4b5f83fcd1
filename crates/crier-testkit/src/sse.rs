//! An SSE reader over a response body, framed by the client's own parser
//! (`crier_client::sse`), so the tests read streams the way the client does.

use std::collections::VecDeque;
use std::pin::Pin;

use crier_client::sse::SseParser;
use futures_util::{Stream, StreamExt};
use serde_json::Value;

use crate::WAIT;

/// One SSE message.
#[derive(Debug, Clone)]
pub struct Msg {
    /// The last `id:` the stream set, as a seq (the hub's ids are seqs). As in every SSE
    /// reader, a message without its own `id:` keeps the one before; readers that count
    /// events skip the hub's `crier.*` control messages by their event name.
    pub id: Option<u64>,
    pub event: String,
    pub data: String,
}

impl Msg {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("event JSON")
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

pub struct Sse {
    body: ByteStream,
    parser: SseParser,
    pending: VecDeque<Msg>,
    head: Option<u64>,
}

impl Sse {
    pub fn from_response(res: reqwest::Response) -> Sse {
        Sse::from_stream(res.bytes_stream())
    }

    pub fn from_stream(
        body: impl Stream<Item = reqwest::Result<bytes::Bytes>> + Send + 'static,
    ) -> Sse {
        Sse {
            body: Box::pin(body),
            parser: SseParser::default(),
            pending: VecDeque::new(),
            head: None,
        }
    }

    /// Reads one chunk; false when the stream ended.
    async fn fill(&mut self) -> bool {
        match self.body.next().await {
            Some(Ok(chunk)) => {
                for m in self.parser.feed(&chunk) {
                    self.pending.push_back(Msg {
                        id: m.id.map(|id| id.parse().expect("numeric id")),
                        event: m.event,
                        data: m.data,
                    });
                }
                if let Some(h) = self.parser.take_head() {
                    self.head = Some(h);
                }
                true
            }
            Some(Err(_)) | None => false,
        }
    }

    /// The next message (comments and `retry` are not messages), or None when the stream
    /// ended; no time limit.
    pub async fn next_raw(&mut self) -> Option<Msg> {
        loop {
            if let Some(m) = self.pending.pop_front() {
                return Some(m);
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// The next event or reset within the default wait, or None when the stream ended.
    pub async fn next(&mut self) -> Option<Msg> {
        tokio::time::timeout(WAIT, self.next_raw())
            .await
            .expect("SSE message within the wait")
    }

    /// The head the stream announced in its opening comment.
    pub async fn head(&mut self) -> u64 {
        tokio::time::timeout(WAIT, async {
            while self.head.is_none() {
                assert!(
                    self.fill().await,
                    "the stream ended before its head comment"
                );
            }
        })
        .await
        .expect("head comment within the wait");
        self.head.unwrap_or_default()
    }

    /// Collects `n` event seqs.
    pub async fn seqs(&mut self, n: usize) -> Vec<u64> {
        let mut out = Vec::new();
        while out.len() < n {
            let m = self.next().await.expect("stream open");
            assert_ne!(m.event, "crier.reset", "unexpected reset {}", m.data);
            out.push(m.id.expect("event id"));
        }
        out
    }
}
