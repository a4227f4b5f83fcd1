//! What the fuzz targets share: one real hub state per fuzzing process (SQLite log, keys and
//! subscriptions in a temporary directory, the HS256 secret below), a runtime to drive its
//! async handlers, and the principals the targets speak as.
//!
//! The targets call the hub's own parsing functions, so a crash here is a crash a client
//! could cause. Publish bodies are decoded and validated but not appended, and the
//! WebSocket and GraphQL targets speak as a read-only principal; only the Pusher target
//! stores events (client events and HTTP API triggers), in the Pusher app's own tenant.

use std::sync::{Arc, OnceLock};

use axum::http::{header, HeaderMap, HeaderValue};
use crier_core::{EventLog, Hub, Principal, Role};
use crier_server::{AppState, Config, Settings};
use crier_store::{SqliteFilters, SqliteKeys, SqliteLog, SqliteSubs};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

/// The HS256 secret the hub of the targets accepts.
pub const SECRET: &str = "fuzzing-secret-of-at-least-32-characters";

/// The runtime and the state, built once.
pub struct Fixture {
    /// Drives async handlers.
    pub rt: Runtime,
    /// The hub's state.
    pub state: AppState,
    /// Keeps the data directory for the process's life.
    _dir: std::path::PathBuf,
}

/// The Pusher app of the hub: its id, key and secret (client events allowed).
pub const PUSHER_APP: (&str, &str, &str) = ("4242", "fuzz-key", "fuzz-pusher-secret");

/// The settings of the hub: defaults over `dir`, with the JWT secret and one Pusher app.
pub fn settings(dir: &std::path::Path) -> Settings {
    let (id, key, secret) = PUSHER_APP;
    let apps = format!(
        "[[pusher.apps]]\nid = {id:?}\nkey = {key:?}\nsecret = {secret:?}\ntenant = \"pusher\"\nclient_events = true\n"
    );
    let mut c = match Config::from_toml(&apps) {
        Ok(c) => c,
        Err(e) => panic!("the fuzzing configuration is invalid: {e}"),
    };
    c.data_dir = dir.to_path_buf();
    c.auth.jwt_secret = SECRET.to_string();
    match c.validate() {
        Ok(s) => s,
        Err(e) => panic!("the fuzzing settings are invalid: {e}"),
    }
}

/// The shared fixture.
pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("crier-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let settings = settings(&dir);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        let state = rt.block_on(async {
            let log = crier_server::open_log(&settings).unwrap_or_else(|e| panic!("log: {e}"));
            // As a hub does: the side tables write through the log's writer.
            let keys = SqliteKeys::with_log(&log).unwrap_or_else(|e| panic!("keys: {e}"));
            let subs = SqliteSubs::with_log(&log)
                .await
                .unwrap_or_else(|e| panic!("subs: {e}"));
            let filters = SqliteFilters::with_log(&log)
                .await
                .unwrap_or_else(|e| panic!("filters: {e}"));
            let hub = Hub::new(log.clone());
            log.set_commit_sink(hub.commit_sink());
            let log: Arc<SqliteLog> = log;
            AppState::new(
                settings,
                log.clone(),
                log,
                hub,
                Arc::new(keys),
                Arc::new(subs),
                Arc::new(filters),
                CancellationToken::new(),
            )
        });
        Fixture {
            rt,
            state,
            _dir: dir,
        }
    })
}

/// A principal of tenant `acme` with `role`, narrowed to `public.*` and `site.*` when
/// `narrowed`.
pub fn principal(role: Role, narrowed: bool) -> Principal {
    let pats = || {
        Some(vec![
            crier_core::Pattern::new("public.*").unwrap_or_else(|e| panic!("{e:?}")),
            crier_core::Pattern::new("site.*").unwrap_or_else(|e| panic!("{e:?}")),
        ])
    };
    Principal {
        tenant: "acme".into(),
        role,
        subject: "fuzz@acme".into(),
        subscribe: if narrowed { pats() } else { None },
        publish: if narrowed { pats() } else { None },
        expires_at: None,
        key_hash: None,
    }
}

/// Decodes and validates `body` as a publish of `content_type` by `who`, as the hub does
/// before anything is stored; the outcome (events or a refusal) is dropped.
pub fn decode_publish(who: &Principal, content_type: HeaderValue, body: &[u8]) {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, content_type);
    let _ = crier_server::events::decode_publish(&fixture().state, who, &headers, body);
}
