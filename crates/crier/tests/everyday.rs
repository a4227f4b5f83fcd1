//! Everyday use of the binary: `config check` and `config defaults`, errors that name the
//! key path and file and say each cause once, warnings for unknown `CRIER_*` variables,
//! `localhost` listen addresses, plain logs on a pipe, `tail` reporting reconnects and
//! refusals, `NO_COLOR`, relative times, aligned tables, publish line numbers, and client
//! commands that leave no data directory behind.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crier_testkit::process::{free_port, run_with_stdin, Proc};

const BIN: &str = env!("CARGO_BIN_EXE_crier");
const SECRET: &str = "everyday-test-secret-of-32-characters!";
const WAIT: Duration = Duration::from_secs(20);

fn crier(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(cwd);
    for k in ["CRIER_URL", "CRIER_TOKEN", "NO_COLOR"] {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run crier")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Lines of a child's pipe, read on a thread so that waiting can time out.
fn lines_of(r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Reads to the end even when nobody listens any more, so the child never writes
        // into a closed pipe.
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { return };
            let _ = tx.send(line);
        }
    });
    rx
}

/// Waits for a line containing `want`; returns it with every line seen before it.
fn wait_for(rx: &mpsc::Receiver<String>, want: &str) -> (String, Vec<String>) {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(want) => return (l, seen),
            Ok(l) => seen.push(l),
            Err(_) => panic!("no line with {want:?}; saw {seen:#?}"),
        }
    }
}

/// `crier serve` on `port` over `dir` with stderr piped, once it listens; with the lines it
/// logged until then.
fn serve(
    dir: &Path,
    port: u16,
    env: &[(&str, &str)],
) -> (Proc, mpsc::Receiver<String>, Vec<String>) {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "serve",
        "--listen",
        &format!("localhost:{port}"),
        "--data-dir",
    ])
    .arg(dir)
    .env("CRIER_DURABILITY", "commit")
    .env_remove("NO_COLOR")
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn serve");
    let err = lines_of(child.stderr.take().expect("stderr"));
    let proc = Proc { child, port };
    let (listening, mut startup) = wait_for(&err, "crier is listening");
    startup.push(listening);
    (proc, err, startup)
}

fn publish(url: &str, kind: &str) {
    let out = crier(&["publish", kind, "--url", url], &[], Path::new("."));
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn config_check_names_the_key_path_and_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let cases = [
        (
            "batch.toml",
            "[limits]\nmax_batch = -5\n",
            "`limits.max_batch`",
        ),
        ("beat.toml", "heartbeat = 15\n", "`heartbeat`"),
        ("typo.toml", "[limits]\nmax_bach = 5\n", "`limits.max_bach`"),
        ("listen.toml", "listen = \"nowhere\"\n", "`listen`"),
    ];
    for (name, body, key) in cases {
        std::fs::write(d.join(name), body).expect("write");
        let out = crier(&["config", "check", "--config", name], &[], d);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(key), "{name}: {err}");
        assert!(err.contains(name), "{name} names the file: {err}");
    }
    let out = crier(&["config", "check", "--config", "typo.toml"], &[], d);
    assert!(text(&out.stderr).contains("did you mean `limits.max_batch`"));

    std::fs::write(d.join("broken.toml"), "[limits\nmax_batch = 5\n").expect("write");
    let out = crier(&["config", "check", "--config", "broken.toml"], &[], d);
    let err = text(&out.stderr);
    assert!(err.contains("configuration file broken.toml"), "{err}");
    assert!(err.contains("line 1"), "{err}");
    assert!(!err.contains("configuration key"), "{err}");

    let out = crier(&["config", "check", "--config", "absent.toml"], &[], d);
    let err = text(&out.stderr);
    assert!(err.contains("absent.toml"), "{err}");
    assert_eq!(err.matches("No such file").count(), 1, "said once: {err}");

    // A value from the environment names its variable.
    let out = crier(&["config", "check"], &[("CRIER_LIMITS_MAX_BATCH", "-5")], d);
    let err = text(&out.stderr);
    assert!(
        err.contains("`limits.max_batch`") && err.contains("CRIER_LIMITS_MAX_BATCH"),
        "{err}"
    );
}

#[test]
fn config_defaults_is_a_complete_commented_file_that_checks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = crier(&["config", "defaults"], &[], dir.path());
    assert!(out.status.success());
    let toml = text(&out.stdout);
    let lines: Vec<&str> = toml.lines().collect();
    let mut keys = 0;
    for (i, l) in lines.iter().enumerate() {
        if l.contains(" = ") && !l.starts_with('#') {
            keys += 1;
            assert!(lines[i - 1].starts_with("# "), "{l} has no comment");
        }
    }
    assert!(keys >= 30, "{toml}");
    for key in [
        "max_batch = 1000",
        "[webhooks]",
        "access_log = true",
        "metrics_token = \"\"",
    ] {
        assert!(toml.contains(key), "{key} in {toml}");
    }
    std::fs::write(dir.path().join("d.toml"), &toml).expect("write");
    let out = crier(&["config", "check", "--config", "d.toml"], &[], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("configuration is valid"));
}

