//! An origin socket shared between hyper's connection (which reads and writes
//! through it) and the pool (which looks at it before reuse).
//!
//! Why the pool looks: an origin that sends bytes nobody asked for (an extra
//! response after a complete one) would have them read as the answer to the
//! next request written on that connection, and every later answer would be
//! one URL behind: a cache poisoned URL by URL. RFC 9112 §9.3 lets a client
//! match responses to requests only by order, so a connection that holds
//! anything before a request is written cannot be trusted. Two checks:
//! - bytes read while the connection sits idle in the pool mark it
//!   (`Watch::unsolicited`);
//! - at checkout, a non-blocking `MSG_PEEK` finds bytes (or an EOF) that
//!   hyper has not read yet. The peek is a plain syscall so tokio's readiness
//!   state (and the waker registered with it) is left alone.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use crate::sharded::Counter;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// What the pool and hyper's connection know about one origin connection.
#[derive(Debug)]
pub struct Watch {
    /// The connection is parked in the pool: nothing may arrive now.
    idle: AtomicBool,
    /// Bytes arrived while idle: never reuse.
    unsolicited: AtomicBool,
    /// `viaduct_upstream_errors_total{kind="unsolicited"}`, counted once per connection.
    counter: Counter,
    /// Cache keys of the last responses read on this connection: suspect
    /// once the connection is found out of step (see `super::StoreTag`).
    recent: Mutex<VecDeque<String>>,
    suspects: super::Suspects,
}

/// How many recent responses per connection are forgotten when it desyncs:
/// a desync is found at the latest when the surplus response arrives while
/// the connection is idle, so only the last few answers can be affected.
const REMEMBERED: usize = 32;

impl Watch {
    pub fn set_idle(&self, idle: bool) {
        self.idle.store(idle, Ordering::Release);
    }

    pub fn unsolicited(&self) -> bool {
        self.unsolicited.load(Ordering::Acquire)
    }

    /// Marks the connection as having sent unsolicited bytes; true (and
    /// counted, and its recent answers reported) the first time only.
    pub fn flag_unsolicited(&self) -> bool {
        let first = !self.unsolicited.swap(true, Ordering::AcqRel);
        if first {
            self.counter.inc();
            let recent: Vec<String> = self.lock_recent().drain(..).collect();
            if !recent.is_empty() {
                let _ = self.suspects.send(recent);
            }
        }
        first
    }

    /// Notes the cache key a response on this connection may be stored under.
    pub fn remember(&self, key: String) {
        if self.unsolicited() {
            // Found out of step while this response's head was on its way.
            let _ = self.suspects.send(vec![key]);
            return;
        }
        let mut recent = self.lock_recent();
        if recent.len() == REMEMBERED {
            recent.pop_front();
        }
        recent.push_back(key);
    }

    fn lock_recent(&self) -> std::sync::MutexGuard<'_, VecDeque<String>> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The origin connection's byte stream, readable by hyper and peekable by the pool.
pub struct Socket {
    stream: Arc<TcpStream>,
    watch: Arc<Watch>,
}

/// What a peek at an idle connection found.
#[derive(Debug, PartialEq, Eq)]
pub enum Quiet {
    /// Nothing waiting: safe to write the next request.
    Yes,
    /// Bytes no request asked for.
    Unsolicited,
    /// The origin closed (or reset) the connection.
    Closed,
}

impl Socket {
    pub fn new(
        stream: TcpStream,
        unsolicited: Counter,
        suspects: super::Suspects,
    ) -> (Socket, Peeker) {
        let stream = Arc::new(stream);
        let watch = Arc::new(Watch {
            idle: AtomicBool::new(false),
            unsolicited: AtomicBool::new(false),
            counter: unsolicited,
            recent: Mutex::new(VecDeque::new()),
            suspects,
        });
        let peeker = Peeker {
            stream: stream.clone(),
            watch: watch.clone(),
        };
        (Socket { stream, watch }, peeker)
    }
}

/// The pool's handle on a connection's socket.
pub struct Peeker {
    stream: Arc<TcpStream>,
    pub watch: Arc<Watch>,
}

impl Peeker {
    /// Looks for unread bytes without consuming them or touching tokio's
    /// readiness (the socket is non-blocking, so this never waits).
    pub fn quiet(&self) -> Quiet {
        if self.watch.unsolicited() {
            return Quiet::Unsolicited;
        }
        let sock = socket2::SockRef::from(&*self.stream);
        let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        match sock.peek(&mut probe) {
            Ok(0) => Quiet::Closed,
            Ok(_) => Quiet::Unsolicited,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Quiet::Yes,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Quiet::Yes,
            Err(_) => Quiet::Closed,
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.stream.poll_read_ready(cx))?;
            let before = buf.filled().len();
            let room = buf.remaining();
            let mut got = 0;
            // A read that did not fill the buffer drained the socket: tokio
            // is told so (by a WouldBlock from inside `try_io`, which clears
            // the readiness it saw before the read, never a later one), and
            // the next read waits for epoll instead of costing a recv that
            // fails with EAGAIN. tokio's own `TcpStream::poll_read` does the
            // same; this socket is shared with the pool, so it reads by hand.
            let read = self.stream.try_io(Interest::READABLE, || {
                got = self.stream.try_read_buf(buf)?;
                if got > 0 && got < room {
                    Err(io::ErrorKind::WouldBlock.into())
                } else {
                    Ok(got)
                }
            });
            match read {
                // Bytes (or the end of the stream, 0).
                Ok(_) => {}
                // The short read above: its bytes are in `buf`.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
            if got > 0 && self.watch.idle.load(Ordering::Acquire) {
                self.watch.flag_unsolicited();
            }
            debug_assert_eq!(buf.filled().len(), before + got);
            return Poll::Ready(Ok(()));
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            match self.stream.try_write(data) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            match self.stream.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Writes go straight to the socket.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Requests are framed, so no half-close is ever needed; the socket
        // closes when the last handle drops.
        let _ = socket2::SockRef::from(&*self.stream).shutdown(std::net::Shutdown::Write);
        Poll::Ready(Ok(()))
    }
}
