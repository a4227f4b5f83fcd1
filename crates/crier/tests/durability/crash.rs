//! `kill -9` while publishers and entity writers are busy: every acknowledged event and
//! change survives, seqs stay gapless, ids are stored once, and entities, links and their
//! events agree after the restart.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use rand::Rng;
use serde_json::{json, Value};

use crate::Hub;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_never_loses_an_acknowledged_event() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut acked: Vec<(String, u64)> = Vec::new();
    for iteration in 0..10 {
        let hub = Hub::start_alternating(tmp.path(), iteration).await;
        let got: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
        let mut tasks = Vec::new();
        for p in 0..4 {
            let url = hub.url("/v1/events");
            let got = got.clone();
            tasks.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                for n in 0.. {
                    let size = 1 + (n * 7 + p) % 20;
                    let batch: Vec<Value> =
                        (0..size).map(|k| json!({"type": "crash.test", "id": format!("it{iteration}-p{p}-{n}-{k}")})).collect();
                    let Ok(res) = client.post(&url).json(&batch).send().await else { return };
                    if res.status().as_u16() != 201 {
                        return;
                    }
                    let Ok(v) = res.json::<Value>().await else { return };
                    let mut g = got.lock().expect("lock");
                    for r in v["events"].as_array().expect("events") {
                        g.push((r["id"].as_str().expect("id").to_string(), r["seq"].as_u64().expect("seq")));
                    }
                }
            }));
        }
        let dir = hub.kill9_amid(50..400, tasks).await;
        acked.extend(got.lock().expect("lock").drain(..));

        let hub = Hub::start(&dir, &[]).await;
        let stored = hub.history().await;
        let seqs: Vec<u64> = stored.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "iteration {iteration}: seqs are gapless"
        );
        let ids: HashSet<&str> = stored.iter().map(|(_, id)| id.as_str()).collect();
        assert_eq!(
            ids.len(),
            stored.len(),
            "iteration {iteration}: no id stored twice"
        );
        let by_id: std::collections::HashMap<&str, u64> =
            stored.iter().map(|(s, id)| (id.as_str(), *s)).collect();
        for (id, seq) in &acked {
            assert_eq!(
                by_id.get(id.as_str()),
                Some(seq),
                "iteration {iteration}: acknowledged {id} at seq {seq} is stored once, at its seq"
            );
        }
        assert!(
            !acked.is_empty(),
            "publishers got acknowledgements before the kill"
        );
        // Publishing an acknowledged id again is a duplicate with the original seq.
        let (id, seq) = acked[rand::rng().random_range(0..acked.len())].clone();
        let (_, v) = hub.publish(&json!({"type": "crash.test", "id": id})).await;
        assert_eq!(
            v["events"][0],
            json!({"id": id, "seq": seq, "duplicate": true})
        );
        let _ = hub.kill9();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_mutations_keeps_entities_and_their_events_in_agreement() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Acknowledged changes: (seqs from Crier-Seq).
    let mut acked: Vec<u64> = Vec::new();
    let mut acked_changes = 0usize;
    for iteration in 0..6 {
        let hub = Hub::start_alternating(tmp.path(), iteration).await;
        let got: Arc<Mutex<Vec<u64>>> = Arc::default();
        let changes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for w in 0..4u64 {
            let base = hub.url("");
            let got = got.clone();
            let changes = changes.clone();
            tasks.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                for n in 0u64.. {
                    let d = (n * 3 + w) % 8;
                    let g = (n + w) % 3;
                    let (method, path, body) = match (n + w) % 6 {
                        0 | 1 => (reqwest::Method::PUT, format!("/v1/entities/device/d{d}"), Some(json!({"w": w, "n": n, "tag": format!("t{}", n % 4)}))),
                        2 => (reqwest::Method::PATCH, format!("/v1/entities/device/d{d}"), Some(json!({"n": n, "note": if n % 2 == 0 { Value::Null } else { json!("x") }}))),
                        3 => (reqwest::Method::PUT, format!("/v1/entities/group/g{g}"), Some(json!({"n": n}))),
                        4 => (reqwest::Method::PUT, format!("/v1/links/member_of/device/d{d}/group/g{g}"), None),
                        _ => (reqwest::Method::DELETE, format!("/v1/entities/{}", if n % 4 == 0 { format!("group/g{g}") } else { format!("device/d{d}") }), None),
                    };
                    let mut req = client.request(method, format!("{base}{path}"));
                    if let Some(b) = body {
                        req = req.json(&b);
                    }
                    let Ok(res) = req.send().await else { return };
                    let status = res.status().as_u16();
                    if status >= 500 {
                        return;
                    }
                    if (200..300).contains(&status) {
                        let seqs: Vec<u64> = res
                            .headers()
                            .get("crier-seq")
                            .and_then(|v| v.to_str().ok())
                            .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
                            .unwrap_or_default();
                        changes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        got.lock().expect("lock").extend(seqs);
                    }
                }
            }));
        }
        let dir = hub.kill9_amid(100..500, tasks).await;
        acked.extend(got.lock().expect("lock").drain(..));
        acked_changes += changes.load(std::sync::atomic::Ordering::Relaxed);

        let hub = Hub::start(&dir, &[]).await;
        let events = hub.proc.events().await;
        let seqs: HashSet<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
        for s in &acked {
            assert!(
                seqs.contains(s),
                "iteration {iteration}: acknowledged change event {s} is gone"
            );
        }
        // Replay the entity events: the last event of each entity names its stored state,
        // and versions grow by one per event with no gap.
        let mut last: std::collections::HashMap<String, (i64, Value)> = Default::default();
        let mut links: HashSet<(String, String, String)> = HashSet::new();
        for e in &events {
            let d = &e["data"];
            let ty = e["type"].as_str().unwrap_or("");
            if ty == "link.created" || ty == "link.deleted" {
                let k = (
                    d["type"].as_str().unwrap_or("").to_string(),
                    d["source"].as_str().unwrap_or("").to_string(),
                    d["target"].as_str().unwrap_or("").to_string(),
                );
                assert!(
                    if ty == "link.created" {
                        links.insert(k)
                    } else {
                        links.remove(&k)
                    },
                    "iteration {iteration}: {ty} out of step at seq {}",
                    e["seq"]
                );
                continue;
            }
            let key = format!(
                "{}/{}",
                d["kind"].as_str().unwrap_or(""),
                d["id"].as_str().unwrap_or("")
            );
            let version = d["version"].as_i64().expect("version");
            let prev = last.get(&key).map_or(0, |(v, _)| *v);
            assert_eq!(
                version,
                prev + 1,
                "iteration {iteration}: {key} versions in its events"
            );
            let value = if ty.ends_with(".deleted") {
                Value::Null
            } else {
                d["value"].clone()
            };
            last.insert(key, (version, value));
        }
        let client = reqwest::Client::new();
        for (key, (version, value)) in &last {
            let res = client
                .get(hub.url(&format!("/v1/entities/{key}")))
                .send()
                .await
                .expect("get");
            if value.is_null() {
                assert_eq!(
                    res.status(),
                    404,
                    "iteration {iteration}: {key} was deleted by its last event"
                );
            } else {
                assert_eq!(res.status(), 200, "iteration {iteration}: {key}");
                let v: Value = res.json().await.expect("json");
                assert_eq!(
                    v["version"].as_i64(),
                    Some(*version),
                    "iteration {iteration}: {key} version"
                );
                assert_eq!(&v["value"], value, "iteration {iteration}: {key} value");
            }
        }
        for kind in ["device", "group"] {
            let v = hub
                .proc
                .get(&format!("/v1/entities/{kind}?limit=1000"))
                .await;
            for ent in v["entities"].as_array().expect("entities") {
                let key = format!("{kind}/{}", ent["id"].as_str().unwrap_or(""));
                assert!(
                    last.get(&key).is_some_and(|(_, v)| !v.is_null()),
                    "iteration {iteration}: {key} stored without its events"
                );
            }
        }
        let v = hub.proc.get("/v1/links?limit=1000").await;
        let stored: HashSet<(String, String, String)> = v["links"]
            .as_array()
            .expect("links")
            .iter()
            .map(|l| {
                (
                    l["type"].as_str().unwrap_or("").to_string(),
                    l["source"].as_str().unwrap_or("").to_string(),
                    l["target"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        assert_eq!(
            stored, links,
            "iteration {iteration}: links and their events agree"
        );
        drop(hub);
    }
    assert!(
        acked_changes > 50,
        "the writers got changes through ({acked_changes})"
    );
}
