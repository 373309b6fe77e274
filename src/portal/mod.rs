//! The HTTP side of the gateway: the supervisor portal ([`web`]: pages, playback, tags, audit
//! log, for people signed in with `callgate user add` accounts) and the call-control API a
//! payment or CRM screen uses to pause and resume recording while card details are taken:
//!
//! ```text
//! POST /api/calls/{id}/pause     200 {"call_id":…,"state":"paused"}   409 already paused / not connected
//! POST /api/calls/{id}/resume    200 {"call_id":…,"state":"recording"} 409 not paused
//! POST /api/calls/{id}/record    200 {"call_id":…,"state":"recording"} 409 line not on-demand,
//!                                declined by the customer, not connected, already recording
//! GET  /api/health               200 (no token needed)
//! ```
//! Every `/api/calls` request needs `Authorization: Bearer <token>`; tokens are created with
//! `callgate api token create NAME`, and only their SHA-256 is kept (see [`tokens`]).

pub mod playback;
pub mod sessions;
pub mod tokens;
pub mod users;
pub mod web;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};

use crate::ids::CallId;
use crate::media::relay::ControlRefused;

/// What an API caller asks of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pause,
    Resume,
    /// Start recording an on-demand call.
    Record,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Record => "record",
        }
    }
}

/// A request from the API, answered by the signalling task.
#[derive(Debug)]
pub struct ControlRequest {
    pub call: CallId,
    pub action: Action,
    /// The API token's name (goes on the call record for an on-demand start).
    pub by: String,
    pub reply: oneshot::Sender<Result<(), ControlError>>,
}

/// Why a control request failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no such call in progress")]
    UnknownCall,
    #[error(transparent)]
    Refused(#[from] ControlRefused),
    #[error(transparent)]
    NotStarted(crate::call::StartRefused),
    #[error("the gateway is shutting down")]
    Gone,
}

#[derive(Clone)]
struct AppState {
    tokens: Arc<tokens::TokenSet>,
    control: mpsc::Sender<ControlRequest>,
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// Binds the API listener; returns the bound address and the server future.
pub async fn bind(
    listen: SocketAddr,
    tokens: tokens::TokenSet,
    control: mpsc::Sender<ControlRequest>,
    portal: web::PortalDeps,
    mut stop: watch::Receiver<bool>,
) -> Result<(SocketAddr, impl std::future::Future<Output = ()>), PortalError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| PortalError::Bind { addr: listen, source })?;
    let addr = listener.local_addr().map_err(|source| PortalError::Bind { addr: listen, source })?;
    let state = AppState { tokens: Arc::new(tokens), control };
    let app = router(state).merge(web::routes(web::Web::new(portal)).layer(axum::middleware::map_response(harden)));
    let server = async move {
        let shutdown = async move {
            let _ = stop.changed().await;
        };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::error!(error = %e, "HTTP API stopped");
        }
    };
    Ok((addr, server))
}

async fn harden(res: axum::response::Response) -> axum::response::Response {
    web::harden(res)
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/api/calls/{id}/pause", post(pause))
        .route("/api/calls/{id}/resume", post(resume))
        .route("/api/calls/{id}/record", post(record))
        .with_state(state)
}

async fn pause(state: State<AppState>, headers: HeaderMap, id: Path<String>) -> (StatusCode, Json<serde_json::Value>) {
    control(state, headers, id, Action::Pause).await
}

async fn resume(state: State<AppState>, headers: HeaderMap, id: Path<String>) -> (StatusCode, Json<serde_json::Value>) {
    control(state, headers, id, Action::Resume).await
}

async fn record(state: State<AppState>, headers: HeaderMap, id: Path<String>) -> (StatusCode, Json<serde_json::Value>) {
    control(state, headers, id, Action::Record).await
}

async fn control(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    action: Action,
) -> (StatusCode, Json<serde_json::Value>) {
    let err = |status: StatusCode, msg: String| (status, Json(json!({ "error": msg })));
    let Some(who) = bearer(&headers).and_then(|t| state.tokens.check(t)) else {
        return err(StatusCode::UNAUTHORIZED, "missing or unknown API token".into());
    };
    if !id.starts_with("call-") || id.len() > 64 {
        return err(StatusCode::NOT_FOUND, "no such call in progress".into());
    }
    let call = CallId::from_string(id);
    let (tx, rx) = oneshot::channel();
    let req = ControlRequest { call: call.clone(), action, by: who.to_string(), reply: tx };
    if state.control.send(req).await.is_err() {
        return err(StatusCode::SERVICE_UNAVAILABLE, "the gateway is shutting down".into());
    }
    match rx.await {
        Ok(Ok(())) => {
            tracing::info!(call = %call, token = %who, action = action.as_str(), "recording control by API");
            let state = if action == Action::Pause { "paused" } else { "recording" };
            (StatusCode::OK, Json(json!({ "call_id": call.as_str(), "state": state })))
        }
        Ok(Err(ControlError::UnknownCall)) => err(StatusCode::NOT_FOUND, "no such call in progress".into()),
        Ok(Err(e @ (ControlError::Refused(_) | ControlError::NotStarted(_)))) => err(StatusCode::CONFLICT, e.to_string()),
        Ok(Err(ControlError::Gone)) | Err(_) => {
            err(StatusCode::SERVICE_UNAVAILABLE, "the gateway is shutting down".into())
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}
