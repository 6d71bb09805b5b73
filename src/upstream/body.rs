//! An origin's response body: hands its connection back to the pool once the
//! body has been read to the end, and ends as an error when the origin goes
//! silent in the middle of it for longer than `[upstream] body_idle_timeout`
//! (a stalled body would otherwise hold the client, and every request
//! collapsed onto it, for as long as TCP keeps the connection up).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use crate::sharded::Counter;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::conn::Conn;
use super::pool::Pool;
use crate::http::body::BoxError;

/// The origin stopped sending in the middle of a body.
#[derive(Debug)]
pub struct BodyStalled(pub Duration);

impl fmt::Display for BodyStalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the origin sent nothing for {} in the middle of the body",
            humantime::format_duration(self.0)
        )
    }
}

impl std::error::Error for BodyStalled {}

/// The connection proved out of step with its origin before this body ended:
/// the body may answer another request, so it must not look complete.
#[derive(Debug)]
pub struct Desynchronised;

impl fmt::Display for Desynchronised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the origin sent a response nobody asked for on this connection")
    }
}

impl std::error::Error for Desynchronised {}

pub struct OriginBody {
    inner: Incoming,
    /// The HTTP/1.1 connection the body arrives on, driven from `poll_frame`
    /// (see `conn.rs`) until the body ends; `None` after that, and over
    /// HTTP/2 (whose connection runs in its own task).
    conn: Option<Conn>,
    /// Where the connection goes back at the end of the body; `None` when it
    /// may not be reused.
    pool: Option<Arc<Pool>>,
    idle_timeout: Duration,
    /// Armed the first time the body waits; pushed back whenever data came.
    timer: Option<Pin<Box<Sleep>>>,
    progressed: bool,
    stalls: Counter,
}

impl OriginBody {
    pub(super) fn new(
        inner: Incoming,
        conn: Option<Conn>,
        pool: Option<Arc<Pool>>,
        idle_timeout: Duration,
        stalls: Counter,
    ) -> OriginBody {
        let mut body = OriginBody {
            inner,
            conn,
            pool,
            idle_timeout,
            timer: None,
            progressed: false,
            stalls,
        };
        // HEAD, 204 and 304 answers have no body to read.
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    /// The body has ended: the connection goes back to the pool, or closes.
    fn release(&mut self) {
        if let (Some(conn), Some(pool)) = (self.conn.take(), self.pool.take()) {
            pool.checkin(conn);
        }
    }

    /// The body failed: the connection is not reused.
    fn abandon(&mut self) {
        self.conn = None;
        self.pool = None;
    }
}

impl Body for OriginBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let inner = &mut this.inner;
        let polled = match this.conn.as_mut() {
            Some(conn) => conn.poll_beside(cx, |_, cx| Pin::new(&mut *inner).poll_frame(cx)),
            None => Pin::new(inner).poll_frame(cx),
        };
        match polled {
            Poll::Ready(frame) => {
                this.progressed = true;
                // A body of known length is not polled past its end.
                let ended = match &frame {
                    None => true,
                    Some(Ok(_)) => this.inner.is_end_stream(),
                    Some(Err(_)) => {
                        this.abandon();
                        false
                    }
                };
                if ended {
                    let desynced = this
                        .conn
                        .as_ref()
                        .is_some_and(|conn| conn.peeker.watch.unsolicited());
                    if desynced {
                        this.abandon();
                        return Poll::Ready(Some(Err(Box::new(Desynchronised))));
                    }
                    this.release();
                }
                Poll::Ready(frame.map(|f| f.map_err(BoxError::from)))
            }
            Poll::Pending => {
                let deadline = Instant::now() + this.idle_timeout;
                match this.timer.as_mut() {
                    None => this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    Some(timer) if this.progressed => timer.as_mut().reset(deadline),
                    Some(_) => {}
                }
                this.progressed = false;
                let timer = this.timer.as_mut().expect("armed above");
                ready!(timer.as_mut().poll(cx));
                this.abandon();
                this.stalls.inc();
                Poll::Ready(Some(Err(Box::new(BodyStalled(this.idle_timeout)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
