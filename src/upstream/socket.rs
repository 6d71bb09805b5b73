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
use tokio_rustls::client::TlsStream;

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
    io: Io,
    watch: Arc<Watch>,
}

enum Io {
    Tcp(Arc<TcpStream>),
    /// Over TLS the pool cannot peek (the bytes are ciphertext, and TLS
    /// sends records of its own, such as session tickets, that are no
    /// response); hyper's read of an idle connection at checkout
    /// (`Conn::look`) finds any plaintext nobody asked for instead.
    Tls(Box<TlsStream<TcpStream>>),
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
        let (socket, mut peeker) = Socket::with(Io::Tcp(stream.clone()), unsolicited, suspects);
        peeker.stream = Some(stream);
        (socket, peeker)
    }

    pub fn tls(
        stream: TlsStream<TcpStream>,
        unsolicited: Counter,
        suspects: super::Suspects,
    ) -> (Socket, Peeker) {
        Socket::with(Io::Tls(Box::new(stream)), unsolicited, suspects)
    }

    /// The protocol the origin chose by ALPN, over TLS.
    pub fn alpn_h2(&self) -> bool {
        match &self.io {
            Io::Tls(tls) => tls.get_ref().1.alpn_protocol() == Some(b"h2"),
            Io::Tcp(_) => false,
        }
    }

    fn with(io: Io, unsolicited: Counter, suspects: super::Suspects) -> (Socket, Peeker) {
        let watch = Arc::new(Watch {
            idle: AtomicBool::new(false),
            unsolicited: AtomicBool::new(false),
            counter: unsolicited,
            recent: Mutex::new(VecDeque::new()),
            suspects,
        });
        let peeker = Peeker {
            stream: None,
            watch: watch.clone(),
        };
        (Socket { io, watch }, peeker)
    }
}

/// The pool's handle on a connection's socket.
pub struct Peeker {
    /// `None` over TLS (see `Io::Tls`).
    stream: Option<Arc<TcpStream>>,
    pub watch: Arc<Watch>,
}

impl Peeker {
    /// Looks for unread bytes without consuming them or touching tokio's
    /// readiness (the socket is non-blocking, so this never waits).
    pub fn quiet(&self) -> Quiet {
        if self.watch.unsolicited() {
            return Quiet::Unsolicited;
        }
        let Some(stream) = &self.stream else {
            return Quiet::Yes;
        };
        let sock = socket2::SockRef::from(&**stream);
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
        let Socket { io, watch } = self.get_mut();
        let before = buf.filled().len();
        match io {
            Io::Tcp(stream) => ready!(read_drained(stream, cx, buf))?,
            Io::Tls(tls) => ready!(Pin::new(&mut **tls).poll_read(cx, buf))?,
        }
        if buf.filled().len() > before && watch.idle.load(Ordering::Acquire) {
            watch.flag_unsolicited();
        }
        Poll::Ready(Ok(()))
    }
}

/// Reads what the socket holds. A read that did not fill the buffer drained
/// the socket: tokio is told so (by a WouldBlock from inside `try_io`, which
/// clears the readiness it saw before the read, never a later one), and the
/// next read waits for epoll instead of costing a recv that fails with
/// EAGAIN. tokio's own `TcpStream::poll_read` does the same; this socket is
/// shared with the pool, so it reads by hand.
fn read_drained(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    loop {
        ready!(stream.poll_read_ready(cx))?;
        let room = buf.remaining();
        let mut got = 0;
        let read = stream.try_io(Interest::READABLE, || {
            got = stream.try_read_buf(buf)?;
            if got > 0 && got < room {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(got)
            }
        });
        match read {
            // Bytes (or the end of the stream, 0).
            Ok(_) => return Poll::Ready(Ok(())),
            // The short read above: its bytes are in `buf`.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => {
                return Poll::Ready(Ok(()))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let stream = match &mut self.io {
            Io::Tcp(stream) => stream,
            Io::Tls(tls) => return Pin::new(&mut **tls).poll_write(cx, data),
        };
        loop {
            ready!(stream.poll_write_ready(cx))?;
            match stream.try_write(data) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let stream = match &mut self.io {
            Io::Tcp(stream) => stream,
            Io::Tls(tls) => return Pin::new(&mut **tls).poll_write_vectored(cx, bufs),
        };
        loop {
            ready!(stream.poll_write_ready(cx))?;
            match stream.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Tcp(_) => true,
            Io::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            // Writes go straight to the socket.
            Io::Tcp(_) => Poll::Ready(Ok(())),
            // rustls holds records until flushed.
            Io::Tls(tls) => Pin::new(&mut **tls).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Tcp(stream) => {
                // Requests are framed, so no half-close is ever needed; the
                // socket closes when the last handle drops.
                let _ = socket2::SockRef::from(&**stream).shutdown(std::net::Shutdown::Write);
                Poll::Ready(Ok(()))
            }
            Io::Tls(tls) => Pin::new(&mut **tls).poll_shutdown(cx),
        }
    }
}
