//! An application that embeds crier (§14.1): a small sites API whose every mutation publishes
//! an event in-process, with the whole hub (HTTP API, SSE, WebSocket, dashboard) nested at
//! `/events`.
//!
//! ```text
//! cargo run -p crier --example embedded -- 127.0.0.1:3000 ./embedded-data
//! curl -X POST localhost:3000/sites -H 'content-type: application/json' -d '{"name":"Example"}'
//! curl -N localhost:3000/events/v1/stream?after=0     # or open localhost:3000/events
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use crier::axum::extract::{Path, State};
use crier::axum::http::StatusCode;
use crier::axum::response::{IntoResponse, Redirect, Response};
use crier::axum::routing::get;
use crier::axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::Mutex;

/// The application's state: its own data and the embedded hub.
#[derive(Clone)]
struct App {
    sites: Arc<Mutex<Sites>>,
    hub: crier::Hub,
}

#[derive(Default)]
struct Sites {
    next_id: u64,
    by_id: BTreeMap<u64, Value>,
}

/// The tenant this single-tenant application publishes to.
const TENANT: &str = "default";

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": {"message": message.into()}}))).into_response()
}

impl App {
    /// Publishes `site.<verb>` for a site; a refused publish is the request's error.
    async fn announce(&self, verb: &str, id: u64, site: &Value) -> Result<crier::Ack, Response> {
        let event = crier::NewEvent::new(format!("site.{verb}"))
            .subject(format!("site/{id}"))
            .source("sites")
            .data(site.clone());
        self.hub.publish(TENANT, event).await.map_err(|e| {
            let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            error(
                status,
                format!("the change was made but not announced: {e}"),
            )
        })
    }
}

/// A site's fields from a request body: `{"name": "..."}`; `None` when it has no valid name.
fn site_body(id: u64, body: &Value) -> Option<Value> {
    match body.get("name").and_then(Value::as_str) {
        Some(name) if !name.trim().is_empty() && name.len() <= 200 => {
            Some(json!({"id": id, "name": name}))
        }
        _ => None,
    }
}

fn bad_site() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "a site needs a `name` of 1 to 200 characters",
    )
}

async fn list(State(app): State<App>) -> Response {
    let sites = app.sites.lock().await;
    Json(json!({"sites": sites.by_id.values().collect::<Vec<_>>()})).into_response()
}

async fn create(State(app): State<App>, Json(body): Json<Value>) -> Response {
    let mut sites = app.sites.lock().await;
    let id = sites.next_id + 1;
    let Some(site) = site_body(id, &body) else {
        return bad_site();
    };
    sites.next_id = id;
    sites.by_id.insert(id, site.clone());
    // Announced while the change is held, so events come out in the order of the changes.
    match app.announce("created", id, &site).await {
        Ok(ack) => (
            StatusCode::CREATED,
            Json(json!({"site": site, "seq": ack.seq})),
        )
            .into_response(),
        Err(r) => r,
    }
}

async fn read(State(app): State<App>, Path(id): Path<u64>) -> Response {
    match app.sites.lock().await.by_id.get(&id) {
        Some(site) => Json(site.clone()).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no site {id}")),
    }
}

async fn update(State(app): State<App>, Path(id): Path<u64>, Json(body): Json<Value>) -> Response {
    let mut sites = app.sites.lock().await;
    if !sites.by_id.contains_key(&id) {
        return error(StatusCode::NOT_FOUND, format!("no site {id}"));
    }
    let Some(site) = site_body(id, &body) else {
        return bad_site();
    };
    sites.by_id.insert(id, site.clone());
    match app.announce("updated", id, &site).await {
        Ok(ack) => Json(json!({"site": site, "seq": ack.seq})).into_response(),
        Err(r) => r,
    }
}

async fn delete(State(app): State<App>, Path(id): Path<u64>) -> Response {
    let mut sites = app.sites.lock().await;
    let Some(site) = sites.by_id.remove(&id) else {
        return error(StatusCode::NOT_FOUND, format!("no site {id}"));
    };
    match app.announce("deleted", id, &site).await {
        Ok(ack) => Json(json!({"deleted": id, "seq": ack.seq})).into_response(),
        Err(r) => r,
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:3000".into());
    let data_dir = args.next().unwrap_or_else(|| "./embedded-data".into());

    // Bound first: the hub's own origin (`public_url`) is this application's, so that the
    // dashboard nested below may publish and open WebSockets (§12.7).
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    let origin = format!("http://{}", listener.local_addr()?);
    let config =
        crier::HubConfig::from_toml(&format!("data_dir = {data_dir:?}\npublic_url = {origin:?}"))?;
    let hub = crier::Hub::open(config).await?;
    let app = App {
        sites: Arc::default(),
        hub: hub.clone(),
    };
    let router = Router::new()
        .route("/sites", get(list).post(create))
        .route("/sites/{id}", get(read).put(update).delete(delete))
        .with_state(app)
        .nest("/events", hub.router())
        // axum's `nest` serves the prefix itself as `/events`, never `/events/`; send a typed
        // or bookmarked trailing slash to the dashboard.
        .route("/events/", get(|| async { Redirect::permanent("/events") }));

    println!("listening on http://{}", listener.local_addr()?);
    let stopping = hub.clone();
    crier::axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            // Ends the hub's streams so that open connections finish, and flushes the log.
            stopping.shutdown().await;
        })
        .await?;
    // Already stopped by the signal handler unless serving failed; this says how it went.
    hub.close().await?;
    Ok(())
}
