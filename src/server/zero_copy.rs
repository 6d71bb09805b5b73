//! Zero-copy file bodies on plain HTTP/1.x connections (issue 18): the bytes
//! of a served file go from the page cache to the socket with `sendfile(2)`,
//! as nginx's `sendfile on` does, instead of being copied into our memory
//! and then again into the socket (43% of the time on a 1 MiB file,
//! docs/benchmarks.md).
//!
//! hyper owns the connection and writes a body only from `Bytes`, so a file
//! body is sent in two halves that meet here:
//!
//! - the body (`proxy/body.rs`) registers each part of the file it owes on
//!   the connection's [`SendQueue`] and hands hyper a placeholder of the
//!   same length: a slice of one shared, never-written region of zeros;
//! - this module's [`ZeroCopyIo`], between hyper and the socket, recognises
//!   the placeholder in a vectored write and sends the registered file part
//!   with `sendfile` in its place.
//!
//! That relies on hyper writing body buffers as given (its queue strategy,
//! chosen because the socket reports vectored writes), and it fails closed:
//! a placeholder that does not sit exactly where the queue expects ends the
//! connection with an error; placeholder bytes are never written to a
//! socket. TLS and HTTP/2 connections have no queue, and their file bodies
//! are read and written as usual.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest part one placeholder stands for.
pub const PART: usize = 1 << 20;

/// The placeholder region: allocated zeroed (so its pages are never
/// touched or resident) and never written or read.
fn region() -> &'static [u8] {
    static REGION: OnceLock<&'static [u8]> = OnceLock::new();
    REGION.get_or_init(|| Vec::leak(vec![0u8; PART]))
}

/// Where `slice` starts in the region, if it is a placeholder.
fn placeholder_offset(slice: &[u8]) -> Option<usize> {
    let region = region();
    let start = region.as_ptr() as usize;
    let at = slice.as_ptr() as usize;
    (at >= start && at < start + region.len()).then(|| at - start)
}

/// One registered part of a file: `len` bytes from `offset`, `sent` so far.
struct Part {
    file: Arc<File>,
    offset: u64,
    len: usize,
    sent: usize,
}

/// A connection's file parts owed, in the order hyper writes them.
#[derive(Default)]
pub struct SendQueue {
    parts: Mutex<VecDeque<Part>>,
}

impl SendQueue {
    /// Registers `len` bytes (at most [`PART`]) of `file` from `offset`,
    /// and returns the placeholder to give hyper for them.
    pub fn push(&self, file: Arc<File>, offset: u64, len: usize) -> Bytes {
        let len = len.min(PART);
        self.lock().push_back(Part {
            file,
            offset,
            len,
            sent: 0,
        });
        Bytes::from_static(&region()[..len])
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Part>> {
        self.parts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A socket a file can be sent to by the kernel.
pub trait Sendfile {
    /// Whether what is written reaches the peer as written (plain TCP,
    /// not TLS), so the kernel may send file pages itself.
    fn zero_copy(&self) -> bool {
        false
    }

    /// Writes `bufs` (a response head) telling the kernel that more
    /// follows at once (`MSG_MORE`), so the head leaves in the same
    /// segments as the file's first bytes instead of alone (nginx's
    /// `tcp_nopush`; without it a 1 MiB file ran at 0.6x the copying path).
    fn poll_write_more(
        &self,
        _cx: &mut Context<'_>,
        _bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::Error::from(io::ErrorKind::Unsupported)))
    }

    /// Sends up to `len` bytes of `file` from `offset`; `Ok(0)` when the
    /// file ends first.
    fn poll_sendfile(
        &self,
        _cx: &mut Context<'_>,
        _file: &File,
        _offset: u64,
        _len: usize,
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::Error::from(io::ErrorKind::Unsupported)))
    }
}

/// Runs the system call `call` (a count, or -1 with errno) when the socket
/// is writable, waiting while it would block.
fn poll_writing(
    socket: &tokio::net::TcpStream,
    cx: &mut Context<'_>,
    mut call: impl FnMut(i32) -> isize,
) -> Poll<io::Result<usize>> {
    loop {
        std::task::ready!(socket.poll_write_ready(cx))?;
        let done = socket.try_io(tokio::io::Interest::WRITABLE, || {
            match call(socket.as_raw_fd()) {
                n if n < 0 => Err(io::Error::last_os_error()),
                n => Ok(n as usize),
            }
        });
        match done {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            done => return Poll::Ready(done),
        }
    }
}

impl Sendfile for tokio::net::TcpStream {
    fn zero_copy(&self) -> bool {
        true
    }

