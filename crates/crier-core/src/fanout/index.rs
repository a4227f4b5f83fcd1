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
//!
//! Registrations with equal filters share one *group*, and an event is tested once per
//! group, not once per registration: a thousand dashboards watching `site.*` cost one match
//! per event, then a queue push each.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::Reg;
use crate::event::Committed;
use crate::filter::{Filter, Pattern, PatternKey};
use crate::queue::PushError;

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
    /// Its filter's group in [`Index::groups`].
    group: usize,
}

/// The registrations whose filters are equal, and the last event tested against the filter.
struct Group {
    filter: Arc<Filter>,
    members: usize,
    /// The seq of the last event tested, and whether it matched.
    stamp: u64,
    matched: bool,
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
    groups: Vec<Option<Group>>,
    free_groups: Vec<usize>,
    group_of: HashMap<Arc<Filter>, usize>,
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
        let group = self.join_group(&reg.filter);
        self.slots[slot] = Some(Slot {
            reg,
            keys,
            stamp: 0,
            group,
        });
    }

    /// The group of registrations with a filter equal to `filter`, made if there is none.
    fn join_group(&mut self, filter: &Arc<Filter>) -> usize {
        if let Some(&g) = self.group_of.get(filter) {
            if let Some(group) = self.groups.get_mut(g).and_then(Option::as_mut) {
                group.members += 1;
                return g;
            }
        }
        let group = Group {
            filter: filter.clone(),
            members: 1,
            stamp: 0,
            matched: false,
        };
        let g = match self.free_groups.pop() {
            Some(g) => {
                self.groups[g] = Some(group);
                g
            }
            None => {
                self.groups.push(Some(group));
                self.groups.len() - 1
            }
        };
        self.group_of.insert(filter.clone(), g);
        g
    }

    fn leave_group(&mut self, g: usize) {
        let Some(group) = self.groups.get_mut(g).and_then(Option::as_mut) else {
            return;
        };
        group.members -= 1;
        if group.members > 0 {
            return;
        }
        if let Some(group) = self.groups[g].take() {
            self.group_of.remove(&group.filter);
        }
        self.free_groups.push(g);
    }

    /// Number of distinct filters among the registrations.
    #[cfg(test)]
    pub(super) fn groups(&self) -> usize {
        self.group_of.len()
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
        self.leave_group(s.group);
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
    /// back to the log. Returns how many filters were tested.
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
            let r = &s.reg;
            if ev.seq <= r.from {
                continue;
            }
            let Some(group) = self.groups.get_mut(s.group).and_then(Option::as_mut) else {
                continue;
            };
            if group.stamp != ev.seq {
                group.stamp = ev.seq;
                group.matched = group.filter.matches(ev);
                tested += 1;
            }
            if !group.matched {
                continue;
            }
            let len = ev.json.len();
            if r.live.bytes.load(Ordering::Acquire) + len > r.max_bytes {
                metrics::counter!("crier_queue_fallbacks_total").increment(1);
                self.dead.push(slot);
                continue;
            }
            r.live.bytes.fetch_add(len, Ordering::AcqRel);
            match r.live.events.push(ev.clone(), r.cap) {
                Ok(()) => {}
                Err(PushError::Full(_)) => {
                    metrics::counter!("crier_queue_fallbacks_total").increment(1);
                    self.dead.push(slot);
                }
                Err(PushError::Gone(_)) => self.dead.push(slot),
            }
        }
        self.candidates = cands;
        while let Some(slot) = self.dead.pop() {
            self.remove_slot(slot);
        }
        tested
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Severity;
    use crate::fanout::LiveQueue;

    fn ev(seq: u64, kind: &str, severity: Severity) -> Arc<Committed> {
        Arc::new(Committed {
            seq,
            tenant: "t".into(),
            id: format!("e{seq}"),
            time_us: 0,
            kind: kind.into(),
            source: "api".into(),
            category: None,
            severity,
            subject: None,
            tags: Vec::new(),
            json: bytes::Bytes::from_static(b"{}"),
            frames: Default::default(),
        })
    }

    fn reg(id: u64, filter: serde_json::Value) -> (Reg, Arc<LiveQueue>) {
        let live = Arc::new(LiveQueue::default());
        let filter = Filter::from_json(&filter).expect("a valid filter");
        let reg = Reg {
            id,
            from: 0,
            filter: Arc::new(filter),
            live: live.clone(),
            cap: 64,
            max_bytes: 1 << 20,
        };
        (reg, live)
    }

    fn seqs(live: &mut Arc<LiveQueue>) -> Vec<u64> {
        std::iter::from_fn(|| live.took(live.events.try_pop()).map(|e| e.seq)).collect()
    }

    #[test]
    fn equal_filters_are_tested_once_per_event_and_each_reader_gets_its_events() {
        let mut index = Index::default();
        let same = serde_json::json!({"type": ["site.*"], "severity": "warning"});
        let (a, mut ra) = reg(1, same.clone());
        let (b, mut rb) = reg(2, same);
        let (c, mut rc) = reg(3, serde_json::json!({"type": ["site.*"]}));
        let (d, mut rd) = reg(4, serde_json::json!({"type": ["*.deleted"]}));
        for r in [a, b, c, d] {
            index.insert(r);
        }
        assert_eq!(index.groups(), 3, "the two equal filters share a group");

        // site.created: the two `site.*` groups are tested, the fallback one too.
        assert_eq!(index.offer(&ev(1, "site.created", Severity::Error)), 3);
        assert_eq!(index.offer(&ev(2, "site.deleted", Severity::Info)), 3);
        assert_eq!(index.offer(&ev(3, "user.deleted", Severity::Error)), 1);
        assert_eq!(seqs(&mut ra), [1]);
        assert_eq!(seqs(&mut rb), [1]);
        assert_eq!(seqs(&mut rc), [1, 2]);
        assert_eq!(seqs(&mut rd), [2, 3]);

        // A group lives as long as one of its members.
        index.remove(1);
        assert_eq!(index.groups(), 3);
        assert_eq!(index.offer(&ev(4, "site.updated", Severity::Critical)), 3);
        assert_eq!(seqs(&mut ra), Vec::<u64>::new());
        assert_eq!(seqs(&mut rb), [4]);
        index.remove(2);
        assert_eq!(index.groups(), 2);
        // Its slot and group are reused by the next registration.
        let (e, mut re) = reg(5, serde_json::json!({"type": ["site.*"]}));
        index.insert(e);
        assert_eq!(index.groups(), 2);
        index.offer(&ev(5, "site.created", Severity::Info));
        assert_eq!(seqs(&mut rc), [4, 5]);
        assert_eq!(seqs(&mut re), [5]);
    }
}
