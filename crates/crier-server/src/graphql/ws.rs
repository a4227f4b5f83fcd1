//! `GET /graphql`: the `graphql-transport-ws` WebSocket, with the credential watched for the
//! socket's whole life (§12.1) and protocol faults closed with their own codes (§12.11).
//!
//! async-graphql speaks the protocol; this module owns the socket around it. It feeds client
//! frames in, writes the protocol's frames out and, next to both, waits for the credential
//! presented at `connection_init` to end (its `exp`, or a re-check every `heartbeat` that
//! finds the API key revoked). Then the socket closes with 4403 and every subscription on it
//! ends. The [`Guard`] extension re-checks the credential before each operation (query,
//! mutation, subscribe), so none is served between two re-checks once the credential ended,
//! and gives each request its [`ResponseBudget`]. A socket that sends no `connection_init`
//! within `header_read_timeout` is closed with 4408, as the protocol prescribes, so an
//! unauthenticated socket cannot be held open.

use std::any::{Any, TypeId};
use std::str::FromStr;
use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest,
};
use async_graphql::http::{WebSocketProtocols, WsMessage};
use async_graphql::{Data, ErrorExtensions, ServerResult};
use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::Response;
use crier_core::Principal;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::budget::ResponseBudget;
use crate::error::ApiError;
use crate::lifetime::{Ended, Lifetime};
use crate::state::{AppState, ConnGuard, Transport};

/// Close code of a GraphQL socket whose credential ended.
pub const CREDENTIAL_ENDED: u16 = 4403;

/// Client frames waiting for the protocol before the socket is read further.
const INBOUND_QUEUE: usize = 16;

/// Cancelled when an operation finds the connection's credential ended.
struct CredentialEnded(CancellationToken);

fn session<T: Any>(data: &Data) -> Option<&T> {
    data.get(&TypeId::of::<T>())
        .and_then(|d| d.downcast_ref::<T>())
}

/// The schema extension that checks a socket's credential before each of its operations and
/// gives every request a response budget.
pub struct Guard;

impl ExtensionFactory for Guard {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Guard)
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for Guard {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: async_graphql::Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<async_graphql::Request> {
        // Only a socket's operations carry the principal as session data; an HTTP request
        // was authenticated a moment ago.
        let s = ctx.session_data;
        if let (Some(state), Some(p)) = (session::<AppState>(s), session::<Principal>(s)) {
            if let Err(ended) = crate::lifetime::check(state, p).await {
                if let Some(CredentialEnded(t)) = session::<CredentialEnded>(s) {
                    t.cancel();
                }
                let e = async_graphql::Error::new(ended.message())
                    .extend_with(|_, ext| ext.set("code", ended.code()));
                let mut refusal = async_graphql::ServerError::new(e.message, None);
                refusal.extensions = e.extensions;
                return Err(refusal);
            }
            if !request
                .data
                .contains_key(&TypeId::of::<Arc<ResponseBudget>>())
            {
                request.data.insert(ResponseBudget::new(
                    state.settings.limits.max_response_bytes,
                ));
            }
        }
        next.run(ctx, request).await
    }
}

/// `GET /graphql`: the `graphql-transport-ws` WebSocket. The credential travels in the
/// `connection_init` payload as `{"token": "..."}` (an `Authorization` header or `?token=`
/// on the upgrade works too).
pub async fn websocket(
    State(state): State<AppState>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
    parts: axum::http::request::Parts,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(|_| {
        ApiError::bad(
            "websocket_required",
            "GET /graphql is the graphql-transport-ws WebSocket; send queries and mutations with POST",
        )
    })?;
    let protocol = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|list| {
            list.split(',')
                .find_map(|p| WebSocketProtocols::from_str(p.trim()).ok())
        })
        .ok_or_else(|| {
            ApiError::bad(
                "websocket_protocol",
                "ask for the `graphql-transport-ws` subprotocol (Sec-WebSocket-Protocol)",
            )
        })?;
    crate::transport::check_origin(&state, &headers)?;
    let header_token = crate::auth::token_of(&parts)?;
    let remote = crate::monitor::peer_of(&parts);
    let max = state.settings.limits.max_ws_frame_bytes;
    Ok(upgrade
        .max_message_size(max)
        .max_frame_size(max)
        .protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        // The library's defaults reserve 128 KiB per direction per connection; client
        // messages are small (a larger one is read in several reads).
        .read_buffer_size(1024)
        .write_buffer_size(8192)
        .on_upgrade(move |socket| serve(state, socket, protocol, header_token, remote)))
}

/// Resolves when the credential ends; never before `connection_init` succeeded.
async fn ended(lifetime: &mut Option<Lifetime>) -> Ended {
    match lifetime {
        Some(l) => l.ended().await,
        None => std::future::pending().await,
    }
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(reason.to_string()),
    }))
}

