//! §12.8 with the real binary: one process per data directory (a second `crier serve` on the
//! same directory refuses to start, naming the directory and the process that holds it, and
//! the first keeps publishing), and `/readyz` that says 503 while the data directory cannot
//! be written and turns ready again by itself once it can.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crier_testkit::embed_checks::{poll, run_ok, says, types};
use crier_testkit::process::{free_port, serve_cmd, Proc};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(15);

/// `crier serve` over a data directory, its stderr as given.
fn serve(dir: &Path, port: u16, stderr: Stdio) -> Child {
    let mut cmd = serve_cmd(env!("CARGO_BIN_EXE_crier"), dir, port);
    cmd.stderr(stderr);
    cmd.spawn().expect("spawn crier")
}

struct Hub(Proc);

impl Hub {
    async fn start(dir: &Path) -> Hub {
        let port = free_port();
        let mut hub = Hub(Proc {
            child: serve(dir, port, Stdio::null()),
            port,
        });
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(!hub.0.exited(), "the hub exited");
            if hub.get("/readyz").await.0 == 200 {
                return hub;
            }
            assert!(Instant::now() < deadline, "the hub did not become ready");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// A hub over a fresh data directory that has published an event of type `kind`.
    async fn start_publishing(kind: &str) -> (tempfile::TempDir, Hub) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let hub = Hub::start(tmp.path()).await;
        assert_eq!(hub.publish(kind).await.0, 201);
        (tmp, hub)
    }

    fn url(&self, path: &str) -> String {
        self.0.url(path)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        match reqwest::get(self.url(path)).await {
            Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or(Value::Null)),
            Err(_) => (0, Value::Null),
        }
    }

    async fn publish(&self, kind: &str) -> (u16, Value) {
        self.0.post("/v1/events", &json!({"type": kind})).await
    }

    /// Polls `/readyz` until it answers `status`; returns its body.
    async fn readyz_becomes(&self, status: u16) -> Value {
        poll(WAIT, Duration::from_millis(50), || async {
            match self.get("/readyz").await {
                (s, body) if s == status => Ok(body),
                (s, body) => Err(format!("/readyz stayed {s} ({body}), expected {status}")),
            }
        })
        .await
    }
}

#[tokio::test]
async fn a_second_hub_on_the_same_directory_refuses_and_the_first_keeps_publishing() {
    let (tmp, first) = Hub::start_publishing("before.second").await;
    let dir = tmp.path();

    let mut second = serve(dir, free_port(), Stdio::piped());
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = second.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            panic!("a second hub on the same data directory kept running");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let out = second.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success(), "the second hub must fail: {stderr}");
    assert!(
        stderr.contains(&dir.display().to_string()),
        "the refusal names the directory: {stderr}"
    );
    assert!(
        stderr.contains(&format!("pid {}", first.0.child.id())),
        "the refusal names the process holding it: {stderr}"
    );

    // The first hub is unaffected: it publishes, it is ready, its log holds both events.
    let (s, v) = first.publish("after.second").await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(first.readyz_becomes(200).await["store"], "ok");
    let (s, history) = first.get("/v1/events").await;
    assert_eq!(s, 200);
    assert_eq!(types(&history), ["before.second", "after.second"]);

    // `crier keys` works beside the running hub.
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_crier"))
            .args(["keys", "list", "--data-dir"])
            .arg(dir),
        "crier keys list",
    );

    // Once the first hub is gone, the directory is free again.
    drop(first);
    let again = Hub::start(dir).await;
    assert_eq!(again.publish("after.restart").await.0, 201);
}

/// Makes a directory unwritable even for root: the immutable attribute where the file system
/// and the process's capabilities allow it (nothing can be created in it then); otherwise a
/// directory where the probe writes its file (creating that file fails for anyone).
/// Undone on drop.
enum Unwritable {
    Immutable(PathBuf),
    ProbeBlocked(PathBuf),
}

impl Unwritable {
    fn make(dir: &Path) -> Unwritable {
        let chattr = Command::new("chattr").arg("+i").arg(dir).output();
        if matches!(&chattr, Ok(o) if o.status.success()) {
            return Unwritable::Immutable(dir.to_path_buf());
        }
        eprintln!("NOTICE: chattr +i is not available here; blocking the probe's file instead");
        let blocked = dir.join(crier_server::datadir::PROBE_FILE);
        std::fs::create_dir(&blocked).expect("create a directory where the probe writes");
        Unwritable::ProbeBlocked(blocked)
    }
}

impl Drop for Unwritable {
    fn drop(&mut self) {
        match self {
            Unwritable::Immutable(d) => {
                let _ = Command::new("chattr").arg("-i").arg(&*d).status();
            }
            Unwritable::ProbeBlocked(p) => {
                let _ = std::fs::remove_dir(&*p);
            }
        }
    }
}

#[tokio::test]
async fn readyz_is_503_while_the_data_directory_cannot_be_written_and_recovers() {
    let (tmp, hub) = Hub::start_publishing("while.writable").await;
    let dir = tmp.path();

    let unwritable = Unwritable::make(dir);
    let body = hub.readyz_becomes(503).await;
    assert_eq!(body["status"], "unavailable", "{body}");
    assert_eq!(body["store"], "not_writable", "{body}");
    assert!(says(&body, "reason", "not writable"), "{body}");
    // Liveness is another matter: the process is up.
    assert_eq!(hub.get("/healthz").await.0, 200);

    drop(unwritable);
    let body = hub.readyz_becomes(200).await;
    assert_eq!(body["status"], "ready", "{body}");
    let (s, v) = hub.publish("after.repair").await;
    assert_eq!(s, 201, "{v}");
}
