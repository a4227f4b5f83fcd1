//! Group-commit plumbing shared by the SQLite and PostgreSQL writers: the requests a writer
//! commits in groups (appends and entity changes), taking a group off the writer's queue,
//! and answering each publisher once its group has committed or failed.
//!
//! How a group is written differs per backend and stays in each backend's `writer.rs`:
//! SQLite gives every request a savepoint of its own, PostgreSQL inserts the whole group with
//! one statement under the head row lock.

use crier_core::entity::{Applied, EntityError, Mutation};
use crier_core::{AppendResult, LogError, NewEvent, Principal};
use tokio::sync::oneshot;

/// Where a writer sends one request's answer.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, LogError>>;

/// Where a writer sends an entity change's answer.
pub(crate) type MutateReply = oneshot::Sender<Result<Applied, EntityError>>;

/// An entity change for the writer: applied in a group commit, with its events.
pub(crate) struct MutateReq {
    pub(crate) mutation: Mutation,
    pub(crate) principal: Principal,
    pub(crate) max_event_bytes: usize,
    pub(crate) reply: MutateReply,
}

/// One request of a commit group.
pub(crate) enum Pending {
    /// Events to append, all or nothing.
    Append {
        batch: Vec<NewEvent>,
        reply: Reply<Vec<AppendResult>>,
    },
    /// An entity change and the events it causes.
    Mutate(Box<MutateReq>),
}

impl Pending {
    /// How many events the request adds to its group (an entity change counts one).
    pub(crate) fn events(&self) -> usize {
        match self {
            Pending::Append { batch, .. } => batch.len(),
            Pending::Mutate(_) => 1,
        }
    }

    /// Answers a request of a group that failed as a whole.
    pub(crate) fn fail(self, msg: &str) {
        let err = || LogError::backend(std::io::Error::other(msg.to_string()));
        match self {
            Pending::Append { reply, .. } => {
                let _ = reply.send(Err(err()));
            }
            Pending::Mutate(m) => {
                let _ = m.reply.send(Err(EntityError::Log(err())));
            }
        }
    }
}

/// The answer of one request, sent after the group commits.
pub(crate) enum Answer {
    Append(
        Reply<Vec<AppendResult>>,
        Result<Vec<AppendResult>, LogError>,
    ),
    Mutate(MutateReply, Result<Applied, EntityError>),
}

impl Answer {
    /// Sends the answer.
    pub(crate) fn send(self) {
        match self {
            Answer::Append(reply, r) => {
                let _ = reply.send(r);
            }
            Answer::Mutate(reply, r) => {
                let _ = reply.send(r);
            }
        }
    }

    /// Replaces a success with a failure of the whole group (nothing was committed).
    pub(crate) fn fail(self, msg: &str) {
        let err = || LogError::backend(std::io::Error::other(msg.to_string()));
        match self {
            Answer::Append(reply, _) => {
                let _ = reply.send(Err(err()));
            }
            Answer::Mutate(reply, _) => {
                let _ = reply.send(Err(EntityError::Log(err())));
            }
        }
    }
}

/// Takes a group off the queue: `first`, then what `next` yields without waiting, until
/// the group holds `max` events or more, or `next` has nothing. Returns the group and its
/// number of events.
pub(crate) fn gather(
    first: Pending,
    max: usize,
    mut next: impl FnMut() -> Option<Pending>,
) -> (Vec<Pending>, usize) {
    let mut n = first.events();
    let mut group = vec![first];
    while n < max {
        match next() {
            Some(p) => {
                n += p.events();
                group.push(p);
            }
            None => break,
        }
    }
    (group, n)
}
