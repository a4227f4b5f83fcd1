//! Property tests over untrusted input: whatever a client sends as an event, a CloudEvent or
//! a filter, parsing and validation answer a value or a clear error, never a panic, and
//! what validates always encodes to one line of JSON within the size limit.

use crier_core::{cloudevents, EventInput, Filter, Principal, PublishContext};
use proptest::prelude::*;
use serde_json::{json, Value};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        prop::sample::select(vec![
            "site.created",
            "a..b",
            "",
            "*",
            "info",
            "warning",
            "x\u{0}y",
            "2026-01-01T00:00:00Z"
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "type",
                    "id",
                    "time",
                    "tenant",
                    "source",
                    "category",
                    "severity",
                    "subject",
                    "actor",
                    "tags",
                    "data",
                    "metadata",
                    "seq",
                    "specversion",
                    "other",
                    "tag",
                ])
                .prop_map(String::from),
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn check_event(v: Value) {
    let p = Principal::anonymous_admin();
    let ctx = PublishContext {
        principal: &p,
        max_event_bytes: 4096,
        now_us: 1_700_000_000_000_000,
    };
    if let Ok(input) = serde_json::from_value::<EventInput>(v) {
        if let Ok(ev) = input.validate(&ctx) {
            let json = crier_core::Committed::encode(1, &ev.tail);
            assert!(json.len() <= 4096, "validated events fit the limit");
            assert!(!json.contains(&b'\n'), "the encoded event is one line");
            let back: Value = serde_json::from_slice(&json).expect("the encoding is JSON");
            assert_eq!(back["seq"], 1);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn events_never_panic(v in arb_json()) {
        check_event(v);
    }

    #[test]
    fn event_shaped_objects_never_panic(kind in ".{0,20}", sev in ".{0,10}", tags in prop::collection::vec(".{0,70}", 0..40), subject in ".{0,300}") {
        check_event(json!({"type": kind, "severity": sev, "tags": tags, "subject": subject}));
    }

    #[test]
    fn cloudevents_never_panic(v in arb_json()) {
        if let Ok(input) = cloudevents::to_input(v) {
            let p = Principal::anonymous_admin();
            let _ = input.validate(&PublishContext { principal: &p, max_event_bytes: 4096, now_us: 0 });
        }
    }

    #[test]
    fn filters_never_panic(pairs in prop::collection::vec((prop::sample::select(vec!["type", "category", "source", "subject", "severity", "tag", "x"]), ".{0,30}"), 0..6), v in arb_json()) {
        let _ = Filter::from_query(pairs.iter().map(|(k, v)| (*k, v.as_str())));
        if let Ok(f) = Filter::from_json(&v) {
            // The JSON form round-trips.
            prop_assert_eq!(Filter::from_json(&f.to_json()).expect("round trip"), f);
        }
    }
}
