//! A new WebSocket session's `101` and welcome in one packet.
//!
//! hyper writes the `101 Switching Protocols` and flushes it before the session starts, and the
//! session's welcome follows a moment later in a write of its own: two packets, and two
//! wake-ups of the client, for every connection. Where the welcome follows at once (no connect
//! hook to ask, no `auth` frame to wait for), the upgrade asks for the connection to be corked
//! (`TCP_CORK`) from the `101` on, and the session's writer releases it with its first write, so
//! both leave together. The kernel sends corked bytes after 200 ms whatever happens, so nothing
//! is held longer than that. Where `TCP_CORK` does not exist (outside Linux), nothing is held.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Nothing held, nor to be held.
const OPEN: u8 = 0;
/// The next write (the `101`) is to be held.
const ASKED: u8 = 1;
/// Writes are held.
const CORKED: u8 = 2;
/// What is held leaves with the next flush.
const RELEASED: u8 = 3;

/// Where a connection stands: shared by its stream and the request handlers.
#[derive(Debug, Default)]
pub(super) struct Cork(AtomicU8);

impl Cork {
    /// Holds what the connection writes next (the `101`) until [`Cork::release`].
    pub(super) fn ask(&self) {
        let _ = self.0.compare_exchange(OPEN, ASKED, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Lets what is held go with the connection's next flush.
    pub(super) fn release(&self) {
        let _ = self.0.compare_exchange(ASKED, OPEN, Ordering::AcqRel, Ordering::Acquire);
        let _ = self.0.compare_exchange(CORKED, RELEASED, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// A connection's socket, corked and uncorked as its [`Cork`] says.
pub(super) struct CorkedStream {
    inner: TcpStream,
    cork: Arc<Cork>,
}

impl CorkedStream {
    pub(super) fn new(inner: TcpStream) -> (Self, Arc<Cork>) {
        let cork = Arc::new(Cork::default());
        (Self { inner, cork: cork.clone() }, cork)
    }

    /// Corks the socket before a write if that was asked for.
    fn before_write(&self) {
        // A load first: every write of every connection passes here, nearly all of them open.
        if self.cork.0.load(Ordering::Acquire) == ASKED
            && self.cork.0.compare_exchange(ASKED, CORKED, Ordering::AcqRel, Ordering::Acquire).is_ok()
        {
            set_cork(&self.inner, true);
        }
    }

    /// Uncorks the socket after a flush once the cork is released.
    fn after_flush(&self) {
        if self.cork.0.load(Ordering::Acquire) == RELEASED
            && self.cork.0.compare_exchange(RELEASED, OPEN, Ordering::AcqRel, Ordering::Acquire).is_ok()
        {
            set_cork(&self.inner, false);
        }
    }

    /// Uncorks the socket, if corked, before it is shut down.
    fn before_shutdown(&self) {
        if matches!(self.cork.0.swap(OPEN, Ordering::AcqRel), CORKED | RELEASED) {
            set_cork(&self.inner, false);
        }
    }
}

#[cfg(target_os = "linux")]
fn set_cork(stream: &TcpStream, cork: bool) {
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_cork(cork) {
        tracing::debug!(error = %e, cork, "TCP_CORK not set");
    }
}

#[cfg(not(target_os = "linux"))]
fn set_cork(_: &TcpStream, _: bool) {}

impl AsyncRead for CorkedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CorkedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.before_write();
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.before_write();
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.inner).poll_flush(cx);
        self.after_flush();
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.before_shutdown();
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
