//! A connection whose writes must make progress: [`WriteDeadline`] fails a
//! write (or flush) that has been pending for longer than its limit, so that
//! a client that asks for responses and never reads them cannot keep a
//! connection of the admin listener, and its place under `max_conns`, for
//! good. Reads pass through: the header-read timeout bounds those.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// `inner`, whose writes fail once one has waited `limit` without
/// progress; each such failure counts in `tripped`.
pub(crate) struct WriteDeadline<T> {
    inner: T,
    limit: Duration,
    /// Set while a write waits: when it started waiting, plus `limit`.
    stalled: Option<Pin<Box<Sleep>>>,
    tripped: Arc<AtomicU64>,
}

impl<T> WriteDeadline<T> {
    pub(crate) fn new(inner: T, limit: Duration, tripped: Arc<AtomicU64>) -> Self {
        WriteDeadline { inner, limit, stalled: None, tripped }
    }

    /// Passes a ready result through (progress: the clock stops), and
    /// turns a pending one into an error once it has waited `limit`.
    fn check<R>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if r.is_ready() {
            self.stalled = None;
            return r;
        }
        let limit = self.limit;
        let deadline = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        // Polled with the write's waker: it wakes the connection when the
        // time is up, if the socket does not first.
        if deadline.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.stalled = None;
        self.tripped.fetch_add(1, Ordering::Relaxed);
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, format!("no write progress for {limit:?}"))))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.check(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.check(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.check(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn a_write_nobody_reads_fails_after_the_limit_and_one_that_is_read_does_not() {
        let tripped = Arc::new(AtomicU64::new(0));
        let (near, mut far) = tokio::io::duplex(1024);
        let mut w = WriteDeadline::new(near, Duration::from_millis(100), tripped.clone());
        // Read slowly, but within the limit each time: never fails.
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            for _ in 0..8 {
                tokio::time::sleep(Duration::from_millis(30)).await;
                far.read_exact(&mut buf).await.unwrap();
            }
            far
        });
        w.write_all(&[7u8; 8 * 1024]).await.unwrap();
        let _far = reader.await.unwrap();
        assert_eq!(tripped.load(Ordering::Relaxed), 0);
        // Nobody reads now: the write fails after about the limit.
        let start = std::time::Instant::now();
        let err = w.write_all(&[7u8; 4096]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() >= Duration::from_millis(100), "{:?}", start.elapsed());
        assert_eq!(tripped.load(Ordering::Relaxed), 1);
    }
}
