//! The command line against a real hub: publish (one and NDJSON batches), tail, replay,
//! subs, token and keys, and configuration errors that name their key.

use std::io::{BufRead, BufReader, Lines};
use std::process::{Child, ChildStdout, Command, Stdio};
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
    assert!(ok(&out).contains("seq 1"));
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
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("published 250 events"));

    // tail: the last 2 bulk events, then a live one.
    let (mut tail, mut lines) = tail(&["--type", "bulk.*", "--last", "2"], &hub.url);
    let first = next_json(&mut lines);
    assert_eq!(first["seq"], 250);
    let second = next_json(&mut lines);
    assert_eq!(second["seq"], 251);
    assert!(crier(&["publish", "bulk.live"], &hub.url).status.success());
    let live = next_json(&mut lines);
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
    let text = ok(&out);
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
    let created: serde_json::Value = serde_json::from_str(&ok(&out)).expect("json");
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

/// The lines a `crier tail ... --json` writes.
type TailLines = Lines<BufReader<ChildStdout>>;

/// `crier tail ARGS --json` against `url`: the process and its stdout.
fn tail(args: &[&str], url: &str) -> (Child, TailLines) {
    let mut tail = Command::new(BIN)
        .arg("tail")
        .args(args)
        .arg("--json")
        .env("CRIER_URL", url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tail");
    let lines = BufReader::new(tail.stdout.take().expect("stdout")).lines();
    (tail, lines)
}

/// The next event a `--json` tail writes.
fn next_json(lines: &mut TailLines) -> serde_json::Value {
    serde_json::from_str(&lines.next().expect("line").expect("read")).expect("json")
}

/// Asserts that the command succeeded (showing its stderr if not); its stdout.
fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts that the command failed (showing its stdout if not); its stderr.
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
    let (mut tail, mut lines) = tail(&["--filter", "prod-errors", "--last", "10"], &hub.url);
    let first = next_json(&mut lines);
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
    let live = next_json(&mut lines);
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
    let token = ok(&out).trim().to_string();
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
    let key = ok(&out).trim().to_string();
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
    ok(&crier(&["publish", "x", "--token", &token], &hub.url));
}

#[test]
fn bad_configuration_names_the_key_and_exits_non_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("crier.toml");
    std::fs::write(&cfg, "[limits]\nmax_batch = 0\n").expect("write");
    let cfg = cfg.to_str().expect("utf8 path");
    let d = dir.path().to_str().expect("utf8 path");
    let err = serve_refused(&["--config", cfg], &[]);
    assert!(err.contains("limits.max_batch"), "{err}");
    let err = serve_refused(&["--listen", "0.0.0.0:7499", "--data-dir", d], &[]);
    assert!(err.contains("listen"));
    let err = serve_refused(&["--data-dir", d], &[("CRIER_HEARTBEAT", "often")]);
    assert!(err.contains("heartbeat"));
}

/// `crier serve ARGS` with `env`, which must exit non-zero: its stderr.
fn serve_refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve").args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    refused(&cmd.output().expect("serve"))
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
