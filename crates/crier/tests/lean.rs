//! An embedder that turns default features off gets the SQLite hub alone: neither `crier`
//! nor `crier-server` then depends on the PostgreSQL, NATS or Redis clients. Checked on the
//! real dependency graph (`cargo tree`), against the default graph, which has all three.

use std::path::Path;
use std::process::Command;

const BACKENDS: [&str; 3] = ["tokio-postgres", "async-nats", "redis"];

/// The names of the normal (non-dev, non-build) dependencies of `package`.
fn tree(package: &str, lean: bool) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "tree",
        "--locked",
        "--offline",
        "-p",
        package,
        "-e",
        "normal",
        "--prefix",
        "none",
        "--format",
        "{p}",
    ])
    .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")));
    if lean {
        cmd.arg("--no-default-features");
    }
    let out = cmd.output().expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

#[test]
fn without_default_features_no_backend_client_is_compiled() {
    for package in ["crier", "crier-server"] {
        let full = tree(package, false);
        let lean = tree(package, true);
        for backend in BACKENDS {
            assert!(
                full.iter().any(|p| p == backend),
                "{package} with default features depends on {backend}"
            );
            assert!(
                !lean.iter().any(|p| p == backend),
                "{package} without default features still depends on {backend}"
            );
        }
        assert!(
            lean.iter().any(|p| p == "rusqlite"),
            "the lean {package} keeps SQLite"
        );
    }
}
