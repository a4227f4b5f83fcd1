//! Accepting connections so that no client can take the listener away from the others
//! (§12.4).
//!
//! * Every connection must send a complete request head within `header_read_timeout`, the
//!   first one and every one after a keep-alive pause: hyper's HTTP/1 header timer, which
//!   `axum::serve` does not expose, hence this accept loop of our own.
//! * At most `max_connections` are open at once. The count is a semaphore whose permit
//!   travels with the socket itself, so a connection upgraded to a WebSocket still counts
//!   until its socket closes. Beyond it a connection is answered at once from a small
//!   overflow pool: `/healthz` as usual, anything else 503 `too_many_connections`, then
//!   closed; when even that pool is busy the connection is closed unanswered. Open
//!   connections are never disturbed.
//! * At start the soft open-file limit is raised to the hard one, and `max_connections`
//!   defaults to what fits in it after a reserve for the store, outgoing webhooks and cluster
//!   links; an explicit `max_connections` that does not fit stops the start.
//! * With `[tls]`, each connection's handshake runs in its own task while it holds its slot,
//!   bounded by [`crate::tls::HANDSHAKE_TIMEOUT`], so a client that stalls its handshake
//!   delays nobody else and counts against the limit like any other connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Descriptors kept for everything but client connections: the store's files and pool,
/// outgoing webhook connections, cluster links, logs.
pub const RESERVED_FDS: u64 = 256;
/// Connections beyond `max_connections` that may be answered at once (then closed).
pub const OVERFLOW: usize = 64;
/// The most time an overflow connection gets to send its request head.
const OVERFLOW_HEAD_TIMEOUT: Duration = Duration::from_secs(2);

/// How many connections this process can hold.
#[derive(Debug, Clone, Copy)]
pub struct Capacity {
    /// The soft open-file limit after raising it.
    pub open_files: u64,
    /// The connection limit in force.
    pub max_connections: usize,
}

/// Raises the soft open-file limit to the hard one and works out the connection limit;
/// `Err` says why an explicit `max_connections` cannot be honoured.
pub fn plan(explicit: Option<usize>) -> Result<Capacity, String> {
    let open_files = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .map(|(soft, _)| soft)
                .unwrap_or(1024)
        }
    };
    let fits = open_files.saturating_sub(RESERVED_FDS + OVERFLOW as u64);
    let max_connections = match explicit {
        Some(m) if m as u64 > fits => {
            return Err(format!(
                "limits.max_connections = {m} does not fit: the open-file limit is {open_files}, \
                 of which {} are kept for the store, webhooks, clusters and refusals, leaving \
                 {fits}; raise the limit (ulimit -n, LimitNOFILE=) or lower max_connections",
                RESERVED_FDS + OVERFLOW as u64
            ))
        }
        Some(m) => m,
        None => usize::try_from(fits).unwrap_or(usize::MAX).max(1),
    };
    Ok(Capacity {
        open_files,
        max_connections,
    })
}

/// How connections are served.
#[derive(Clone)]
pub struct Serving {
    /// The connection limit.
    pub capacity: Capacity,
    /// Time a connection has to send a complete request head.
    pub header_read_timeout: Duration,
    /// TLS on every connection (`None`: plain HTTP).
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// The runtime that serves connections: their event streams and WebSockets. A
    /// connection whose first request is not a `GET` (a publish, an entity change, an admin
    /// call) is served on the listener's own runtime instead, so that its answer never waits
    /// behind the socket writes of a busy fan-out. `None`: everything on the listener's.
    pub streams: Option<tokio::runtime::Handle>,
}

/// Serves `router` on `listener` until `shutdown`; then lets open requests finish (their
/// connections close after the answer) and returns once every connection has ended.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    serving: Serving,
    shutdown: CancellationToken,
) {
    let Serving {
        capacity,
        header_read_timeout,
        tls,
        streams,
    } = serving;
    // Connections are spawned on the stream runtime; requests come back here.
    let requests = streams.as_ref().map(|_| tokio::runtime::Handle::current());
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(capacity.max_connections));
    let overflow = Arc::new(Semaphore::new(OVERFLOW));
    let conns = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors (or another passing fault): wait a moment instead of
                // spinning; open connections go on meanwhile.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Events are small writes that must leave at once: no Nagle delay.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                let (router, shutdown) = (router.clone(), shutdown.clone());
                let conn = Conn {
                    slot,
                    router,
                    peer,
                    head_timeout: header_read_timeout,
                    shutdown,
                    requests: requests.clone(),
                };
                match tls.clone() {
                    None => spawn_conn(&conns, streams.as_ref(), connection(tcp, conn)),
                    Some(acceptor) => {
                        spawn_conn(&conns, streams.as_ref(), async move {
                            let handshake = tokio::time::timeout(
                                crate::tls::HANDSHAKE_TIMEOUT,
                                acceptor.accept(tcp),
                            );
                            match handshake.await {
                                Ok(Ok(stream)) => connection(stream, conn).await,
                                Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                                Err(_) => tracing::debug!("TLS handshake timed out"),
                            }
                        });
                    }
                }
            }
            Err(_) => {
                metrics::counter!("crier_limit_hits_total", "limit" => "max_connections")
                    .increment(1);
                if let Ok(permit) = overflow.clone().try_acquire_owned() {
                    let limit = capacity.max_connections;
                    let router = router.clone();
                    let tls = tls.clone();
                    conns.spawn(async move {
                        match tls {
                            None => refuse(tcp, router, limit).await,
                            Some(acceptor) => {
                                let handshake = tokio::time::timeout(
                                    OVERFLOW_HEAD_TIMEOUT,
                                    acceptor.accept(tcp),
                                );
                                if let Ok(Ok(stream)) = handshake.await {
                                    refuse(stream, router, limit).await;
                                }
                            }
                        }
                        drop(permit);
                    });
                }
                // Else the socket is dropped here: closed unanswered.
            }
        }
    }
    drop(listener);
    conns.close();
    conns.wait().await;
}