async fn serve(
    state: AppState,
    socket: WebSocket,
    protocol: WebSocketProtocols,
    header_token: Option<String>,
    remote: Option<std::net::SocketAddr>,
) {
    let (mut sink, mut stream) = socket.split();
    let (tx, rx) = mpsc::channel::<Bytes>(INBOUND_QUEUE);
    let mut tx = Some(tx);
    let input =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    let (init_tx, mut init_rx) = oneshot::channel::<Principal>();
    let mut init_pending = true;
    let cred_ended = CancellationToken::new();
    let init_state = state.clone();
    let init_ended = cred_ended.clone();
    let gql = async_graphql::http::WebSocket::new(state.graphql.clone(), input, protocol)
        .on_connection_init(move |payload| {
            connection_init(
                init_state,
                header_token,
                remote,
                payload,
                init_tx,
                init_ended,
            )
        });
    let mut gql = std::pin::pin!(gql);
    let mut lifetime: Option<Lifetime> = None;
    let init_deadline = tokio::time::sleep(state.settings.limits.header_read_timeout);
    let mut init_deadline = std::pin::pin!(init_deadline);
    let fin: Option<(u16, String)> = loop {
        tokio::select! {
            biased;
            _ = state.shutdown.cancelled() => break Some((1001, "server shutting down".into())),
            _ = cred_ended.cancelled() => {
                break Some((CREDENTIAL_ENDED, "the credential ended".into()));
            }
            e = ended(&mut lifetime) => break Some((CREDENTIAL_ENDED, e.message().into())),
            () = &mut init_deadline, if init_pending => {
                metrics::counter!("crier_limit_hits_total", "limit" => "header_read_timeout")
                    .increment(1);
                break Some((4408, "connection initialisation timeout".into()));
            }
            p = &mut init_rx, if init_pending => {
                init_pending = false;
                if let Ok(p) = p {
                    lifetime = Some(Lifetime::new(&state, &p));
                }
            }
            out = gql.next() => match out {
                Some(WsMessage::Text(t)) => {
                    if sink.send(Message::Text(Utf8Bytes::from(t))).await.is_err() {
                        break None;
                    }
                }
                Some(WsMessage::Close(code, reason)) => break Some((code, reason)),
                None => break None,
            },
            m = stream.next(), if tx.as_ref().is_some_and(|t| t.capacity() > 0) => match m {
                Some(Ok(Message::Text(t))) => {
                    let bytes = Bytes::from(t);
                    // §12.11: a message with a repeated key (at any depth) or that is no JSON is
                    // refused before the protocol reads it, as graphql-transport-ws closes on
                    // an invalid message: 4400.
                    if let Err(e) = strict_message(&bytes) {
                        break Some((4400, format!("invalid message: {e}")));
                    }
                    if let Some(t) = &tx {
                        let _ = t.try_send(bytes);
                    }
                }
                Some(Ok(Message::Binary(b))) => {
                    if let Err(e) = strict_message(&b) {
                        break Some((4400, format!("invalid message: {e}")));
                    }
                    if let Some(t) = &tx {
                        let _ = t.try_send(b);
                    }
                }
                // The library queued a pong: it goes out before the next frame is read, so a
                // client that sends pings and reads nothing stops being read instead of
                // growing the library's buffer a pong per ping.
                Some(Ok(Message::Ping(_))) => {
                    if sink.flush().await.is_err() {
                        break None;
                    }
                }
                Some(Ok(Message::Pong(_))) => {}
                // The peer is done: let the protocol finish what is under way, then stop.
                Some(Ok(Message::Close(_))) | None => tx = None,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "GraphQL websocket read ended");
                    break crate::transport::close::for_read_error(&e).map(|(c, r)| (c, r.to_string()));
                }
            },
        }
    };
    if let Some((code, reason)) = fin {
        let _ = sink.send(close(code, &reason)).await;
    } else {
        // The peer closed (or went away): answer its close frame, completing the handshake.
        let _ = sink.close().await;
    }
}

/// §12.11: a message is JSON without repeated keys, and the document of a `subscribe`
/// repeats no input object field.
fn strict_message(bytes: &[u8]) -> Result<(), String> {
    let v = crier_core::strict_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if let Some(q) = v["payload"]["query"].as_str() {
        if let Some(f) = crate::graphql::strict::repeated_field(q) {
            return Err(format!("an input object repeats the field `{f}`"));
        }
    }
    Ok(())
}

async fn connection_init(
    state: AppState,
    header_token: Option<String>,
    remote: Option<std::net::SocketAddr>,
    payload: Value,
    init_tx: oneshot::Sender<Principal>,
    cred_ended: CancellationToken,
) -> async_graphql::Result<Data> {
    let token = payload
        .get("token")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or(header_token);
    let principal = if state.settings.auth.enabled {
        let token = token.ok_or_else(|| {
            async_graphql::Error::new(
                "a credential is required: send {\"token\": \"...\"} in connection_init",
            )
        })?;
        state
            .settings
            .auth
            .authenticate(state.keys.as_ref(), &token)
            .await
            .map_err(|e| async_graphql::Error::new(e.message))?
    } else {
        Principal::anonymous_admin()
    };
    // Entered in the registry once authenticated: before, it has no tenant.
    let guard: ConnGuard = state
        .conns
        .open(
            &state,
            &principal.tenant,
            Transport::Graphql,
            &principal.subject,
            remote,
        )
        .map_err(|e| async_graphql::Error::new(e.message))?;
    let _ = init_tx.send(principal.clone());
    let mut data = Data::default();
    data.insert(principal);
    data.insert(state.clone());
    data.insert(CredentialEnded(cred_ended));
    // Held for the socket's life: counts it against the tenant's connection limit.
    data.insert(Arc::new(guard));
    data.insert(Arc::new(crate::reader_limits::SubscriptionSlots::default()));
    Ok(data)
}
