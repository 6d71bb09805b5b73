//! Body types that stream through the proxy without buffering: the request body
//! on its way upstream (with the size limit), and the response body on its way to
//! the client (counting bytes for the access log and marking the request done).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::upstream::OriginBody;

use super::fill_task::FlightBody;
use crate::access_log::Completion;
use crate::cache::fill::Fill;
use crate::http::body::BoxError;
use crate::server::{InFlight, SendQueue};

/// The response body sent to the client.
pub struct ProxyBody {
    kind: Kind,
    done: Option<Completion>,
    /// Counts the request as in flight on its connection until the body is
    /// finished or dropped (the keep-alive idle clock starts after it).
    in_flight: Option<InFlight>,
    /// Copies the body into the cache; stored only if the body ends whole.
    /// Boxed: most responses carry none, and the body moves around a lot.
    fill: Option<Box<Fill>>,
}

enum Kind {
    Full(Option<Bytes>),
    Upstream(OriginBody),
    /// Shared with other requests through a collapsed fetch.
    Flight(FlightBody),
    /// Produced by a task (an object served from its slices): `left` bytes
    /// are still owed; the channel closing before that is an error, so the
    /// client never takes a short body for a whole one.
    Channel {
        rx: tokio::sync::mpsc::Receiver<Result<Bytes, BoxError>>,
        left: u64,
    },
    /// `left` bytes of `file` from `offset`, sent by the kernel: each part
    /// is registered on the connection's queue and hyper gets a placeholder
    /// for it (`server/zero_copy.rs`). Never copied into the cache.
    File {
        queue: Arc<SendQueue>,
        file: Arc<std::fs::File>,
        offset: u64,
        left: u64,
    },
}

impl ProxyBody {
    pub fn empty() -> ProxyBody {
        ProxyBody::full(Bytes::new())
    }

    pub fn full(bytes: Bytes) -> ProxyBody {
        ProxyBody {
            kind: Kind::Full((!bytes.is_empty()).then_some(bytes)),
            done: None,
            in_flight: None,
            fill: None,
        }
    }

    pub fn upstream(body: OriginBody) -> ProxyBody {
        ProxyBody {
            kind: Kind::Upstream(body),
            done: None,
            in_flight: None,
            fill: None,
        }
    }

    pub(crate) fn flight(body: FlightBody) -> ProxyBody {
        ProxyBody {
            kind: Kind::Flight(body),
            done: None,
            in_flight: None,
            fill: None,
        }
    }

    /// A body of exactly `length` bytes sent by a task through `rx`.
    pub fn channel(
        rx: tokio::sync::mpsc::Receiver<Result<Bytes, BoxError>>,
        length: u64,
    ) -> ProxyBody {
        ProxyBody {
            kind: Kind::Channel { rx, left: length },
            done: None,
            in_flight: None,
            fill: None,
        }
    }

    /// `length` bytes of `file` from `offset`, for `sendfile` on the
    /// connection that owns `queue`.
    pub fn file(
        queue: Arc<SendQueue>,
        file: Arc<std::fs::File>,
        offset: u64,
        length: u64,
    ) -> ProxyBody {
        ProxyBody {
            kind: Kind::File {
                queue,
                file,
                offset,
                left: length,
            },
            done: None,
            in_flight: None,
            fill: None,
        }
    }

    /// Tees the body into the cache.
    pub fn with_fill(mut self, fill: Fill) -> ProxyBody {
        if self.kind_is_end_stream() {
            // An empty body (Content-Length: 0, 204) is never polled.
            fill.finish();
        } else {
            self.fill = Some(Box::new(fill));
        }
        self
    }

    /// Attaches the bookkeeping run when the body ends or is dropped.
    pub fn with_completion(mut self, done: Completion, in_flight: InFlight) -> ProxyBody {
        self.done = Some(done);
        self.in_flight = Some(in_flight);
        self
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // hyper stops polling once a body of known length has been read, so
        // "ended" is also "nothing left to send".
        let ended = self.kind_is_end_stream();
        if let (true, Some(done)) = (ended, self.done.as_mut()) {
            done.mark_complete();
        }
    }
}

