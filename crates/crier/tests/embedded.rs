//! `examples/embedded.rs` built and run as a real process: events its mutations publish
//! in-process appear over HTTP, SSE and WebSocket at the nested prefix `/events`, and the
//! dashboard served under that prefix loads in Chromium and shows a live event.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crier_testkit::embed_checks::types;
use crier_testkit::services::skip;
use crier_testkit::Sse;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The example's binary, built by the same cargo into the same target directory.
fn example() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-p", "crier", "--example", "embedded"])
        .current_dir(root())
        .status()
        .expect("run cargo build --example embedded");
    assert!(status.success(), "the example does not build");
    // Where that cargo puts it: the target directory it was told, or the workspace's.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let profile = target.join("debug");
    profile.join("examples").join("embedded")
}

struct App {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> App {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(example())
        .arg("127.0.0.1:0")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the example");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the listening line");
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    App {
        child,
        base,
        _dir: dir,
    }
}

/// Sends a mutation of the example's sites, expects `status`, and gives the seq of the
/// event it published.
async fn seq_of(req: reqwest::RequestBuilder, status: u16) -> u64 {
    let res = req.send().await.expect("send the mutation");
    assert_eq!(res.status(), status);
    let v: Value = res.json().await.expect("json");
    v["seq"].as_u64().expect("seq")
}

/// `GET url`, whatever its status.
async fn get(http: &reqwest::Client, url: String) -> reqwest::Response {
    http.get(url).send().await.expect("GET")
}

/// A WebSocket text frame as JSON (`{}`-like null when it is not).
fn frame_json(m: &Message) -> Value {
    serde_json::from_str(m.to_text().unwrap_or("{}")).unwrap_or_default()
}

/// Reads SSE messages until one carries the event of seq `seq`; returns its data.
async fn sse_event(sse: &mut Sse, seq: u64) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), sse.next_raw())
            .await
            .expect("an SSE frame in time")
            .expect("the stream is open");
        if m.id == Some(seq) {
            return m.json();
        }
    }
}

#[tokio::test]
async fn in_process_events_reach_http_sse_and_websocket_at_the_prefix() {
    let app = start();
    let http = reqwest::Client::new();
    let base = app.base.clone();

    // An open SSE stream and a WebSocket subscription at the nested prefix.
    let res = get(&http, format!("{base}/events/v1/stream?type=site.*")).await;
    assert_eq!(res.status(), 200);
    let mut sse = Sse::from_response(res);
    let ws_url = format!("{}/events/v1/ws", base.replacen("http", "ws", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url)
        .await
        .expect("open the WebSocket");
    ws.send(Message::text(
        json!({"op": "subscribe", "id": "s", "filter": {"type": ["site.*"]}}).to_string(),
    ))
    .await
    .expect("subscribe");
    loop {
        let m = ws.next().await.expect("a frame").expect("frame");
        if frame_json(&m)["op"] == "subscribed" {
            break;
        }
    }

    // Each mutation publishes one event in-process.
    let sites = format!("{base}/sites");
    let created = seq_of(http.post(&sites).json(&json!({"name": "Example"})), 201).await;
    let site = format!("{sites}/1");
    let updated = seq_of(http.put(&site).json(&json!({"name": "Renamed"})), 200).await;
    let deleted = seq_of(http.delete(&site), 200).await;
    assert!(created < updated && updated < deleted);
    let bad = http
        .post(format!("{base}/sites"))
        .json(&json!({"name": ""}))
        .send()
        .await
        .expect("bad create");
    assert_eq!(bad.status(), 400);

    // HTTP history at the prefix.
    let page: Value = get(&http, format!("{base}/events/v1/events?type=site.*"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        types(&page),
        ["site.created", "site.updated", "site.deleted"]
    );
    assert_eq!(
        page["events"][1]["data"],
        json!({"id": 1, "name": "Renamed"})
    );
    assert_eq!(page["events"][0]["subject"], "site/1");

    // SSE, live.
    for (seq, ty) in [
        (created, "site.created"),
        (updated, "site.updated"),
        (deleted, "site.deleted"),
    ] {
        let ev = sse_event(&mut sse, seq).await;
        assert_eq!(ev["type"], ty);
    }

    // WebSocket, live.
    let mut got = Vec::new();
    while got.len() < 3 {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a WebSocket event in time")
            .expect("open")
            .expect("frame");
        let v = frame_json(&m);
        if v["op"] == "event" {
            got.push(v["event"]["seq"].as_u64().expect("seq"));
        }
    }
    assert_eq!(got, [created, updated, deleted]);

    // The dashboard and its assets are served under the prefix, with prefixed asset URLs.
    let html = get(&http, format!("{base}/events"))
        .await
        .text()
        .await
        .expect("html");
    assert!(html.contains("src=\"/events/ui/app.js\""), "{html}");
    // `/events/` leads to the same page (the example redirects it: axum's nest alone
    // would answer 404 there).
    let slash = get(&http, format!("{base}/events/")).await;
    assert_eq!(slash.status(), 200);
    assert_eq!(slash.text().await.expect("html"), html);
    // Unknown paths under the prefix are still JSON 404s, not the page.
    for (path, status) in [
        ("/events/no/such/page", 404),
        ("/events/ui/app.js", 200),
        ("/events/client/crier.js", 200),
        // The modules crier.js imports by relative path.
        ("/events/client/http.js", 200),
        ("/events/client/sse.js", 200),
        ("/events/client/ws.js", 200),
    ] {
        let res = get(&http, format!("{base}{path}")).await;
        assert_eq!(res.status(), status, "{path}");
    }
}

#[test]
fn the_dashboard_under_the_prefix_shows_a_live_event_in_chromium() {
    let chromium = std::env::var("CRIER_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if Command::new("node").arg("--version").output().is_err() {
        return skip("Node.js is not installed");
    }
    if !Path::new(&chromium).exists() {
        return skip(&format!("Chromium is not installed at {chromium}"));
    }
    let e2e = root().join("tests/e2e");
    if !e2e.join("node_modules/playwright-core").exists() {
        let ok = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&e2e)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return skip("the npm packages of tests/e2e could not be installed");
        }
    }
    let app = start();
    let out = Command::new("node")
        .args(["--test", "--test-reporter=spec", "embedded.test.mjs"])
        .current_dir(&e2e)
        .env("EMBEDDED_URL", &app.base)
        .env("CRIER_CHROMIUM", &chromium)
        .stdin(Stdio::null())
        .output()
        .expect("run node");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "embedded.test.mjs failed:\n{text}");
}
