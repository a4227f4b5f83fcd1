//! The real `crier` binary as a child process: `crier serve` on a free port over a data
//! directory, waited for until it answers, killed with -9 or stopped with SIGTERM, and
//! killed when dropped. The binary's path comes from the test (`env!("CARGO_BIN_EXE_crier")`
//! exists only in the binary crate's tests).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Runs `cmd` with `input` on its stdin (its stdout discarded, its stderr kept) and waits.
pub fn run_with_stdin(mut cmd: Command, input: &[u8]) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input).expect("write stdin");
    }
    child.wait_with_output().expect("wait")
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// `crier serve` on 127.0.0.1:`port` over `dir`, logging warnings only, its output
/// discarded (change what a test needs before spawning).
pub fn serve_cmd(bin: &str, dir: &Path, port: u16) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
    ])
    .arg(dir)
    .env("RUST_LOG", "warn")
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    cmd
}

/// A child process on `port`, killed when dropped.
pub struct Proc {
    pub child: Child,
    pub port: u16,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Spawns `cmd`, which listens on `port`.
    pub fn spawn(mut cmd: Command, port: u16) -> Proc {
        Proc {
            child: cmd.spawn().expect("spawn crier"),
            port,
        }
    }

    /// A child that listens on no port of its own (a client command), killed when dropped.
    pub fn adopt(child: Child) -> Proc {
        Proc { child, port: 0 }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Polls `/healthz` until it answers with success: false when the process exits first
    /// or `within` passes.
    pub async fn healthy_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.exited() {
                return false;
            }
            if let Ok(r) = reqwest::get(self.url("/healthz")).await {
                if r.status().is_success() {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    /// Blocks until the port accepts connections; fails after `within`.
    pub fn wait_listening(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "hub did not start");
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// SIGKILL, and waits for the process to go.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and waits up to `within` for the exit status.
    pub fn sigterm(&mut self, within: Duration) -> ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the hub did not stop on SIGTERM");
    }

    /// GET `path` as JSON (Null when nothing answers or the answer is not JSON).
    pub async fn get(&self, path: &str) -> Value {
        match reqwest::get(self.url(path)).await {
            Ok(res) => res.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }

    /// POST `body` as JSON to `path`: the status and the JSON answer (or Null).
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let res = reqwest::Client::new()
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("POST");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Every stored event the anonymous reader sees, whole, in seq order, paging through
    /// history.
    pub async fn events(&self) -> Vec<Value> {
        let mut after = 0;
        let mut out = Vec::new();
        loop {
            let v = self
                .get(&format!("/v1/events?limit=1000&after={after}"))
                .await;
            out.extend(v["events"].as_array().expect("events").iter().cloned());
            match v["next_after"].as_u64() {
                Some(n) => after = n,
                None => return out,
            }
        }
    }

    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("proc status");
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .expect("VmRSS")
    }
}
