//! [`Guarded`]: a client socket that enforces its connection's deadlines.
//! It reports every byte read and written, and every blocked write, to the
//! connection's [`super::deadlines::ConnTimer`]; whenever the inner socket
//! would block it arms one timer at the earliest deadline, so the task
//! serving the connection wakes when it passes and the next read or write
//! fails with `TimedOut` (actix-http then drops the connection). An evicted
//! connection's next read or write fails with `ConnectionAborted`. Dropping
//! it releases its slot in the [`ConnGuard`]'s table.

use super::deadlines::{Expiry, MAX_HEAD_BYTES, WAITING_READ_BYTES};
use super::guard::{Conn, ConnGuard};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// A socket under its connection's deadlines.
pub struct Guarded<IO> {
    io: IO,
    conn: Arc<Conn>,
    guard: Arc<ConnGuard>,
    sleep: Pin<Box<Sleep>>,
    /// The deadline `sleep` is armed for.
    armed_ms: Option<u64>,
    /// The wait (its start) in which reading stopped at MAX_HEAD_BYTES.
    head_full_in: Option<u64>,
}

impl<IO> Guarded<IO> {
    pub fn new(io: IO, conn: Arc<Conn>, guard: Arc<ConnGuard>) -> Self {
        let far = tokio::time::Instant::now() + std::time::Duration::from_secs(86_400 * 365);
        Guarded {
            io,
            conn,
            guard,
            sleep: Box::pin(tokio::time::sleep_until(far)),
            armed_ms: None,
            head_full_in: None,
        }
    }

    pub fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// `Err` once the connection must close: evicted, or a deadline
    /// passed. Otherwise arms the timer for the next deadline (registering
    /// the task's waker with it and with the eviction flag).
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        self.conn.waker.register(cx.waker());
        loop {
            // Evicted only while it waited (a request in hand finishes).
            if self.conn.is_evicted() && self.conn.timer().waiting_since_ms().is_some() {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "connection evicted to make room for another",
                ));
            }
            let now = self.guard.now_ms();
            let Some((at, why)) = self.conn.timer().deadline(&self.guard.limits) else {
                return Ok(());
            };
            if at <= now {
                self.guard.stats.timed_out(why);
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("client connection deadline passed ({})", why.as_str()),
                ));
            }
            if self.armed_ms.is_none_or(|armed| armed > at) {
                self.sleep
                    .as_mut()
                    .reset(tokio::time::Instant::from_std(self.guard.instant(at)));
                self.armed_ms = Some(at);
            }
            match self.sleep.as_mut().poll(cx) {
                Poll::Pending => return Ok(()),
                // Fired (perhaps for an earlier deadline): look again.
                Poll::Ready(()) => self.armed_ms = None,
            }
        }
    }

    fn wrote(&mut self, n: usize) {
        if n > 0 {
            self.conn.timer().wrote();
        }
    }

    /// The TLS handshake on this socket is done (its bytes were no head).
    pub fn handshake_done(&self) {
        self.conn.timer().handshake_done();
    }

    fn write_blocked(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let now = self.guard.now_ms();
        self.conn.timer().write_blocked(now);
        self.check(cx)
    }
}

