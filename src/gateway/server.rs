//! Serving: the accept loop and the graceful drain.
//!
//! The accept loop is hyper's own rather than `axum::serve`, for one setting axum does not
//! expose: a header read timeout (`handshake_timeout`), so a client that opens a connection and
//! never finishes its request (slowloris) is dropped instead of holding a socket forever. It
//! serves HTTP/1 only, with hyper's HTTP/1 connection itself: the gateway serves no HTTP/2, and
//! a server that could would first read every connection's opening bytes to tell which it is.
//!
//! On shutdown the instance at once reports `/readyz` 503 and refuses new WebSockets (503),
//! then closes its clients with 1012 one after another, spread evenly over `drain_period`, so
//! they reconnect to the other instances without a thundering herd. The broker keeps
//! delivering meanwhile; the listener closes and the broker stops once the last session is gone.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::HttpService;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::cork::CorkedStream;
use super::{Gateway, control, presence, router};
use crate::protocol::close;

/// Serves HTTP and WebSockets on `listener` until the gateway's shutdown token is cancelled,
/// then drains and returns once every session is gone.
pub async fn serve(listener: TcpListener, gateway: Arc<Gateway>) -> std::io::Result<()> {
    tokio::spawn(presence::heartbeat(gateway.clone()));
    tokio::spawn(control::run(gateway.clone()));
    let stop_accepting = CancellationToken::new();
    let connections = Connections::default();
    let accepting =
        tokio::spawn(accept(listener, gateway.clone(), connections.clone(), stop_accepting.clone()));
    gateway.shutdown.cancelled().await;
    // Health checks and new WebSockets get 503 from now on; HTTP is still served.
    gateway.draining.store(true, Ordering::Release);
    drain(&gateway).await;
    stop_accepting.cancel();
    accepting.await.map_err(std::io::Error::other)?;
    // Keep-alive HTTP connections finish their requests; upgraded sockets are sessions.
    let _ = tokio::time::timeout(Duration::from_secs(5), connections.shut_down()).await;
    gateway.sessions.close();
    gateway.sessions.wait().await;
    if let Some(webhooks) = &gateway.webhooks {
        // The sessions' last leaves and disconnects, before the process may exit.
        webhooks.flushed(Duration::from_secs(5)).await;
    }
    gateway.stopped.cancel();
    Ok(())
}

/// The HTTP connections being served, told together to finish once the listener closes.
#[derive(Clone, Default)]
struct Connections {
    tasks: TaskTracker,
    finish: CancellationToken,
}

impl Connections {
    /// Serves `connection` until it ends; once [`Connections::shut_down`] is called, it finishes
    /// the request in flight and closes (a connection that upgraded has already ended here).
    fn watch<I, S, B>(&self, connection: http1::UpgradeableConnection<I, S>, peer: SocketAddr)
    where
        S: HttpService<Incoming, ResBody = B>,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        I: hyper::rt::Read + hyper::rt::Write + Unpin,
        B: hyper::body::Body + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        http1::UpgradeableConnection<I, S>: Future<Output = hyper::Result<()>> + Send + 'static,
    {
        let finish = self.finish.clone();
        self.tasks.spawn(async move {
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = finish.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }

    /// Tells every connection to finish, and waits until they all have.
    async fn shut_down(&self) {
        self.tasks.close();
        self.finish.cancel();
        self.tasks.wait().await;
    }
}

/// Accepts connections until `stop`, each served by hyper with the gateway's router and
/// watched by `connections`.
async fn accept(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    connections: Connections,
    stop: CancellationToken,
) {
    let app = router(gateway.clone());
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(gateway.config.handshake_timeout);
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
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
        let (stream, cork) = CorkedStream::new(stream);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(cork.clone());
            app.clone().oneshot(request)
        });
        connections.watch(builder.serve_connection(TokioIo::new(stream), service).with_upgrades(), peer);
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
