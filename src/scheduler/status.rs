//! The scheduler process's own small HTTP server: `GET /healthz` for container health checks
//! and `GET /metrics` with the job counters.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Serves the status endpoints on `listener` until `shutdown`.
pub async fn serve_status(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }))
        .route("/metrics", get(move || async move { metrics.render() }));
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
}
