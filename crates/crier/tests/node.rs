//! The JavaScript suites, run with Node against this build's `crier` binary: the JS client's
//! tests (`clients/js`), the `graphql-ws` subscription test, the Pusher tests (pusher-js and
//! the `pusher` server SDK, on one node and across a cluster over PostgreSQL with NATS and
//! with Redis) and the dashboard's browser tests in Chromium (`tests/e2e`).
//!
//! Without Node, npm packages, Chromium or the cluster's services these tests print a notice
//! and pass, except under `CI=true`, where a missing tool is a failure. The npm packages of
//! `tests/e2e` are installed from its lock file on first use (`npm ci`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crier_testkit::services::skip;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Node's major version, if Node runs.
fn node_major() -> Option<u32> {
    let out = Command::new("node").arg("--version").output().ok()?;
    let v = String::from_utf8_lossy(&out.stdout);
    v.trim()
        .trim_start_matches('v')
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// The npm packages of tests/e2e, installed once per test binary.
fn e2e_packages() -> bool {
    static LOCK: Mutex<Option<bool>> = Mutex::new(None);
    let mut done = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(ok) = *done {
        return ok;
    }
    let dir = root().join("tests/e2e");
    let ok = dir.join("node_modules/graphql-ws").exists()
        && dir.join("node_modules/playwright-core").exists()
        && dir.join("node_modules/pusher-js").exists()
        && dir.join("node_modules/pusher").exists()
        || {
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&dir)
                .status();
            matches!(status, Ok(s) if s.success())
        };
    *done = Some(ok);
    ok
}

/// Runs `node --test` on `files` in `dir`; fails with the output when a test fails.
fn node_test(dir: &Path, files: &[&str], env: &[(&str, String)]) {
    let Some(major) = node_major() else {
        return skip("Node.js is not installed");
    };
    assert!(
        major >= 20,
        "Node.js {major} is too old; the suites need Node 20 or later"
    );
    let mut cmd = Command::new("node");
    if major < 22 {
        // Node 20 has a WebSocket implementation behind a flag (22 has it by default).
        cmd.arg("--experimental-websocket");
    }
    cmd.arg("--test")
        .arg("--test-reporter=spec")
        .args(files)
        .current_dir(dir)
        .env("CRIER_BIN", env!("CARGO_BIN_EXE_crier"))
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run node");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success(),
        "node --test {files:?} failed:\n{text}"
    );
}

/// Runs the suites `files` of `tests/e2e` with `env`, once its npm packages are installed (a
/// notice and a pass, or a failure under CI, when they cannot be).
fn e2e_test(files: &[&str], env: &[(&str, String)]) {
    if !e2e_packages() {
        return skip("the npm packages of tests/e2e could not be installed");
    }
    node_test(&root().join("tests/e2e"), files, env);
}

#[test]
fn js_client() {
    let dir = root().join("clients/js");
    let mut files: Vec<String> = std::fs::read_dir(dir.join("test"))
        .expect("clients/js/test")
        .filter_map(|e| e.ok())
        .map(|e| format!("test/{}", e.file_name().to_string_lossy()))
        .filter(|f| f.ends_with(".test.js") || f.ends_with(".test.mjs"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the JS client has tests");
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    node_test(&dir, &files, &[]);
}

#[test]
fn graphql_ws_subscription() {
    if node_major().is_none() {
        return skip("Node.js is not installed");
    }
    e2e_test(&["graphql.test.mjs"], &[]);
}

#[test]
fn pusher_js_and_pusher_sdk() {
    if node_major().is_none() {
        return skip("Node.js is not installed");
    }
    e2e_test(&["pusher.test.mjs"], &[]);
}

#[cfg(all(feature = "postgres", feature = "nats", feature = "redis"))]
/// Whether a service answers on 127.0.0.1:`port` (a notice, or a failure under CI, if not).
fn reachable(port: u16, name: &str) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let ok = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)).is_ok();
    if !ok {
        skip(&format!("{name} on 127.0.0.1:{port} is unreachable"));
    }
    ok
}

#[cfg(all(feature = "postgres", feature = "nats", feature = "redis"))]
/// Drops the PostgreSQL schemas starting with `prefix` when dropped.
struct Schemas {
    url: String,
    prefix: String,
}

#[cfg(all(feature = "postgres", feature = "nats", feature = "redis"))]
impl Drop for Schemas {
    fn drop(&mut self) {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let Ok((client, conn)) =
                tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await
            else {
                return;
            };
            tokio::spawn(conn);
            let Ok(rows) = client
                .query(
                    "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)",
                    &[&self.prefix],
                )
                .await
            else {
                return;
            };
            for row in rows {
                let name: String = row.get(0);
                let _ = client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                    .await;
            }
        });
    }
}

#[cfg(all(feature = "postgres", feature = "nats", feature = "redis"))]
#[test]
fn pusher_presence_across_a_cluster() {
    if node_major().is_none() {
        return skip("Node.js is not installed");
    }
    if !reachable(5432, "PostgreSQL") {
        return;
    }
    let mut brokers = Vec::new();
    if reachable(4222, "NATS") {
        brokers.push("nats://127.0.0.1:4222");
    }
    if reachable(6379, "Redis") {
        brokers.push("redis://127.0.0.1:6379");
    }
    if brokers.is_empty() {
        return;
    }
    let url = crier_testkit::services::pg_url();
    let schemas = Schemas {
        url: url.clone(),
        prefix: format!("crier_presence_{}", std::process::id()),
    };
    e2e_test(
        &["pusher-cluster.test.mjs"],
        &[
            ("CRIER_TEST_POSTGRES", url),
            ("PRESENCE_BROKERS", brokers.join(" ")),
            ("PRESENCE_SCHEMA", schemas.prefix.clone()),
        ],
    );
    drop(schemas);
}

#[test]
fn dashboard_in_chromium() {
    if node_major().is_none() {
        return skip("Node.js is not installed");
    }
    let chromium = std::env::var("CRIER_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return skip(&format!("Chromium is not installed at {chromium}"));
    }
    // Kept in the checkout's target/ even when builds go elsewhere (CARGO_TARGET_DIR).
    let shots = root().join("target/screenshots");
    e2e_test(
        &["browser.test.mjs", "browser-pages.test.mjs"],
        &[
            ("CRIER_CHROMIUM", chromium),
            ("SCREENSHOT_DIR", shots.display().to_string()),
        ],
    );
}
