//! Presence signals: how the nodes of a cluster tell each other who is present where.
//!
//! Each node publishes, on the broker's presence topic, the members of its own presence
//! channels: a [`Body::Join`] when a user's first socket on that node joins a channel, a
//! [`Body::Leave`] when its last one leaves, a [`Body::Heartbeat`] on a timer, and its whole
//! state in [`Body::State`] parts when a node asks with [`Body::Sync`]. Every signal carries
//! the sender's node name, its incarnation (random per process start) and a sequence number
//! that grows by one per signal (a heartbeat repeats the last one). A receiver that sees a
//! gap in a sender's sequence — a lost signal, a broker outage — asks that node for its state,
//! so every node's view converges on what each node holds. A node whose heartbeats stop is
//! dead and its members leave.
//!
//! Signals come from other processes: [`Signal::decode`] returns `None` for anything that is
//! not a well-formed signal, and callers ignore it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Most members in one [`Body::State`] part, so a part stays far below broker payload limits.
pub const STATE_PART: usize = 100;

/// One member of a presence channel on the sending node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// The tenant whose channels these are.
    pub tenant: String,
    /// The presence channel.
    pub channel: String,
    /// The Pusher app the user joined through (its webhooks report the user's departure).
    pub app: String,
    /// The user.
    pub user_id: String,
    /// The user's `user_info`.
    #[serde(default)]
    pub user_info: Value,
}

/// What a signal says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Body {
    /// "I am alive; my last signal was `seq`."
    Heartbeat,
    /// A user is now present on the sender.
    Join {
        /// The member.
        member: Member,
    },
    /// A user is no longer present on the sender.
    Leave {
        /// Its tenant.
        tenant: String,
        /// Its channel.
        channel: String,
        /// The user.
        user_id: String,
    },
    /// Asks node `to` (every node when `None`) to publish its whole state.
    Sync {
        /// The node asked.
        #[serde(default)]
        to: Option<String>,
    },
    /// One part of the sender's whole state: `first` starts it, `last` ends it, and the
    /// parts in between follow in sequence.
    State {
        /// Members in this part.
        members: Vec<Member>,
        /// The first part.
        first: bool,
        /// The last part: the sender's state is now exactly the parts received.
        last: bool,
    },
}

/// One presence signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    /// The sending node.
    pub node: String,
    /// The sender's incarnation: a new one means the node restarted with nothing.
    pub inc: u64,
    /// The sender's sequence number.
    pub seq: u64,
    /// What it says.
    #[serde(flatten)]
    pub body: Body,
}

impl Signal {
    /// Wire form: one JSON object.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain strings, numbers and JSON values cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses the wire form; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<Signal> {
        serde_json::from_slice(bytes).ok()
    }
}

/// Splits a node's whole state into [`Body::State`] parts (one empty part when it has none).
pub fn state_parts(members: Vec<Member>) -> Vec<Body> {
    if members.is_empty() {
        return vec![Body::State {
            members,
            first: true,
            last: true,
        }];
    }
    let n = members.len().div_ceil(STATE_PART);
    let mut out = Vec::with_capacity(n);
    let mut rest = members.into_iter();
    for i in 0..n {
        out.push(Body::State {
            members: rest.by_ref().take(STATE_PART).collect(),
            first: i == 0,
            last: i + 1 == n,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(u: &str) -> Member {
        Member {
            tenant: "t".into(),
            channel: "presence-x".into(),
            app: "1".into(),
            user_id: u.into(),
            user_info: serde_json::json!({"name": u}),
        }
    }

    #[test]
    fn signals_round_trip() {
        for body in [
            Body::Heartbeat,
            Body::Join {
                member: member("a"),
            },
            Body::Leave {
                tenant: "t".into(),
                channel: "presence-x".into(),
                user_id: "a".into(),
            },
            Body::Sync { to: None },
            Body::Sync {
                to: Some("n2".into()),
            },
            Body::State {
                members: vec![member("a"), member("b")],
                first: true,
                last: false,
            },
        ] {
            let s = Signal {
                node: "n1".into(),
                inc: 7,
                seq: 3,
                body,
            };
            assert_eq!(Signal::decode(&s.encode()), Some(s));
        }
    }

    #[test]
    fn garbage_is_no_signal() {
        for bad in [
            &b""[..],
            b"null",
            b"{}",
            b"\xff\xfe",
            br#"{"node": "n", "inc": 1, "seq": 1}"#,
            br#"{"node": "n", "inc": 1, "seq": 1, "t": "join"}"#,
            br#"{"node": "n", "inc": -1, "seq": 1, "t": "heartbeat"}"#,
            br#"{"node": 5, "inc": 1, "seq": 1, "t": "heartbeat"}"#,
            br#"{"node": "n", "inc": 1, "seq": 1, "t": "explode"}"#,
            br#"{"node": "n", "inc": 1, "seq": 1, "t": "state", "members": 3, "first": true, "last": true}"#,
        ] {
            assert_eq!(Signal::decode(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn state_is_split_in_parts() {
        assert_eq!(
            state_parts(Vec::new()),
            vec![Body::State {
                members: Vec::new(),
                first: true,
                last: true
            }]
        );
        let all: Vec<Member> = (0..250).map(|i| member(&i.to_string())).collect();
        let parts = state_parts(all.clone());
        assert_eq!(parts.len(), 3);
        let mut joined = Vec::new();
        for (i, p) in parts.into_iter().enumerate() {
            let Body::State {
                members,
                first,
                last,
            } = p
            else {
                panic!("a state part");
            };
            assert_eq!((first, last), (i == 0, i == 2));
            joined.extend(members);
        }
        assert_eq!(joined, all);
    }
}
