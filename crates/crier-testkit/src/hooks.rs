//! Webhook receivers on loopback: any router served on a free port, and the common one that
//! records the `webhook-id` of every delivery.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;

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
    crate::embed_checks::paced_webhook_ids(status, || Duration::ZERO).await
}