    fn poll_write_more(
        &self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        poll_writing(self, cx, |fd| {
            // SAFETY: an all-zero msghdr is valid; IoSlice is ABI-compatible
            // with iovec on Unix, and `bufs` outlives the call.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
            msg.msg_iovlen = bufs.len().min(64) as _;
            unsafe { libc::sendmsg(fd, &msg, libc::MSG_MORE | libc::MSG_NOSIGNAL) }
        })
    }

    fn poll_sendfile(
        &self,
        cx: &mut Context<'_>,
        file: &File,
        offset: u64,
        len: usize,
    ) -> Poll<io::Result<usize>> {
        poll_writing(self, cx, |fd| {
            let mut off = offset as libc::off_t;
            // SAFETY: both descriptors are open for the whole call (the
            // socket is borrowed, the file held by an Arc), and `off` is a
            // valid pointer the kernel only reads and advances.
            unsafe { libc::sendfile(fd, file.as_raw_fd(), &mut off, len) }
        })
    }
}

impl<S> Sendfile for tokio_rustls::server::TlsStream<S> {}

/// In-process connections (the fuzz harness): bytes only.
impl Sendfile for tokio::io::DuplexStream {}

/// The connection's socket as hyper sees it: writes pass through, except
/// placeholders, which become `sendfile` calls.
pub struct ZeroCopyIo<S> {
    inner: S,
    queue: Option<Arc<SendQueue>>,
}

impl<S: Sendfile> ZeroCopyIo<S> {
    /// Wraps `inner`; the queue is there only when `enabled` (`[server]
    /// sendfile`) and the socket can take it.
    pub fn new(inner: S, enabled: bool) -> ZeroCopyIo<S> {
        let queue = (enabled && inner.zero_copy()).then(Arc::default);
        ZeroCopyIo { inner, queue }
    }

    /// The queue file bodies register on, for plain connections.
    pub fn queue(&self) -> Option<Arc<SendQueue>> {
        self.queue.clone()
    }

    /// Sends the placeholder `slice` (the first buffer of a write) as the
    /// file part it stands for.
    fn poll_part(&self, cx: &mut Context<'_>, slice: &[u8]) -> Poll<io::Result<usize>> {
        let broken = |why: &str| Poll::Ready(Err(io::Error::other(why.to_string())));
        let Some(queue) = &self.queue else {
            return broken("a zero-copy body on a connection without a queue");
        };
        let (file, offset, left) = {
            let parts = queue.lock();
            let Some(part) = parts.front() else {
                return broken("a zero-copy body part that was never registered");
            };
            // hyper advances through the placeholder as it writes, so what
            // is left of it starts `sent` bytes in and is exactly the rest.
            if placeholder_offset(slice) != Some(part.sent) || slice.len() != part.len - part.sent {
                return broken("a zero-copy body part out of place");
            }
            (
                part.file.clone(),
                part.offset + part.sent as u64,
                part.len - part.sent,
            )
        };
        let n = std::task::ready!(self.inner.poll_sendfile(cx, &file, offset, left))?;
        if n == 0 {
            // Truncated since it was opened: the response ends short, with
            // the connection, never padded.
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file is shorter than when it was opened",
            )));
        }
        let mut parts = queue.lock();
        if let Some(part) = parts.front_mut() {
            part.sent += n;
            if part.sent == part.len {
                parts.pop_front();
            }
        }
        Poll::Ready(Ok(n))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ZeroCopyIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Sendfile + Unpin> AsyncWrite for ZeroCopyIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.queue.is_some() && placeholder_offset(buf).is_some() {
            return this.poll_part(cx, buf);
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.queue.is_none() {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        // Everything before the first placeholder goes as one write, told
        // that the placeholder's bytes follow; a placeholder first goes
        // alone, by sendfile.
        let first = bufs
            .iter()
            .position(|b| !b.is_empty() && placeholder_offset(b).is_some());
        match first {
            Some(0) => this.poll_part(cx, &bufs[0]),
            Some(n) => this.inner.poll_write_more(cx, &bufs[..n]),
            None => Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        // Always true with a queue: hyper then queues body buffers as they
        // are instead of copying them into its own (which would lose the
        // placeholders' identity).
        self.queue.is_some() || self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_recognised_by_address_only() {
        let queue = SendQueue::default();
        let file = Arc::new(File::open("/dev/null").unwrap());
        let ph = queue.push(file, 0, 10);
        assert_eq!(placeholder_offset(&ph), Some(0));
        assert_eq!(placeholder_offset(&ph[3..]), Some(3));
        // Zeros elsewhere are ordinary bytes.
        assert_eq!(placeholder_offset(&[0u8; 10]), None);
        // Parts are capped at the region's size.
        let big = queue.push(Arc::new(File::open("/dev/null").unwrap()), 0, PART * 2);
        assert_eq!(big.len(), PART);
    }
}
