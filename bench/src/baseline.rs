//! The baseline: a minimal WebSocket broadcast server with no broker and no protocol. Every
//! client receives every message; a message is one shared frame pushed to every connection.
//! Measured with the same load as Herald, in the same run, it is the machine's own ceiling.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::WebSocketUpgrade;
use axum::extract::ws::{Message, Utf8Bytes};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::broadcast;

/// Frames in flight per client before a lagging client is dropped.
const LAG: usize = 1024;

pub struct Baseline {
    pub addr: SocketAddr,
    frames: broadcast::Sender<Utf8Bytes>,
    /// Connections being served, so a run can wait for the last one to close.
    open: Arc<AtomicUsize>,
}

impl Baseline {
    /// Starts the server on a free loopback port.
    pub async fn start() -> std::io::Result<Self> {
        let (frames, _) = broadcast::channel(LAG);
        let open = Arc::new(AtomicUsize::new(0));
        let (sender, counter) = (frames.clone(), open.clone());
        let app = Router::new().route(
            "/ws",
            get(move |ws: WebSocketUpgrade| {
                let frames = sender.subscribe();
                let counter = counter.clone();
                async move {
                    ws.read_buffer_size(4096).write_buffer_size(8192).on_upgrade(|socket| async move {
                        counter.fetch_add(1, Ordering::Relaxed);
                        serve(socket, frames).await;
                        counter.fetch_sub(1, Ordering::Relaxed);
                    })
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { addr, frames, open })
    }

    /// Waits (up to a few seconds) until every connection is closed, so that tearing them
    /// down does not take CPU from whatever is measured next.
    pub async fn wait_closed(&self) {
        for _ in 0..100 {
            if self.open.load(Ordering::Relaxed) == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends one frame to every connected client.
    pub fn broadcast(&self, frame: Utf8Bytes) {
        let _ = self.frames.send(frame);
    }
}

async fn serve(socket: axum::extract::ws::WebSocket, mut frames: broadcast::Receiver<Utf8Bytes>) {
    let (mut sink, mut stream) = socket.split();
    loop {
        tokio::select! {
            frame = frames.recv() => match frame {
                Ok(frame) => if sink.send(Message::Text(frame)).await.is_err() { return },
                Err(_) => return,
            },
            incoming = stream.next() => if !matches!(incoming, Some(Ok(_))) { return },
        }
    }
}
