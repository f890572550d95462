//! The admin HTTP port: `/metrics`, `/healthz` (the process serves) and `/readyz` (the caches
//! are synced).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::metrics::Metrics;
use crate::{Error, Result};

/// What the admin endpoints read.
#[derive(Clone)]
pub struct AdminState {
    /// The metrics to export.
    pub metrics: Arc<Metrics>,
    /// Set once the controller's caches have synced.
    pub ready: Arc<AtomicBool>,
}

/// Serves the admin endpoints on `address` until the process ends.
pub async fn serve(address: SocketAddr, state: AdminState) -> Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| Error::Io { path: format!("admin address {address}"), source })?;
    axum::serve(listener, app)
        .await
        .map_err(|source| Error::Io { path: format!("admin server on {address}"), source })
}

async fn metrics(State(state): State<AdminState>) -> String {
    state.metrics.encode()
}

async fn ready(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
    }
}
