//! Tests of the entity rules: plans for every mutation, preconditions, links, limits.

use serde_json::{json, Map, Value};

use super::*;
use crate::event::{NewEvent, PublishContext};
use crate::validate::{ErrorKind, ValidationError};
use crate::Principal;

fn ctx(p: &Principal) -> PublishContext<'_> {
    PublishContext {
        principal: p,
        max_event_bytes: 65536,
        now_us: 1_700_000_000_000_000,
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

fn key() -> EntityKey {
    EntityKey::new("site", "abc").expect("key")
}

fn row(version: i64, value: Option<Value>) -> EntityRow {
    EntityRow {
        key: key(),
        version,
        value: value.map(obj),
        created_us: 1,
        updated_us: 2,
    }
}

fn data(e: &NewEvent) -> Value {
    let mut s = b"{".to_vec();
    s.extend_from_slice(&e.tail);
    let v: Value = serde_json::from_slice(&s).expect("event json");
    v["data"].clone()
}

#[test]
fn merge_patch_follows_rfc_7396_examples() {
    // The examples of RFC 7396, appendix A.
    let cases = [
        (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
        (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
        (json!({"a":"b"}), json!({"a":null}), json!({})),
        (
            json!({"a":"b","b":"c"}),
            json!({"a":null}),
            json!({"b":"c"}),
        ),
        (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
        (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
        (
            json!({"a":{"b":"c"}}),
            json!({"a":{"b":"d","c":null}}),
            json!({"a":{"b":"d"}}),
        ),
        (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
        (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
        (json!({"a":"b"}), json!(["c"]), json!(["c"])),
        (json!({"a":"foo"}), json!(null), json!(null)),
        (json!({"a":"foo"}), json!("bar"), json!("bar")),
        (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
        (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
        (
            json!({}),
            json!({"a":{"bb":{"ccc":null}}}),
            json!({"a":{"bb":{}}}),
        ),
    ];
    for (target, patch, want) in cases {
        let mut t = target.clone();
        merge_patch(&mut t, &patch);
        assert_eq!(t, want, "{target} + {patch}");
    }
}

#[test]
fn put_creates_then_updates_with_changed_fields() {
    let p = Principal::anonymous_admin();
    let create = plan(
        Mutation::Put {
            key: key(),
            value: obj(json!({"name":"NYC","n":1})),
            cond: Precondition::Absent,
        },
        Loaded::default(),
        &ctx(&p),
    )
    .expect("create");
    assert!(
        matches!(create.outcome, Outcome::Entity { created: true, ref row } if row.version == 1)
    );
    assert_eq!(create.events.len(), 1);
    assert_eq!(create.events[0].kind, "site.created");
    assert_eq!(create.events[0].subject.as_deref(), Some("site/abc"));
    assert_eq!(create.events[0].source, SOURCE);
    assert_eq!(
        data(&create.events[0]),
        json!({"kind":"site","id":"abc","version":1,"value":{"name":"NYC","n":1}})
    );

    let update = plan(
        Mutation::Put {
            key: key(),
            value: obj(json!({"name":"NYC","x":true})),
            cond: Precondition::Version(1),
        },
        Loaded {
            entity: Some(row(1, Some(json!({"name":"NYC","n":1})))),
            ..Loaded::default()
        },
        &ctx(&p),
    )
    .expect("update");
    assert_eq!(update.events[0].kind, "site.updated");
    let d = data(&update.events[0]);
    assert_eq!(d["version"], 2);
    assert_eq!(d["previous_version"], 1);
    assert_eq!(d["changed"], json!(["n", "x"]));
}

#[test]
fn an_update_that_changes_nothing_emits_nothing() {
    let p = Principal::anonymous_admin();
    let loaded = || Loaded {
        entity: Some(row(4, Some(json!({"a":1,"b":{"c":2}})))),
        ..Loaded::default()
    };
    let same_put = plan(
        Mutation::Put {
            key: key(),
            value: obj(json!({"b":{"c":2},"a":1})),
            cond: Precondition::None,
        },
        loaded(),
        &ctx(&p),
    )
    .expect("put");
    assert!(same_put.events.is_empty() && same_put.writes.is_empty());
    assert!(matches!(same_put.outcome, Outcome::Entity { ref row, .. } if row.version == 4));
    let same_patch = plan(
        Mutation::Patch {
            key: key(),
            patch: obj(json!({"a":1,"zzz":null})),
            cond: Precondition::None,
        },
        loaded(),
        &ctx(&p),
    )
    .expect("patch");
    assert!(same_patch.events.is_empty() && same_patch.writes.is_empty());
}

#[test]
fn preconditions() {
    let p = Principal::anonymous_admin();
    let put = |cond, entity| {
        plan(
            Mutation::Put {
                key: key(),
                value: obj(json!({"a":2})),
                cond,
            },
            Loaded {
                entity,
                ..Loaded::default()
            },
            &ctx(&p),
        )
    };
    let live = || Some(row(3, Some(json!({"a":1}))));
    let gone = || Some(row(5, None));
    let code = |r: Result<Plan, ValidationError>| r.err().map(|e| e.kind);
    assert_eq!(code(put(Precondition::Version(3), live())), None);
    assert_eq!(
        code(put(Precondition::Version(2), live())),
        Some(ErrorKind::PreconditionFailed)
    );
    assert_eq!(
        code(put(Precondition::Absent, live())),
        Some(ErrorKind::PreconditionFailed)
    );
    assert_eq!(code(put(Precondition::Absent, gone())), None);
    assert_eq!(
        code(put(Precondition::Exists, None)),
        Some(ErrorKind::PreconditionFailed)
    );
    assert_eq!(
        code(put(Precondition::Version(5), gone())),
        Some(ErrorKind::PreconditionFailed)
    );
    // Re-creating over a tombstone continues the version count.
    let again = put(Precondition::Absent, gone()).expect("recreate");
    assert!(
        matches!(again.outcome, Outcome::Entity { ref row, created: true } if row.version == 6)
    );
}

#[test]
fn delete_takes_its_links_with_it() {
    let p = Principal::anonymous_admin();
    let other = EntityKey::new("group", "g1").expect("key");
    let link = |kind: &str, s: &EntityKey, t: &EntityKey| LinkRow {
        key: LinkKey::new(kind, s.clone(), t.clone()).expect("link"),
        metadata: json!({}),
        created_us: 1,
    };
    let plan = plan(
        Mutation::Delete {
            key: key(),
            cond: Precondition::None,
        },
        Loaded {
            entity: Some(row(2, Some(json!({"a":1})))),
            links: vec![
                link("member_of", &key(), &other),
                link("owns", &other, &key()),
            ],
            ..Loaded::default()
        },
        &ctx(&p),
    )
    .expect("delete");
    let kinds: Vec<&str> = plan.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["link.deleted", "link.deleted", "site.deleted"]);
    assert_eq!(
        data(&plan.events[2]),
        json!({"kind":"site","id":"abc","version":3})
    );
    assert_eq!(
        data(&plan.events[1]),
        json!({"type":"owns","source":"group/g1","target":"site/abc","metadata":{}})
    );
    assert_eq!(plan.events[1].subject.as_deref(), Some("group/g1"));
    assert_eq!(plan.writes.len(), 3);
}

#[test]
fn keys_and_cursors_are_checked() {
    assert!(EntityKey::new("site", "a.b:c-d_1").is_ok());
    assert!(EntityKey::new("si.te", "a").is_err());
    assert!(EntityKey::new("site", "a/b").is_err());
    assert!(EntityKey::new("", "a").is_err());
    assert!(EntityKey::new("site", &"x".repeat(129)).is_err());
    assert!(EntityKey::parse("source", "site").is_err());
    let k = LinkKey::new(
        "member_of",
        EntityKey::new("user", "u1").expect("k"),
        EntityKey::new("group", "g.1").expect("k"),
    )
    .expect("link");
    assert_eq!(LinkKey::parse_cursor(&k.cursor()).expect("cursor"), k);
    assert!(LinkKey::parse_cursor("a/b/c").is_err());
}

#[test]
fn value_size_is_limited() {
    let p = Principal::anonymous_admin();
    let c = PublishContext {
        principal: &p,
        max_event_bytes: 1000,
        now_us: 1,
    };
    let r = plan(
        Mutation::Put {
            key: key(),
            value: obj(json!({"big": "x".repeat(2000)})),
            cond: Precondition::None,
        },
        Loaded::default(),
        &c,
    );
    assert_eq!(r.err().map(|e| e.kind), Some(ErrorKind::TooLarge));
}

#[test]
fn publish_narrowing_applies_to_entity_events() {
    let mut p = Principal::anonymous_admin();
    p.publish = Some(vec![crate::Pattern::new("policy.*").expect("pattern")]);
    let r = plan(
        Mutation::Put {
            key: key(),
            value: obj(json!({})),
            cond: Precondition::None,
        },
        Loaded::default(),
        &ctx(&p),
    );
    assert_eq!(r.err().map(|e| e.kind), Some(ErrorKind::Forbidden));
}