/// Spawns a connection's task on `rt` (`None`: the current runtime), tracked by `conns`.
fn spawn_conn<F>(conns: &TaskTracker, rt: Option<&tokio::runtime::Handle>, fut: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    match rt {
        Some(rt) => drop(conns.spawn_on(fut, rt)),
        None => drop(conns.spawn(fut)),
    }
}

/// One accepted connection: its slot under `max_connections` and what serving it needs.
struct Conn {
    /// Free again when the socket is dropped, whether by hyper or, after an upgrade, by the
    /// WebSocket that took it over: the socket carries it.
    slot: OwnedSemaphorePermit,
    router: Router,
    peer: SocketAddr,
    head_timeout: Duration,
    shutdown: CancellationToken,
    /// Where a connection whose first request is not a `GET` is served (`None`: here).
    requests: Option<tokio::runtime::Handle>,
}

async fn connection<I>(io: I, conn: Conn)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Conn {
        slot,
        router,
        peer,
        head_timeout,
        shutdown,
        requests,
    } = conn;
    // The first head is due `head_timeout` after the accept, whichever path serves it.
    let first_head_due = tokio::time::Instant::now() + head_timeout;
    let first = crate::stream_conn::first_request(io, slot, &router, peer, head_timeout);
    let io = match first.await {
        crate::stream_conn::First::Hyper(io) => io,
        crate::stream_conn::First::Served | crate::stream_conn::First::Gone => return,
    };
    // Event streams and WebSocket upgrades are GETs; a connection that starts with any other
    // method is request traffic, and stays on the runtime it is handed to (a keep-alive
    // connection serves all its requests where its first one was served).
    let get = io.starts_with(b"GET ");
    let served = serve_hyper(io, router, peer, head_timeout, shutdown, first_head_due);
    match requests {
        Some(rt) if !get => {
            // Awaited, so that the listener's tracker still waits for the connection.
            if let Err(e) = rt.spawn(served).await {
                tracing::debug!(error = %e, "request connection task ended abnormally");
            }
        }
        _ => served.await,
    }
}

/// Serves a connection with hyper from the bytes `first_request` read ahead on.
async fn serve_hyper<I>(
    io: crate::stream_conn::Rewind<I>,
    router: Router,
    peer: SocketAddr,
    head_timeout: Duration,
    shutdown: CancellationToken,
    first_head_due: tokio::time::Instant,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Every request of the connection knows its peer, as axum's `ConnectInfo` (the
    // connection registry shows it).
    let first_seen = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = first_seen.clone();
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        seen.store(true, std::sync::atomic::Ordering::Relaxed);
        req.extensions_mut().insert(ConnectInfo(peer));
        TowerToHyperService::new(router.clone()).call(req)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout);
    let conn = builder
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let first_head = tokio::time::sleep_until(first_head_due);
    let mut first_head = std::pin::pin!(first_head);
    let mut waiting_first = true;
    let res = loop {
        tokio::select! {
            r = conn.as_mut() => break r,
            _ = first_head.as_mut(), if waiting_first => {
                waiting_first = false;
                if !first_seen.load(std::sync::atomic::Ordering::Relaxed) {
                    metrics::counter!("crier_limit_hits_total", "limit" => "header_read_timeout")
                        .increment(1);
                    return;
                }
            }
            _ = shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                break conn.await;
            }
        }
    };
    if let Err(e) = res {
        if e.is_timeout() {
            metrics::counter!("crier_limit_hits_total", "limit" => "header_read_timeout")
                .increment(1);
        }
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Answers one request on a connection over the limit, then closes it.
async fn refuse<I>(tcp: I, router: Router, limit: usize)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let router = router.clone();
        async move {
            if req.uri().path() == "/healthz" {
                return TowerToHyperService::new(router).call(req).await;
            }
            let body = serde_json::json!({"error": {
                "code": "too_many_connections",
                "message": format!("the hub holds {limit} connections, the most it allows (limits.max_connections); retry shortly"),
            }});
            let mut res = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
            res.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            Ok::<Response, std::convert::Infallible>(res)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(OVERFLOW_HEAD_TIMEOUT)
        .keep_alive(false);
    let conn = builder.serve_connection(TokioIo::new(tcp), svc);
    // A client that reads nothing does not hold the overflow slot for long either.
    let _ = tokio::time::timeout(2 * OVERFLOW_HEAD_TIMEOUT, conn).await;
}
