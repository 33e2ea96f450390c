//! Serving: the accept loop and the graceful drain.
//!
//! The accept loop is hyper's own rather than `axum::serve`, for one setting axum does not
//! expose: a header read timeout (`handshake_timeout`), so a client that opens a connection and
//! never finishes its request (slowloris) is dropped instead of holding a socket forever.
//!
//! On shutdown the instance at once reports `/readyz` 503 and refuses new WebSockets (503),
//! then closes its clients with 1012 one after another, spread evenly over `drain_period`, so
//! they reconnect to the other instances without a thundering herd. The broker keeps
//! delivering meanwhile; the listener closes and the broker stops once the last session is gone.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::{Gateway, control, presence, router};
use crate::protocol::close;

/// Serves HTTP and WebSockets on `listener` until the gateway's shutdown token is cancelled,
/// then drains and returns once every session is gone.
pub async fn serve(listener: TcpListener, gateway: Arc<Gateway>) -> std::io::Result<()> {
    tokio::spawn(presence::heartbeat(gateway.clone()));
    tokio::spawn(control::run(gateway.clone()));
    let stop_accepting = CancellationToken::new();
    let accepting = tokio::spawn(accept(listener, gateway.clone(), stop_accepting.clone()));
    gateway.shutdown.cancelled().await;
    // Health checks and new WebSockets get 503 from now on; HTTP is still served.
    gateway.draining.store(true, Ordering::Release);
    drain(&gateway).await;
    stop_accepting.cancel();
    let graceful = accepting.await.map_err(std::io::Error::other)?;
    // Keep-alive HTTP connections finish their requests; upgraded sockets are sessions.
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
    gateway.sessions.close();
    gateway.sessions.wait().await;
    if let Some(webhooks) = &gateway.webhooks {
        // The sessions' last leaves and disconnects, before the process may exit.
        webhooks.flushed(Duration::from_secs(5)).await;
    }
    gateway.stopped.cancel();
    Ok(())
}

/// Accepts connections until `stop`, each served by hyper with the gateway's router; returns
/// the watcher of the connections still open.
async fn accept(listener: TcpListener, gateway: Arc<Gateway>, stop: CancellationToken) -> GracefulShutdown {
    let app = router(gateway.clone());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(gateway.config.handshake_timeout);
    let builder = builder.http1_only();
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return graceful,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, most likely: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(request)
        });
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
}

/// Closes every session with 1012, one at a time, evenly over `drain_period`.
async fn drain(gateway: &Gateway) {
    let outboxes = gateway.live.outboxes();
    tracing::info!(sessions = outboxes.len(), period = ?gateway.config.drain_period, "draining");
    let gap = gateway.config.drain_period.checked_div(outboxes.len() as u32).unwrap_or_default();
    for outbox in outboxes {
        outbox.close(close::RESTARTING);
        tokio::time::sleep(gap).await;
    }
    // Sessions that were still upgrading when the drain began.
    for outbox in gateway.live.outboxes() {
        outbox.close(close::RESTARTING);
    }
}
