//! When does a connection's credential end, and does it still hold (§12.1).
//!
//! Every open connection — an SSE stream, `/v1/ws`, the GraphQL WebSocket, a replay stream —
//! holds a [`Lifetime`] and selects on [`Lifetime::ended`] next to whatever else it waits for.
//! It fires at the token's `exp` and, for an API key, at the first re-check (one per
//! `heartbeat`) that finds the key revoked. The re-check runs on its own interval, never on a
//! timer that traffic resets, so a stream full of events is checked as often as an idle one;
//! and the store lookup it starts is kept across polls, so a busy `select!` that drops the
//! `ended()` future each time an event is ready cannot starve it. Operations on an open
//! socket (a publish, a query) call [`check`] first, which is exact: a credential that ended a
//! moment ago serves nothing more.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crier_core::Principal;
use tokio::time::{Instant, Interval, MissedTickBehavior, Sleep};

use crate::state::AppState;
use crate::transport::expiry::{expiry_instant, unix_now};

/// Why a credential ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The token's `exp` passed.
    Expired,
    /// The API key was revoked (or can no longer be found).
    Revoked,
}

impl Ended {
    /// A sentence for the client.
    pub fn message(self) -> &'static str {
        match self {
            Ended::Expired => "the credential expired; reconnect with a fresh one",
            Ended::Revoked => "the API key was revoked",
        }
    }

    /// The SSE comment that ends a stream (clients match `credential expired|revoked` to
    /// reconnect at once with a fresh credential).
    pub fn sse_comment(self) -> &'static [u8] {
        match self {
            Ended::Expired => b": credential expired\n\n",
            Ended::Revoked => b": credential revoked\n\n",
        }
    }

    /// The error code for the client.
    pub fn code(self) -> &'static str {
        match self {
            Ended::Expired => "credential_expired",
            Ended::Revoked => "credential_revoked",
        }
    }
}

/// Whether `p` still holds right now: its `exp` is in the future and, for an API key, the
/// key exists and is not revoked. One store lookup for an API key, none for a JWT.
pub async fn check(state: &AppState, p: &Principal) -> Result<(), Ended> {
    if p.expires_at.is_some_and(|exp| exp as f64 <= unix_now()) {
        return Err(Ended::Expired);
    }
    match &p.key_hash {
        None => Ok(()),
        Some(h) => match state.keys.find(h).await {
            Ok(Some(k)) if k.revoked_us.is_none() => Ok(()),
            Ok(_) => Err(Ended::Revoked),
            Err(e) => {
                // A store that cannot answer cannot vouch for the key either.
                tracing::warn!(error = %e, "cannot re-check an API key; ending its connection");
                Err(Ended::Revoked)
            }
        },
    }
}

type Lookup = Pin<Box<dyn Future<Output = Result<(), Ended>> + Send>>;

/// The life of one connection's credential. See the module documentation.
///
/// What cannot end costs nothing per poll and holds no timer: a credential without `exp`
/// (no auth, or an API key) has no deadline, and only an API key is re-checked.
pub struct Lifetime {
    state: AppState,
    principal: Principal,
    deadline: Option<Pin<Box<Sleep>>>,
    recheck: Option<Interval>,
    pending: Option<Lookup>,
}

/// The timer that fires at `p`'s `exp`, if it has one.
fn deadline(p: &Principal) -> Option<Pin<Box<Sleep>>> {
    p.expires_at
        .map(|exp| Box::pin(tokio::time::sleep_until(expiry_instant(Some(exp)))))
}

/// The interval of `p`'s re-checks: one per `heartbeat`, for an API key only.
fn recheck(heartbeat: Duration, p: &Principal) -> Option<Interval> {
    p.key_hash.as_ref()?;
    let every = heartbeat.max(Duration::from_millis(10));
    let mut recheck = tokio::time::interval_at(Instant::now() + every, every);
    recheck.set_missed_tick_behavior(MissedTickBehavior::Delay);
    Some(recheck)
}

impl Lifetime {
    /// Starts watching `p`.
    pub fn new(state: &AppState, p: &Principal) -> Lifetime {
        Lifetime {
            state: state.clone(),
            principal: p.clone(),
            deadline: deadline(p),
            recheck: recheck(state.settings.heartbeat, p),
            pending: None,
        }
    }

    /// Replaces the credential (a WebSocket `auth` refresh); nothing changes when it is the
    /// same one, so a re-check under way is not thrown away.
    pub fn renew(&mut self, p: &Principal) {
        if p.expires_at == self.principal.expires_at
            && p.key_hash == self.principal.key_hash
            && p.subject == self.principal.subject
        {
            return;
        }
        if p.key_hash != self.principal.key_hash {
            self.recheck = recheck(self.state.settings.heartbeat, p);
        }
        self.principal = p.clone();
        self.deadline = deadline(p);
        self.pending = None;
    }

    /// Resolves when the credential has ended. Cancel-safe: dropping the future loses nothing.
    pub async fn ended(&mut self) -> Ended {
        std::future::poll_fn(|cx| self.poll_ended(cx)).await
    }

    fn poll_ended(&mut self, cx: &mut Context<'_>) -> Poll<Ended> {
        if let Some(d) = self.deadline.as_mut() {
            if d.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ended::Expired);
            }
        }
        loop {
            if let Some(lookup) = self.pending.as_mut() {
                match lookup.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return Poll::Ready(e),
                    Poll::Ready(Ok(())) => self.pending = None,
                }
            }
            // Without an API key (a JWT cannot be revoked) only the deadline ends it.
            let Some(recheck) = self.recheck.as_mut() else {
                return Poll::Pending;
            };
            if recheck.poll_tick(cx).is_pending() {
                return Poll::Pending;
            }
            let (state, p) = (self.state.clone(), self.principal.clone());
            self.pending = Some(Box::pin(async move { check(&state, &p).await }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Open connections are many and mostly idle: one whose credential cannot end holds no
    /// timer, and only an API key is re-checked.
    #[tokio::test]
    async fn only_what_can_end_holds_a_timer() {
        let every = Duration::from_secs(15);
        let anonymous = Principal::anonymous_admin();
        assert!(deadline(&anonymous).is_none());
        assert!(recheck(every, &anonymous).is_none());

        let jwt = Principal {
            expires_at: Some(unix_now() as u64 + 60),
            ..Principal::anonymous_admin()
        };
        assert!(deadline(&jwt).is_some());
        assert!(recheck(every, &jwt).is_none(), "a JWT cannot be revoked");

        let key = Principal {
            key_hash: Some("hash".into()),
            ..Principal::anonymous_admin()
        };
        assert!(deadline(&key).is_none());
        assert!(recheck(every, &key).is_some());
    }
}