#[test]
fn unknown_variables_warn_and_localhost_listens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = crier(
        &["config", "check"],
        &[
            ("CRIER_HEARTBEET", "5s"),
            ("CRIER_URL", "http://127.0.0.1:1"),
            ("CRIER_TOKEN", "x"),
            ("CRIER_LISTEN", "localhost:7400"),
        ],
        dir.path(),
    );
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("CRIER_HEARTBEET") && err.contains("CRIER_HEARTBEAT"),
        "{err}"
    );
    assert!(
        !err.contains("CRIER_URL") && !err.contains("CRIER_TOKEN"),
        "{err}"
    );
    assert!(text(&out.stdout).contains("listen 127.0.0.1:7400"));

    // At start the hub warns too; on a pipe its log has no colour codes, and each request
    // is one access line at info with its id.
    let port = free_port();
    let data = dir.path().join("data");
    let (hub, err, startup) = serve(&data, port, &[("CRIER_LIMITS_MAX_BACH", "5")]);
    let url = format!("http://127.0.0.1:{port}");
    publish(&url, "a.b");
    let (line, before) = wait_for(&err, "request");
    assert!(
        line.contains("INFO") && line.contains("status=201"),
        "{line}"
    );
    assert!(line.contains("request{id="), "{line}");
    let before: Vec<String> = startup.into_iter().chain(before).collect();
    assert!(
        before.iter().any(|l| l.contains("CRIER_LIMITS_MAX_BACH")
            && l.contains("CRIER_LIMITS_MAX_BATCH")
            && l.contains("WARN")),
        "{before:#?}"
    );
    for l in before.iter().chain([&line]) {
        assert!(!l.contains('\x1b'), "no colour on a pipe: {l:?}");
    }
    drop(hub);
}

#[test]
fn each_cause_is_said_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").expect("write");
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let out = crier(
        &["serve", "--listen", &listen, "--data-dir", "not-a-dir/sub"],
        &[],
        dir.path(),
    );
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("not-a-dir"), "{err}");
    let os = err.matches("os error").count();
    assert_eq!(os, 1, "said once: {err}");

    if std::net::TcpStream::connect("127.0.0.1:5432").is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "PostgreSQL is required under CI"
        );
        eprintln!("NOTICE: PostgreSQL unreachable on 127.0.0.1:5432; skipping its error check");
        return;
    }
    let out = crier(
        &[
            "serve",
            "--listen",
            &listen,
            "--store",
            "postgres://crier_no_such_role@127.0.0.1:5432/crier_no_such_db",
        ],
        &[],
        dir.path(),
    );
    let err = text(&out.stderr);
    assert!(!out.status.success());
    let parts: Vec<&str> = err.trim().split(": ").collect();
    for (i, p) in parts.iter().enumerate() {
        assert!(!parts[i + 1..].contains(p), "{p:?} is said twice: {err}");
    }
    assert!(err.contains("crier_no_such_role"), "{err}");
}

#[test]
fn client_commands_create_no_data_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    for args in [&["keys", "list"][..], &["keys", "revoke", "key_x"]] {
        let out = crier(args, &[], dir.path());
        assert!(!out.status.success(), "{args:?}");
        assert!(
            text(&out.stderr).contains("no hub data"),
            "{}",
            text(&out.stderr)
        );
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("dir").count(),
        0,
        "nothing created"
    );
}

#[test]
fn tail_reports_reconnects_resumes_and_refusals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut child = Command::new(BIN)
        .args(["tail", "--url", &url])
        .env_remove("CRIER_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tail");
    let out = lines_of(child.stdout.take().expect("stdout"));
    let err = lines_of(child.stderr.take().expect("stderr"));
    let _tail = Proc::adopt(child);
    // Nothing listens yet: tail says it is reconnecting.
    let (line, _) = wait_for(&err, "reconnecting in");
    assert!(line.contains("attempt 1"), "{line}");
    let (hub, _, _) = serve(&data, port, &[]);
    wait_for(&err, "reconnected");
    // The reconnect is in place once a published event arrives.
    let deadline = Instant::now() + WAIT;
    loop {
        publish(&url, "first.event");
        if let Ok(l) = out.recv_timeout(Duration::from_millis(500)) {
            assert!(l.contains("first.event"), "{l}");
            break;
        }
        assert!(Instant::now() < deadline, "tail saw no event");
    }
    drop(hub);
    wait_for(&err, "reconnecting in");
    let (hub, _, _) = serve(&data, port, &[]);
    let (line, _) = wait_for(&err, "reconnected");
    assert!(line.contains("resuming after seq"), "{line}");
    drop(hub);

    // A refusal is the hub's message, not its JSON.
    let port = free_port();
    let (_hub, _, _) = serve(&data, port, &[("CRIER_AUTH_JWT_SECRET", SECRET)]);
    let out = crier(
        &["tail", "--url", &format!("http://127.0.0.1:{port}")],
        &[],
        dir.path(),
    );
    let e = text(&out.stderr);
    assert!(!out.status.success());
    assert!(e.contains("a credential is required"), "{e}");
    assert!(!e.contains("{\""), "no raw JSON: {e}");
}

