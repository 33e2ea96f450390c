//! A new WebSocket session's `101` and welcome in one write.
//!
//! hyper writes the `101 Switching Protocols` and flushes it before the session starts, and the
//! session's welcome follows a moment later in a write of its own: two writes, two packets and
//! two wake-ups of the client, for every connection. Where the welcome follows at once (there
//! is no connect hook to ask first), the upgrade asks for the connection to be corked: the
//! `101` is kept in the connection's stream instead of being written, and the session's writer
//! releases it with its first write, so both leave in one system call. A release with nothing
//! to write after it still sends the `101` at the next flush, and a shutdown sends it first.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Nothing held, nor to be held.
const OPEN: u8 = 0;
/// The next write (the `101`) is to be held.
const ASKED: u8 = 1;
/// Writes are held.
const CORKED: u8 = 2;
/// What is held leaves with the next write or flush.
const RELEASED: u8 = 3;

/// Where a connection stands: shared by its stream and the request handlers.
#[derive(Debug, Default)]
pub(super) struct Cork(AtomicU8);

impl Cork {
    /// Holds what the connection writes next (the `101`) until [`Cork::release`].
    pub(super) fn ask(&self) {
        let _ = self.0.compare_exchange(OPEN, ASKED, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Lets what is held go with the connection's next write or flush.
    pub(super) fn release(&self) {
        let _ = self.0.compare_exchange(ASKED, OPEN, Ordering::AcqRel, Ordering::Acquire);
        let _ = self.0.compare_exchange(CORKED, RELEASED, Ordering::AcqRel, Ordering::Acquire);
    }

    fn state(&self) -> u8 {
        self.0.load(Ordering::Acquire)
    }
}

/// A connection's stream, holding its writes while its [`Cork`] says so.
pub(super) struct CorkedStream<S = TcpStream> {
    inner: S,
    cork: Arc<Cork>,
    /// The bytes held (the `101`), and how many of them have been written since the release.
    held: Vec<u8>,
    sent: usize,
}

impl<S: AsyncWrite + Unpin> CorkedStream<S> {
    pub(super) fn new(inner: S) -> (Self, Arc<Cork>) {
        let cork = Arc::new(Cork::default());
        (Self { inner, cork: cork.clone(), held: Vec::new(), sent: 0 }, cork)
    }

    /// Keeps `bufs` instead of writing them if the cork is in: returns how much was kept.
    fn hold(&mut self, bufs: &[IoSlice<'_>]) -> Option<usize> {
        // A load first: every write of every connection passes here, nearly all of them open.
        let state = self.cork.state();
        let corked = state == CORKED
            || (state == ASKED
                && self.cork.0.compare_exchange(ASKED, CORKED, Ordering::AcqRel, Ordering::Acquire).is_ok());
        if !corked {
            return None;
        }
        let before = self.held.len();
        for buf in bufs {
            self.held.extend_from_slice(buf);
        }
        Some(self.held.len() - before)
    }

    /// Writes what is held once released, with `buf` after it in the same system call; returns
    /// how much of `buf` went too (`None` when nothing is, or is any longer, held).
    fn poll_release(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<Option<usize>>> {
        if self.cork.state() != RELEASED {
            return Poll::Ready(Ok(None));
        }
        while self.sent < self.held.len() {
            let unsent = self.held.len() - self.sent;
            let slices = [IoSlice::new(&self.held[self.sent..]), IoSlice::new(buf)];
            let written = ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, &slices))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += written.min(unsent);
            if written > unsent {
                self.open();
                return Poll::Ready(Ok(Some(written - unsent)));
            }
        }
        self.open();
        Poll::Ready(Ok(None))
    }

    /// Everything held is written: the stream passes writes through from now on.
    fn open(&mut self) {
        self.held = Vec::new();
        self.sent = 0;
        self.cork.0.store(OPEN, Ordering::Release);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CorkedStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CorkedStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if let Some(kept) = self.hold(&[IoSlice::new(buf)]) {
            return Poll::Ready(Ok(kept));
        }
        if let Some(written) = ready!(self.poll_release(cx, buf))? {
            return Poll::Ready(Ok(written));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(kept) = self.hold(bufs) {
            return Poll::Ready(Ok(kept));
        }
        // A write may take less than it is given: the first non-empty buffer goes with what is
        // held.
        let first = bufs.iter().find(|buf| !buf.is_empty()).map_or(&[][..], |buf| &buf[..]);
        if let Some(written) = ready!(self.poll_release(cx, first))? {
            return Poll::Ready(Ok(written));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.cork.state() == CORKED {
            return Poll::Ready(Ok(()));
        }
        ready!(self.poll_release(cx, &[]))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.cork.release();
        ready!(self.poll_release(cx, &[]))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    /// A stream that takes at most `step` bytes a write, and counts its writes.
    struct Trickle {
        written: Vec<u8>,
        writes: usize,
        step: usize,
    }

    impl Trickle {
        fn take(&mut self, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
            let taken: Vec<u8> = bufs.iter().flat_map(|buf| buf.iter().copied()).take(self.step).collect();
            self.written.extend_from_slice(&taken);
            self.writes += 1;
            Poll::Ready(Ok(taken.len()))
        }
    }

    impl AsyncWrite for Trickle {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            self.take(&[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            self.take(bufs)
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn corked(step: usize) -> (CorkedStream<Trickle>, Arc<Cork>) {
        CorkedStream::new(Trickle { written: Vec::new(), writes: 0, step })
    }

    #[tokio::test]
    async fn the_101_leaves_with_the_first_write_after_the_release() {
        let (mut stream, cork) = corked(usize::MAX);
        cork.ask();
        stream.write_all(b"HTTP/1.1 101\r\n\r\n").await.unwrap();
        stream.flush().await.unwrap();
        assert_eq!(stream.inner.writes, 0, "held until released");
        cork.release();
        stream.write_all(b"welcome").await.unwrap();
        stream.write_all(b", then more").await.unwrap();
        assert_eq!(stream.inner.written, b"HTTP/1.1 101\r\n\r\nwelcome, then more");
        assert_eq!(stream.inner.writes, 2, "the 101 and the welcome in one write");
    }

    #[tokio::test]
    async fn short_writes_keep_every_byte_in_order() {
        let (mut stream, cork) = corked(3);
        cork.ask();
        stream.write_all(b"HTTP/1.1 101\r\n\r\n").await.unwrap();
        cork.release();
        stream.write_all(b"welcome").await.unwrap();
        assert_eq!(stream.inner.written, b"HTTP/1.1 101\r\n\r\nwelcome");
    }

    #[tokio::test]
    async fn a_release_without_a_write_sends_the_101_at_the_flush_or_the_shutdown() {
        for shutdown in [false, true] {
            let (mut stream, cork) = corked(usize::MAX);
            cork.ask();
            stream.write_all(b"HTTP/1.1 101\r\n\r\n").await.unwrap();
            if shutdown {
                stream.shutdown().await.unwrap();
            } else {
                cork.release();
                stream.flush().await.unwrap();
            }
            assert_eq!(stream.inner.written, b"HTTP/1.1 101\r\n\r\n", "shutdown: {shutdown}");
        }
    }

    #[tokio::test]
    async fn an_uncorked_stream_writes_through() {
        let (mut stream, cork) = corked(usize::MAX);
        cork.release();
        stream.write_all(b"HTTP/1.1 200\r\n\r\n").await.unwrap();
        assert_eq!((&stream.inner.written[..], stream.inner.writes), (&b"HTTP/1.1 200\r\n\r\n"[..], 1));
    }
}
