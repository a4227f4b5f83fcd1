//! JSON Merge Patch and the list of changed fields: the two value operations an update
//! needs, kept apart from the rules that use them.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// Applies a JSON Merge Patch (RFC 7396) to `target` (the `json-patch` crate's `merge`).
pub fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// The top-level fields that differ between two values (added, removed or changed), sorted.
pub fn changed_fields(old: &Map<String, Value>, new: &Map<String, Value>) -> Vec<String> {
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .cloned()
        .collect()
}