impl ProxyBody {
    fn kind_is_end_stream(&self) -> bool {
        self.kind.is_end_stream()
    }
}

impl Kind {
    fn is_end_stream(&self) -> bool {
        match self {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Upstream(body) => body.is_end_stream(),
            Kind::Flight(body) => body.is_end_stream(),
            Kind::Channel { left, .. } | Kind::File { left, .. } => *left == 0,
        }
    }
}

/// Copies `frame` into `fill`: the fill is finished when the body ends
/// (`ended`: hyper stops polling a body of known length once it is read),
/// and dropped, storing nothing, when the body fails or outgrows it.
fn tee<E>(fill: &mut Option<Box<Fill>>, frame: &Option<Result<Frame<Bytes>, E>>, ended: bool) {
    match frame {
        Some(Ok(f)) => {
            if let (Some(data), Some(f)) = (f.data_ref(), fill.as_mut()) {
                if !f.push(data) {
                    *fill = None;
                }
            }
            if ended {
                if let Some(fill) = fill.take() {
                    fill.finish();
                }
            }
        }
        None => {
            if let Some(fill) = fill.take() {
                fill.finish();
            }
        }
        // An origin that fails mid-body leaves nothing stored.
        Some(Err(_)) => *fill = None,
    }
}

/// The rest of an origin body that outgrew memory, read by the leader of
/// a collapsed fetch alone, copied into `fill` (to disk) on the way.
pub struct Teed {
    body: OriginBody,
    fill: Option<Box<Fill>>,
}

impl Teed {
    pub fn new(body: OriginBody, fill: Option<Fill>) -> Teed {
        Teed {
            body,
            fill: fill.map(Box::new),
        }
    }
}

impl Body for Teed {
    type Data = Bytes;
    type Error = <OriginBody as Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        tee(&mut this.fill, &frame, this.body.is_end_stream());
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let frame = match &mut this.kind {
            Kind::Full(bytes) => bytes.take().map(|b| Ok(Frame::data(b))),
            Kind::Upstream(body) => {
                ready!(Pin::new(body).poll_frame(cx))
            }
            Kind::Flight(body) => ready!(Pin::new(body).poll_frame(cx)),
            Kind::Channel { rx, left } => match ready!(rx.poll_recv(cx)) {
                Some(Ok(data)) => {
                    *left = left.saturating_sub(data.len() as u64);
                    Some(Ok(Frame::data(data)))
                }
                Some(Err(e)) => Some(Err(e)),
                None if *left > 0 => Some(Err("the object's slices ended early".into())),
                None => None,
            },
            Kind::File {
                queue,
                file,
                offset,
                left,
            } => {
                // Placeholders are not the bytes: nothing may keep them.
                this.fill = None;
                if *left == 0 {
                    None
                } else {
                    let part = (*left).min(crate::server::ZERO_COPY_PART as u64);
                    let data = queue.push(file.clone(), *offset, part as usize);
                    *offset += part;
                    *left -= part;
                    Some(Ok(Frame::data(data)))
                }
            }
        };
        tee(&mut this.fill, &frame, this.kind.is_end_stream());
        if let Some(done) = this.done.as_mut() {
            match &frame {
                Some(Ok(f)) => {
                    if let Some(data) = f.data_ref() {
                        done.add_bytes(data.len() as u64);
                    }
                }
                None => done.mark_complete(),
                Some(Err(_)) => {}
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.kind_is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Upstream(body) => body.size_hint(),
            Kind::Flight(body) => body.size_hint(),
            Kind::Channel { left, .. } | Kind::File { left, .. } => SizeHint::with_exact(*left),
        }
    }
}
