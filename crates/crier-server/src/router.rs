//! The routes: every path of the API (§2–§11) and the layers around them, as one function
//! over a state, so tests can drive it without a socket and embedders can nest it.

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::Router;

use crate::error::ApiError;
use crate::state::AppState;
use crate::{
    browser, connections, dashboard, entities, events, filters, graphql, http, observe, ops,
    pusher, replays, sse, stats, webhooks, ws,
};

/// The router over a state.
pub fn app(state: AppState) -> Router {
    app_for(state)
}

/// The router over a state, typed for whatever router it is nested in or merged with.
pub fn app_for<S: Clone + Send + Sync + 'static>(state: AppState) -> Router<S> {
    let router = Router::new()
        .route("/v1/events", get(events::history).post(events::publish))
        .route("/v1/events/{id}", get(events::get_event))
        .route("/v1/stream", get(sse::stream))
        .route("/v1/ws", get(ws::upgrade))
        .route(
            "/v1/subscriptions",
            get(webhooks::routes::list).post(webhooks::routes::create),
        )
        .route(
            "/v1/subscriptions/{id}",
            get(webhooks::routes::get)
                .patch(webhooks::routes::patch)
                .delete(webhooks::routes::delete),
        )
        .route(
            "/v1/subscriptions/{id}/deliveries",
            get(webhooks::routes::deliveries),
        )
        .route(
            "/v1/subscriptions/{id}/redeliver",
            axum::routing::post(webhooks::routes::redeliver),
        )
        .route("/v1/filters", get(filters::list).post(filters::create))
        .route(
            "/v1/filters/{name}",
            get(filters::get).put(filters::put).delete(filters::delete),
        )
        .route("/v1/replays", get(replays::list).post(replays::create))
        .route("/v1/replays/{id}", get(replays::status))
        .route("/v1/replays/{id}/stream", get(replays::stream))
        .route("/v1/replays/{id}/stop", axum::routing::post(replays::stop))
        .route(
            "/v1/entities/{kind}/{id}",
            get(entities::get)
                .put(entities::write)
                .patch(entities::write)
                .delete(entities::delete),
        )
        .route("/v1/entities/{kind}", get(entities::list))
        .route(
            "/v1/links/{type}/{source_kind}/{source_id}/{target_kind}/{target_id}",
            axum::routing::put(entities::link).delete(entities::unlink),
        )
        .route("/v1/links", get(entities::links))
        .route("/graphql", get(graphql::websocket).post(graphql::http))
        .merge(pusher::routes())
        .route("/v1/stats", get(stats::stats))
        .route("/v1/connections", get(connections::list))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .route("/", get(dashboard::index))
        .route("/ui/{*path}", get(dashboard::asset))
        .route("/client/{*path}", get(dashboard::client))
        .fallback(|| async { ApiError::not_found("no such path") })
        // Bodies are limited by the publish handler itself, with a JSON error.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn(http::json_errors))
        // Origins and media types of browsers' requests (§12.7), inside CORS so that an
        // allowed origin can read a refusal.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            browser::guard,
        ));
    let router = match http::cors(&state.settings.allowed_origins) {
        Some(cors) => router
            .layer(cors)
            .layer(axum::middleware::from_fn(http::preflight)),
        None => router,
    };
    // The Host rule of no-auth mode, before anything else answers (§12.7).
    let router = router.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        browser::host_guard,
    ));
    // Request ids, the access log and request metrics wrap every route.
    observe::layer(router, state.clone()).with_state(state)
}
