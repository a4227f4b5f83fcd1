//! Webhook receivers on loopback: any router served on a free port, and the common one that
//! records the `webhook-id` of every delivery, its answer chosen by the delivered event.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

/// Serves `app` on 127.0.0.1 on a free port, in a task; returns its address.
pub async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("receiver") });
    addr
}

/// A receiver at `http://<addr>/hook` answering `status` and recording each delivery's
/// `webhook-id`, in arrival order.
pub async fn webhook_ids(status: StatusCode) -> (Arc<Mutex<Vec<String>>>, String) {
    recording(move |_| async move { status }).await
}

/// A receiver at `http://<addr>/hook` whose `answer` to each delivery's JSON body (Null when
/// it is not JSON) gives the status; once it has, the delivery's `webhook-id` is recorded, in
/// arrival order.
pub async fn recording<F, A>(answer: F) -> (Arc<Mutex<Vec<String>>>, String)
where
    F: Fn(Value) -> A + Clone + Send + Sync + 'static,
    A: Future<Output = StatusCode> + Send + 'static,
{
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let (g, answer) = (g.clone(), answer.clone());
            async move {
                let status = answer(serde_json::from_slice(&body).unwrap_or(Value::Null)).await;
                g.lock()
                    .expect("lock")
                    .push(crate::embed_checks::webhook_id(&headers));
                status
            }
        }),
    );
    let addr = serve(app).await;
    (got, format!("http://{addr}/hook"))
}
