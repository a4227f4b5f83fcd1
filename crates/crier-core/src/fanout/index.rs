//! One partition's live registrations, indexed so that an event is tested only against the
//! readers that can want it.
//!
//! A registration is keyed by its type patterns when every one of them is an exact string
//! (`site.created`) or a literal prefix (`site.*`); the credential's narrowing patterns are
//! used instead when the reader's own cannot be indexed. Anything else (`*.deleted`, no type
//! key at all) goes to the fallback list, tested against every event. An event of type `t`
//! looks up `exact[t]`, `prefix[t[..n]]` for each prefix length `n` in use, and the fallback
//! list; a stamp per registration keeps a reader indexed under several keys from being
//! offered the same event twice. The full filter is still tested on every candidate, so the
//! index only ever narrows, never decides.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::mpsc::error::TrySendError;

use super::Reg;
use crate::event::Committed;
use crate::filter::{Pattern, PatternKey};

enum Key {
    Exact(Box<str>),
    Prefix(Box<str>),
    Fallback,
}

struct Slot {
    reg: Reg,
    keys: Vec<Key>,
    /// The seq of the last event this registration was considered for.
    stamp: u64,
}

/// The registrations of one partition (a tenant, or every tenant).
#[derive(Default)]
pub(super) struct Index {
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    by_id: HashMap<u64, usize>,
    exact: HashMap<Box<str>, Vec<usize>>,
    prefix: HashMap<Box<str>, Vec<usize>>,
    /// Prefix lengths in use, with how many keys have each.
    prefix_lens: BTreeMap<usize, usize>,
    fallback: Vec<usize>,
    candidates: Vec<usize>,
    dead: Vec<usize>,
}

/// The patterns a registration can be found by, or `None` when it must be tested always.
fn index_patterns(reg: &Reg) -> Option<&[Pattern]> {
    let indexable = |p: &[Pattern]| {
        !p.is_empty() && p.iter().all(|x| !matches!(x.index_key(), PatternKey::Scan))
    };
    if indexable(&reg.filter.types) {
        return Some(&reg.filter.types);
    }
    match &reg.filter.allowed_types {
        Some(a) if indexable(a) => Some(a),
        _ => None,
    }
}

fn remove_from(map: &mut HashMap<Box<str>, Vec<usize>>, key: &str, slot: usize) -> bool {
    let Some(list) = map.get_mut(key) else {
        return false;
    };
    let Some(i) = list.iter().position(|&s| s == slot) else {
        return false;
    };
    list.swap_remove(i);
    if list.is_empty() {
        map.remove(key);
    }
    true
}

impl Index {
    /// Number of registrations held.
    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(super) fn insert(&mut self, reg: Reg) {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        let mut keys = Vec::new();
        match index_patterns(&reg) {
            Some(pats) => {
                for p in pats {
                    match p.index_key() {
                        PatternKey::Exact(t) => {
                            let list = self.exact.entry(t.into()).or_default();
                            if !list.contains(&slot) {
                                list.push(slot);
                                keys.push(Key::Exact(t.into()));
                            }
                        }
                        PatternKey::Prefix(t) => {
                            let list = self.prefix.entry(t.into()).or_default();
                            if !list.contains(&slot) {
                                list.push(slot);
                                *self.prefix_lens.entry(t.len()).or_default() += 1;
                                keys.push(Key::Prefix(t.into()));
                            }
                        }
                        PatternKey::Scan => {}
                    }
                }
            }
            None => {
                self.fallback.push(slot);
                keys.push(Key::Fallback);
            }
        }
        self.by_id.insert(reg.id, slot);
        self.slots[slot] = Some(Slot {
            reg,
            keys,
            stamp: 0,
        });
    }

    /// Removes a registration by id (nothing if it is already gone).
    pub(super) fn remove(&mut self, id: u64) {
        if let Some(slot) = self.by_id.get(&id).copied() {
            self.remove_slot(slot);
        }
    }

    /// Removes every registration with an id up to `id` (the partition overflowed: these
    /// readers go back to the log).
    pub(super) fn remove_through(&mut self, id: u64) {
        let doomed: Vec<usize> = self
            .by_id
            .iter()
            .filter(|(&r, _)| r <= id)
            .map(|(_, &s)| s)
            .collect();
        for slot in doomed {
            metrics::counter!("crier_queue_fallbacks_total").increment(1);
            self.remove_slot(slot);
        }
    }

    fn remove_slot(&mut self, slot: usize) {
        let Some(s) = self.slots.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.by_id.remove(&s.reg.id);
        for k in s.keys {
            match k {
                Key::Exact(t) => {
                    remove_from(&mut self.exact, &t, slot);
                }
                Key::Prefix(t) => {
                    if remove_from(&mut self.prefix, &t, slot) {
                        if let Some(n) = self.prefix_lens.get_mut(&t.len()) {
                            *n -= 1;
                            if *n == 0 {
                                self.prefix_lens.remove(&t.len());
                            }
                        }
                    }
                }
                Key::Fallback => {
                    if let Some(i) = self.fallback.iter().position(|&x| x == slot) {
                        self.fallback.swap_remove(i);
                    }
                }
            }
        }
        self.free.push(slot);
    }

    /// Offers one committed event to the registrations that match it. A registration whose
    /// queue is full (in events or bytes) is dropped: its cursor drains what it has and goes
    /// back to the log. Returns how many registrations were tested.
    pub(super) fn offer(&mut self, ev: &Arc<Committed>) -> usize {
        let mut cands = std::mem::take(&mut self.candidates);
        cands.clear();
        let kind = ev.kind.as_str();
        if let Some(l) = self.exact.get(kind) {
            cands.extend_from_slice(l);
        }
        for &n in self.prefix_lens.keys() {
            if n > kind.len() {
                break;
            }
            if !kind.is_char_boundary(n) {
                continue;
            }
            if let Some(l) = self.prefix.get(&kind[..n]) {
                cands.extend_from_slice(l);
            }
        }
        cands.extend_from_slice(&self.fallback);
        let mut tested = 0;
        for &slot in &cands {
            let Some(s) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            if s.stamp == ev.seq {
                continue;
            }
            s.stamp = ev.seq;
            tested += 1;
            let r = &s.reg;
            if ev.seq <= r.from || !r.filter.matches(ev) {
                continue;
            }
            let len = ev.json.len();
            if r.bytes.load(Ordering::Acquire) + len > r.max_bytes {
                metrics::counter!("crier_queue_fallbacks_total").increment(1);
                self.dead.push(slot);
                continue;
            }
            r.bytes.fetch_add(len, Ordering::AcqRel);
            match r.tx.try_send(ev.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    metrics::counter!("crier_queue_fallbacks_total").increment(1);
                    self.dead.push(slot);
                }
                Err(TrySendError::Closed(_)) => self.dead.push(slot),
            }
        }
        self.candidates = cands;
        while let Some(slot) = self.dead.pop() {
            self.remove_slot(slot);
        }
        tested
    }
}