/// Runs `crier tail --last 1` on a pseudo-terminal (through `script`) until it prints
/// the event, and returns what it printed.
fn tail_on_a_terminal(url: &str, no_color: bool) -> String {
    let mut cmd = Command::new("script");
    cmd.args([
        "-qfec",
        &format!("{BIN} tail --last 1 --url {url}"),
        "/dev/null",
    ])
    .env_remove("NO_COLOR")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    if no_color {
        cmd.env("NO_COLOR", "1");
    }
    let mut child = cmd.spawn().expect("script");
    let out = lines_of(child.stdout.take().expect("stdout"));
    let _p = Proc::adopt(child);
    wait_for(&out, "colour.check").0
}

#[test]
fn replay_takes_relative_times_and_colour_follows_no_color() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let (_hub, _, _) = serve(
        &dir.path().join("data"),
        port,
        &[("CRIER_WEBHOOKS_ALLOW_PRIVATE", "true")],
    );
    let out = crier(
        &[
            "publish",
            "colour.check",
            "--severity",
            "error",
            "--url",
            &url,
        ],
        &[],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = crier(
        &["replay", "--since", "15m", "--speed", "max", "--url", &url],
        &[],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("colour.check"));
    assert!(!text(&out.stdout).contains('\x1b'), "no colour on a pipe");
    let out = crier(
        &[
            "replay", "--since", "2h", "--until", "1h", "--speed", "max", "--url", &url,
        ],
        &[],
        dir.path(),
    );
    assert!(
        !text(&out.stdout).contains("colour.check"),
        "the event is newer than 1h ago"
    );

    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("NOTICE: no `script` to make a terminal; skipping the colour check");
    } else {
        assert!(
            tail_on_a_terminal(&url, false).contains("\x1b[31m"),
            "colour on a terminal"
        );
        assert!(
            !tail_on_a_terminal(&url, true).contains('\x1b'),
            "NO_COLOR is honoured"
        );
    }

    // Tables line up whatever the width of their cells.
    for (n, hook) in [
        ("a", "http://127.0.0.1:9/x"),
        ("a-much-longer-name", "http://127.0.0.1:9/y"),
    ] {
        let out = crier(
            &[
                "subs",
                "create",
                "--webhook",
                hook,
                "--name",
                n,
                "--url",
                &url,
            ],
            &[],
            dir.path(),
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let out = crier(&["subs", "list", "--url", &url], &[], dir.path());
    let list = text(&out.stdout);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "{list}");
    let at = |l: &str, w: &str| l.find(w).unwrap_or_else(|| panic!("{w} in {l}"));
    assert_eq!(at(lines[0], "URL"), at(lines[1], "http://"), "{list}");
    assert_eq!(at(lines[1], "http://"), at(lines[2], "http://"), "{list}");
    // CURSOR is right-aligned: the numbers end where the header ends.
    let end = at(lines[0], "CURSOR") + "CURSOR".len();
    for l in &lines[1..] {
        assert_eq!(l.as_bytes()[end - 1], b'1', "{list}");
    }
}

#[test]
fn publish_numbers_refusals_by_input_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let (_hub, _, _) = serve(&dir.path().join("data"), port, &[]);
    for (input, why) in [
        ("{\"type\":\"a.b\"}\n\n{\"type\":\n", "not valid JSON"),
        ("{\"type\":\"a.b\"}\n\n{\"data\":1}\n", "type"),
    ] {
        let mut cmd = Command::new(BIN);
        cmd.args(["publish", "-", "--url", &url]);
        let out = run_with_stdin(cmd, input.as_bytes());
        let err = text(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains("line 3: "), "the third input line: {err}");
        assert!(err.contains(why), "{err}");
        assert!(!err.contains("event 1") && !err.contains("line 2"), "{err}");
    }
    let mut cmd = Command::new(BIN);
    cmd.args(["publish", "-", "--url", &url]);
    let out = run_with_stdin(cmd, bulk_items(50).as_bytes());
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    let rate = err
        .split('(')
        .nth(1)
        .and_then(|r| r.split("/s)").next())
        .unwrap_or("");
    assert!(
        !rate.is_empty() && rate.chars().all(|c| c.is_ascii_digit() || c == ','),
        "a whole rate: {err}"
    );
}

/// `n` NDJSON lines of `bulk.item` events numbered from 0.
fn bulk_items(n: usize) -> String {
    (0..n)
        .map(|i| format!("{{\"type\":\"bulk.item\",\"data\":{{\"i\":{i}}}}}\n"))
        .collect()
}
