//! The HTTP surface: routes, the JSON body extractor, access control, request metrics, and the
//! small read-only endpoints (health, models, metrics, OpenAPI, web demo).

mod chat;
mod describe;
mod segment;
mod web;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::error::ApiError;
use crate::AppState;

pub type AppStateRef = Arc<AppState>;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(web::index))
        .route("/app.js", get(web::script))
        .route("/style.css", get(web::style))
        .route("/openapi.json", get(web::openapi))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/describe", post(describe::describe))
        .route("/v1/segment", post(segment::segment))
        .route("/v1/chat/completions", post(chat::completions))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.limits.body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .with_state(state)
}

/// A JSON body whose every failure (too large, slow, malformed) is an API error, not axum's
/// plain-text rejection.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let timeout = req
            .extensions()
            .get::<BodyTimeout>()
            .map(|t| t.0)
            .unwrap_or(std::time::Duration::from_secs(30));
        let bytes = tokio::time::timeout(timeout, Bytes::from_request(req, state))
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "invalid_request_error",
                    "reading the request body timed out",
                )
            })?
            .map_err(|e| {
                let status = e.status();
                let kind = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    "request_too_large"
                } else {
                    "invalid_request_error"
                };
                ApiError::new(status, kind, e.body_text())
            })?;
        serde_json::from_slice(&bytes)
            .map(ApiJson)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

#[derive(Clone, Copy)]
struct BodyTimeout(std::time::Duration);

/// Bearer token check on the API and metrics (the page, health and OpenAPI stay public so a
/// browser can load the demo and enter the key).
async fn auth(State(state): State<AppStateRef>, mut req: Request, next: Next) -> Response {
    req.extensions_mut()
        .insert(BodyTimeout(state.limits.body_timeout));
    let path = req.uri().path();
    let protected = path.starts_with("/v1/") || path == "/metrics";
    if let (true, Some(key)) = (protected, &state.limits.api_key) {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), key.as_bytes()) {
            let mut r = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "missing or wrong API key (Authorization: Bearer ...)",
            )
            .into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
    }
    next.run(req).await
}

/// Compares without an early exit, so the key cannot be guessed byte by byte from timings.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

const ROUTES: &[&str] = &[
    "/",
    "/app.js",
    "/style.css",
    "/openapi.json",
    "/health",
    "/metrics",
    "/v1/models",
    "/v1/describe",
    "/v1/segment",
    "/v1/chat/completions",
];

/// Counts requests by route and status, and the time to the response head.
async fn record(State(state): State<AppStateRef>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let path = req.uri().path();
    // Unknown paths share one label so scanners cannot blow up the metric's cardinality.
    let route = ROUTES
        .iter()
        .find(|r| **r == path)
        .copied()
        .unwrap_or("other");
    let response = next.run(req).await;
    state.metrics.record_request(
        route,
        response.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    response
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found_error",
        "no such endpoint; see /openapi.json",
    )
}

async fn health(State(state): State<AppStateRef>) -> Json<serde_json::Value> {
    use std::sync::atomic::Ordering::Relaxed;
    Json(json!({
        "status": "ok",
        "model": state.workers.info.id,
        "sam": state.workers.has_sam(),
        "queue_depth": state.metrics.queue_depth.load(Relaxed),
        "engine_busy": state.metrics.engine_busy.load(Relaxed) == 1,
    }))
}

async fn models(State(state): State<AppStateRef>) -> Json<serde_json::Value> {
    let info = &state.workers.info;
    Json(json!({
        "object": "list",
        "data": [{
            "id": info.id,
            "object": "model",
            "created": 0,
            "owned_by": "gar",
            "prompt_numbers": info.prompt_numbers,
            "sam": info.sam.is_some(),
        }],
    }))
}

async fn metrics(State(state): State<AppStateRef>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
