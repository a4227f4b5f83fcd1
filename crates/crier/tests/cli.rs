//! The command line against a real hub: publish (one and NDJSON batches), tail, replay,
//! subs, token and keys, and configuration errors that name their key.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crier_testkit::process::{free_port, run_with_stdin, serve_cmd, Proc};

const BIN: &str = env!("CARGO_BIN_EXE_crier");
const SECRET: &str = "cli-test-secret-of-at-least-32-characters";

/// `crier serve` and its base URL.
struct Hub {
    _proc: Proc,
    url: String,
}

fn start(dir: &std::path::Path, env: &[(&str, &str)]) -> Hub {
    let port = free_port();
    let mut cmd = serve_cmd(BIN, dir, port);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let proc = Proc::spawn(cmd, port);
    proc.wait_listening(Duration::from_secs(15));
    let url = proc.base();
    Hub { _proc: proc, url }
}

fn crier(args: &[&str], url: &str) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("CRIER_URL", url)
        .env_remove("CRIER_TOKEN")
        .output()
        .expect("run crier")
}

#[test]
fn publish_tail_replay_and_subs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = start(
        dir.path(),
        &[
            ("CRIER_DURABILITY", "commit"),
            ("CRIER_WEBHOOKS_ALLOW_PRIVATE", "true"),
        ],
    );
    let out = crier(
        &[
            "publish",
            "site.created",
            "--subject",
            "site/1",
            "--severity",
            "warning",
            "--tag",
            "prod",
            "--data",
            "{\"n\":1}",
        ],
        &hub.url,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("seq 1"));
    let bad = crier(&["publish", "bad type"], &hub.url);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("type"),
        "the hub's message is shown"
    );

    let mut cmd = Command::new(BIN);
    cmd.args(["publish", "-", "--batch", "100"])
        .env("CRIER_URL", &hub.url);
    let lines: String = (0..250)
        .map(|i| format!("{{\"type\":\"bulk.item\",\"data\":{{\"i\":{i}}}}}\n"))
        .collect();
    let out = run_with_stdin(cmd, lines.as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("published 250 events"));

    // tail: the last 2 bulk events, then a live one.
    let mut tail = Command::new(BIN)
        .args(["tail", "--type", "bulk.*", "--last", "2", "--json"])
        .env("CRIER_URL", &hub.url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tail");
    let mut lines = BufReader::new(tail.stdout.take().expect("stdout")).lines();
    let first: serde_json::Value =
        serde_json::from_str(&lines.next().expect("line").expect("read")).expect("json");
    assert_eq!(first["seq"], 250);
    let second: serde_json::Value =
        serde_json::from_str(&lines.next().expect("line").expect("read")).expect("json");
    assert_eq!(second["seq"], 251);
    assert!(crier(&["publish", "bulk.live"], &hub.url).status.success());
    let live: serde_json::Value =
        serde_json::from_str(&lines.next().expect("line").expect("read")).expect("json");
    assert_eq!(live["type"], "bulk.live");
    let _ = tail.kill();
    let _ = tail.wait();

    let out = crier(
        &[
            "replay",
            "--since",
            "2000-01-01T00:00:00Z",
            "--speed",
            "max",
            "--type",
            "site.*",
            "--json",
        ],
        &hub.url,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1);
    assert!(text.contains("site.created"));

    let out = crier(
        &[
            "subs",
            "create",
            "--webhook",
            "http://127.0.0.1:9/hook",
            "--name",
            "cli",
            "--filter",
            "{\"type\":[\"site.*\"]}",
        ],
        &hub.url,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(created["webhook"]["secret"]
        .as_str()
        .expect("secret")
        .starts_with("whsec_"));
    let id = created["id"].as_str().expect("id");
    let out = crier(&["subs", "list"], &hub.url);
    assert!(String::from_utf8_lossy(&out.stdout).contains(id));
    assert!(crier(&["subs", "deliveries", id], &hub.url)
        .status
        .success());
    assert!(crier(&["subs", "delete", id], &hub.url).status.success());
    assert!(!crier(&["subs", "delete", id], &hub.url).status.success());
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn refused(out: &std::process::Output) -> String {
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn saved_filters_save_list_tail_replay_and_delete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = start(dir.path(), &[("CRIER_DURABILITY", "commit")]);
    let saved = ok(&crier(
        &[
            "filters",
            "save",
            "prod-errors",
            "--severity",
            "error",
            "--tag",
            "prod",
            "--description",
            "Errors in production",
        ],
        &hub.url,
    ));
    let v: serde_json::Value = serde_json::from_str(&saved).expect("json");
    assert_eq!(
        v["filter"],
        serde_json::json!({"severity": "error", "tags": ["prod"]})
    );
    let again = refused(&crier(&["filters", "save", "prod-errors"], &hub.url));
    assert!(again.contains("already has a saved filter"), "{again}");
    let bad = refused(&crier(&["filters", "save", "Prod Errors"], &hub.url));
    assert!(bad.contains("lowercase"), "{bad}");
    let shown: serde_json::Value =
        serde_json::from_str(&ok(&crier(&["filters", "show", "prod-errors"], &hub.url)))
            .expect("json");
    assert_eq!(shown["description"], "Errors in production");
    let list = ok(&crier(&["filters", "list"], &hub.url));
    assert!(
        list.contains("prod-errors") && list.contains("Errors in production"),
        "{list}"
    );

    for args in [
        [
            "publish",
            "deploy.done",
            "--severity",
            "info",
            "--tag",
            "prod",
        ],
        [
            "publish",
            "deploy.failed",
            "--severity",
            "error",
            "--tag",
            "prod",
        ],
        [
            "publish",
            "test.failed",
            "--severity",
            "error",
            "--tag",
            "dev",
        ],
    ] {
        ok(&crier(&args, &hub.url));
    }

    // tail --filter NAME: the matching history, then live.
    let mut tail = Command::new(BIN)
        .args(["tail", "--filter", "prod-errors", "--last", "10", "--json"])
        .env("CRIER_URL", &hub.url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tail");
    let mut lines = BufReader::new(tail.stdout.take().expect("stdout")).lines();
    let first: serde_json::Value =
        serde_json::from_str(&lines.next().expect("line").expect("read")).expect("json");
    assert_eq!(
        (first["seq"].as_u64(), first["type"].as_str()),
        (Some(2), Some("deploy.failed"))
    );
    ok(&crier(
        &[
            "publish",
            "db.down",
            "--severity",
            "critical",
            "--tag",
            "prod",
        ],
        &hub.url,
    ));
    let live: serde_json::Value =
        serde_json::from_str(&lines.next().expect("line").expect("read")).expect("json");
    assert_eq!(live["type"], "db.down");
    let _ = tail.kill();
    let _ = tail.wait();

    let unknown = refused(&crier(&["tail", "--filter", "nope"], &hub.url));
    assert!(unknown.contains("\"nope\""), "{unknown}");
    let both = refused(&crier(
        &["tail", "--filter", "prod-errors", "--type", "x"],
        &hub.url,
    ));
    assert!(
        both.contains("--filter") && both.contains("--type"),
        "{both}"
    );

    // --replace overwrites; replay takes the name too.
    ok(&crier(
        &[
            "filters",
            "save",
            "prod-errors",
            "--type",
            "deploy.*",
            "--replace",
        ],
        &hub.url,
    ));
    let replayed = ok(&crier(
        &[
            "replay",
            "--since",
            "2000-01-01T00:00:00Z",
            "--speed",
            "max",
            "--filter",
            "prod-errors",
            "--json",
        ],
        &hub.url,
    ));
    assert_eq!(replayed.lines().count(), 2, "{replayed}");

    ok(&crier(&["filters", "delete", "prod-errors"], &hub.url));
    let gone = refused(&crier(&["filters", "delete", "prod-errors"], &hub.url));
    assert!(gone.contains("404"), "{gone}");
    assert!(!ok(&crier(&["filters", "list"], &hub.url)).contains("prod-errors"));
}

#[test]
fn token_and_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf8 path");
    let out = Command::new(BIN)
        .args([
            "token",
            "--sub",
            "ann",
            "--tenant",
            "acme",
            "--role",
            "publisher",
            "--ttl",
            "10m",
        ])
        .env("CRIER_AUTH_JWT_SECRET", SECRET)
        .output()
        .expect("token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(token.split('.').count(), 3);
    let out = Command::new(BIN)
        .args(["token", "--sub", "ann"])
        .env_remove("CRIER_AUTH_JWT_SECRET")
        .output()
        .expect("token");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth.jwt_secret"));

    let out = Command::new(BIN)
        .args([
            "keys",
            "create",
            "--tenant",
            "acme",
            "--role",
            "subscriber",
            "--name",
            "reader",
            "--data-dir",
            d,
        ])
        .output()
        .expect("keys create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(key.starts_with("crier_"));
    let hub = start(dir.path(), &[("CRIER_AUTH_JWT_SECRET", SECRET)]);
    let get = |token: &str| {
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                &format!("Authorization: Bearer {token}"),
                &format!("{}/v1/events", hub.url),
            ])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(get(&token), "200");
    assert_eq!(get(&key), "200");
    let out = Command::new(BIN)
        .args(["keys", "list", "--data-dir", d])
        .output()
        .expect("keys list");
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        listing.contains("reader") && !listing.contains(&key),
        "listed without the secret"
    );
    let id = listing
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .expect("key id")
        .to_string();
    assert!(Command::new(BIN)
        .args(["keys", "revoke", &id, "--data-dir", d])
        .status()
        .expect("revoke")
        .success());
    assert_eq!(
        get(&key),
        "401",
        "revocation is immediate, even from another process"
    );
    let out = crier(&["publish", "x", "--token", &token], &hub.url);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_configuration_names_the_key_and_exits_non_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("crier.toml");
    std::fs::write(&cfg, "[limits]\nmax_batch = 0\n").expect("write");
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .expect("serve");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("limits.max_batch"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(BIN)
        .args(["serve", "--listen", "0.0.0.0:7499"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("serve");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen"));
    let out = Command::new(BIN)
        .args(["serve"])
        .env("CRIER_HEARTBEAT", "often")
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("serve");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("heartbeat"));
}

#[test]
fn graphql_schema_prints_the_sdl() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crier"))
        .arg("graphql-schema")
        .output()
        .expect("run crier graphql-schema");
    assert!(out.status.success());
    let sdl = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "scalar JSON",
        "scalar Seq",
        "input EventFilter {",
        "type Event {",
        "seq: Seq!",
        "type Entity {",
        "version: Int!",
        "type Link {",
        "entity(kind: String!, id: String!): Entity",
        "events(filter: EventFilter, after: Seq, limit: Int): [Event!]!",
        "putEntity(kind: String!, id: String!, value: JSON!, ifMatch: Int): Entity!",
        "patchEntity(kind: String!, id: String!, patch: JSON!, ifMatch: Int): Entity!",
        "deleteEntity(kind: String!, id: String!, ifMatch: Int): Boolean!",
        "link(type: String!, source: String!, target: String!, metadata: JSON): Link!",
        "unlink(type: String!, source: String!, target: String!): Boolean!",
        "publish(event: JSON!): Event!",
        "type Subscription {",
        "events(filter: EventFilter, after: Seq): Event!",
    ] {
        assert!(sdl.contains(needle), "the schema lacks {needle:?}:\n{sdl}");
    }
}
