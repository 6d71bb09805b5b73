//! Body types shared by every layer: the error type bodies carry, and the
//! client's request body as it goes upstream, with its size limit.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body grew past `[server] max_request_body`.
#[derive(Debug)]
pub struct BodyTooLarge(pub u64);

impl fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request body exceeds {} bytes", self.0)
    }
}

impl std::error::Error for BodyTooLarge {}

/// The client's request body as sent upstream.
pub enum RequestBody {
    Empty,
    Streaming {
        inner: Incoming,
        /// Bytes still allowed; `None` means unlimited.
        remaining: Option<u64>,
        limit: u64,
        /// Raised by whoever reads the wire (the connection's head guard)
        /// when a chunk size passes the limit before its data arrives; the
        /// body ends then, not a limit later.
        oversized: Arc<Oversized>,
        index: u64,
    },
}

impl RequestBody {
    /// Wraps a client body; `limit` 0 means unlimited. `index` is the
    /// request's place on its connection, as `oversized` counts them.
    pub fn new(inner: Incoming, limit: u64, oversized: Arc<Oversized>, index: u64) -> RequestBody {
        if inner.is_end_stream() {
            return RequestBody::Empty;
        }
        RequestBody::Streaming {
            inner,
            remaining: (limit > 0).then_some(limit),
            limit,
            oversized,
            index,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Streaming {
                inner,
                remaining,
                limit,
                oversized,
                index,
            } => {
                let frame = ready!(Pin::new(inner).poll_frame(cx));
                if oversized.is_marked(*index) {
                    return Poll::Ready(Some(Err(Box::new(BodyTooLarge(*limit)))));
                }
                if let (Some(Ok(frame)), Some(left)) = (&frame, remaining.as_mut()) {
                    if let Some(data) = frame.data_ref() {
                        let len = data.len() as u64;
                        if len > *left {
                            return Poll::Ready(Some(Err(Box::new(BodyTooLarge(*limit)))));
                        }
                        *left -= len;
                    }
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Streaming { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Streaming { inner, .. } => inner.size_hint(),
        }
    }
}

/// Which request on a connection (by index) announced a body past the
/// limit; `u64::MAX` when none did.
#[derive(Debug)]
pub struct Oversized(AtomicU64);

impl Default for Oversized {
    fn default() -> Self {
        Oversized(AtomicU64::new(u64::MAX))
    }
}

impl Oversized {
    pub fn mark(&self, request_index: u64) {
        self.0.store(request_index, Ordering::Release);
    }

    pub fn is_marked(&self, request_index: u64) -> bool {
        self.0.load(Ordering::Acquire) == request_index
    }
}