impl<IO> Drop for Guarded<IO> {
    fn drop(&mut self) {
        self.guard.release(self.conn.id);
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let (waiting, head_bytes) = {
            let t = this.conn.timer();
            (t.waiting_since_ms(), t.head_bytes())
        };
        if waiting.is_some() {
            if this.conn.is_evicted() {
                return Poll::Ready(this.check(cx));
            }
            if this.conn.is_closing() {
                // Its last response said `Connection: close`: read no more
                // (end of stream; actix-http then closes it).
                return Poll::Ready(Ok(()));
            }
        }
        let read = if let Some(since) = waiting {
            let room = MAX_HEAD_BYTES.saturating_sub(head_bytes) as usize;
            if room == 0 {
                if this.head_full_in == Some(since) {
                    // It parsed what it had and found no whole head.
                    this.guard.stats.timed_out(Expiry::HeadTooLarge);
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "client connection deadline passed (head_too_large)",
                    )));
                }
                // Read no more: let actix-http parse what it has first.
                this.head_full_in = Some(since);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            // Small reads: what a head brings before its request starts
            // stays within MAX_HEAD_BYTES.
            let cap = room.min(WAITING_READ_BYTES).min(buf.remaining());
            let mut small = buf.take(cap);
            let r = Pin::new(&mut this.io).poll_read(cx, &mut small);
            let n = small.filled().len();
            // SAFETY: `small` is the first `cap` bytes of `buf`'s unfilled
            // part; the reader filled (so initialized) its first `n` bytes.
            unsafe { buf.assume_init(n) };
            buf.advance(n);
            r.map_ok(|()| n)
        } else {
            let before = buf.filled().len();
            Pin::new(&mut this.io)
                .poll_read(cx, buf)
                .map_ok(|()| buf.filled().len() - before)
        };
        match read {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    let now = this.guard.now_ms();
                    this.conn.timer().read(now, n);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.check(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                this.wrote(n);
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.write_blocked(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Ready(Ok(n)) => {
                this.wrote(n);
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.write_blocked(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Pending => match this.write_blocked(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A connection's I/O that knows its [`Conn`] (plain or under TLS).
pub trait HasConn {
    fn conn(&self) -> Arc<Conn>;
}

impl<IO> HasConn for Guarded<IO> {
    fn conn(&self) -> Arc<Conn> {
        self.conn.clone()
    }
}

impl<IO> HasConn for tokio_rustls::server::TlsStream<Guarded<IO>> {
    fn conn(&self) -> Arc<Conn> {
        self.get_ref().0.conn.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::super::deadlines::ConnLimits;
    use super::super::table::TableLimits;
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn guard() -> Arc<ConnGuard> {
        ConnGuard::new(
            ConnLimits {
                head_timeout_ms: 300,
                idle_timeout_ms: 100,
                keep_alive_ms: 200,
                response_timeout_ms: 1_000,
            },
            TableLimits {
                max_connections: 8,
                max_per_address: 8,
                max_evicting: 4,
                evict_after_ms: 0,
            },
        )
    }

    fn guarded(g: &Arc<ConnGuard>) -> (Guarded<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(64);
        let conn = g.admit("127.0.0.1".parse().unwrap()).unwrap();
        (Guarded::new(ours, conn, g.clone()), theirs)
    }

    #[tokio::test]
    async fn a_stalled_head_fails_the_read_and_releases_the_slot() {
        let g = guard();
        let (mut io, mut client) = guarded(&g);
        client.write_all(b"G").await.unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(io.read(&mut buf).await.unwrap(), 1);
        let started = std::time::Instant::now();
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let waited = started.elapsed();
        assert!(
            waited >= std::time::Duration::from_millis(80)
                && waited < std::time::Duration::from_secs(2),
            "{waited:?}"
        );
        assert_eq!(g.open(), 1);
        drop(io);
        assert_eq!(g.open(), 0);
    }

    #[tokio::test]
    async fn a_busy_connection_may_wait_for_its_handler() {
        let g = guard();
        let (mut io, _client) = guarded(&g);
        io.conn().timer().request_started();
        let mut buf = [0u8; 16];
        let r =
            tokio::time::timeout(std::time::Duration::from_millis(500), io.read(&mut buf)).await;
        assert!(r.is_err(), "no deadline while a handler runs: {r:?}");
    }

    #[tokio::test]
    async fn a_client_that_never_reads_fails_the_write() {
        let g = guard();
        let (mut io, _client) = guarded(&g);
        io.conn().timer().request_started();
        io.conn().timer().responding(g.now_ms());
        let err = io.write_all(&[0u8; 4096]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn an_evicted_connection_wakes_and_fails() {
        let g = guard();
        let (mut io, _client) = guarded(&g);
        let conn = io.conn().clone();
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 1];
            io.read(&mut buf).await
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(super::super::table::Evictable::evict(&conn));
        let r = tokio::time::timeout(std::time::Duration::from_millis(250), reader)
            .await
            .expect("woken at once")
            .unwrap();
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::ConnectionAborted);
    }
}
