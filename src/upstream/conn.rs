//! One HTTP/1.1 connection to an origin, driven by the task that is using it.
//!
//! hyper's client connection is a future (the "driver") that writes requests
//! and reads responses. hyper-util spawns it as a task of its own, so every
//! request crosses tasks twice (the request over a channel to the driver, the
//! response and each body chunk back) and both tasks are woken per request,
//! often on different workers. Here the driver is polled from the request's
//! own task: while waiting for the connection to be ready, for the response
//! head, and from the response body's `poll_frame` (`OriginBody`), so the
//! exchange runs without a task switch. An idle connection in the pool is
//! polled by nobody; the pool polls it once at checkout (and at each sweep),
//! which is when hyper notices an origin's close or bytes nobody asked for.
//!
//! A request that asks for an upgrade (RFC 9110 §7.8) hands its driver to a
//! task of its own with hyper's upgrade support, as before: after a 101 the
//! socket belongs to the tunnel, not to any request.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::sync::OwnedSemaphorePermit;

use super::error;
use super::fold::Fold;
use super::socket::{Peeker, Socket};
use crate::http::body::RequestBody;

type Driver = Connection<TokioIo<Socket>, RequestBody>;

enum Drive {
    /// Polled by whoever holds the `Conn`. Boxed: the `Conn` moves between
    /// the pool, the request and the body several times per request, and
    /// hyper's connection state is large.
    Here(Box<Driver>),
    /// Running in a task of its own (a request that asked for an upgrade).
    Elsewhere,
    /// The connection is over (closed by either side, or failed).
    Ended,
}

/// One HTTP/1.1 connection to an origin, busy or idle.
pub struct Conn {
    sender: SendRequest<RequestBody>,
    drive: Drive,
    pub peeker: Peeker,
    /// Pool key: the origin's authority.
    pub origin: Arc<str>,
    /// Taken from the idle list (a stale connection is possible) rather than new.
    pub reused: bool,
    /// The connection's place under the per-origin cap: freed when it closes.
    slot: Option<OwnedSemaphorePermit>,
    /// The pool's generation when it was opened (see `Pool::clear`).
    pub generation: u64,
    fold: Fold,
}

impl Conn {
    pub fn new(
        sender: SendRequest<RequestBody>,
        driver: Driver,
        peeker: Peeker,
        origin: Arc<str>,
        slot: OwnedSemaphorePermit,
        generation: u64,
    ) -> Conn {
        Conn {
            generation,
            sender,
            drive: Drive::Here(Box::new(driver)),
            peeker,
            origin,
            reused: false,
            slot: Some(slot),
            fold: Fold::new(),
        }
    }

    /// Moves the connection's state machine on: writes what is queued, reads
    /// what arrived, hands response data to the waiting body.
    pub fn drive(&mut self, cx: &mut Context<'_>) {
        drive(&mut self.drive, &self.peeker, cx);
    }

    /// Polls `f` beside the connection (which feeds what `f` waits for),
    /// folding the wakes they send each other into one poll (`fold.rs`).
    pub fn poll_beside<R>(
        &mut self,
        cx: &mut Context<'_>,
        mut f: impl FnMut(&mut SendRequest<RequestBody>, &mut Context<'_>) -> Poll<R>,
    ) -> Poll<R> {
        let Conn {
            fold,
            drive: state,
            sender,
            peeker,
            ..
        } = self;
        fold.poll(cx, |cx| {
            drive(state, peeker, cx);
            f(sender, cx)
        })
    }

    /// Polls an idle connection once, with no task to wake: hyper then reads
    /// an origin's close, or bytes that arrived unasked, if there are any.
    pub fn look(&mut self) {
        self.drive(&mut Context::from_waker(Waker::noop()));
    }

    /// The connection cannot carry another request.
    pub fn is_closed(&self) -> bool {
        matches!(self.drive, Drive::Ended) || self.sender.is_closed()
    }

    /// Hands the driver to a task of its own with upgrade support, for a
    /// request that may be answered with 101 Switching Protocols.
    pub fn drive_elsewhere_with_upgrades(&mut self) {
        let Drive::Here(driver) = std::mem::replace(&mut self.drive, Drive::Elsewhere) else {
            return;
        };
        let slot = self.slot.take();
        let watch = self.peeker.watch.clone();
        tokio::spawn(async move {
            if let Err(e) = (*driver).with_upgrades().await {
                if error::mentions(&e, "unexpected message") {
                    watch.flag_unsolicited();
                }
                tracing::debug!(error = %e, "origin connection ended");
            }
            // The origin's slot frees only when the connection is gone.
            drop(slot);
        });
    }

    /// Whether the connection can take a request now (a pooled one usually
    /// can: hyper said so when its last response ended).
    pub fn ready_now(&mut self) -> bool {
        matches!(
            self.sender
                .poll_ready(&mut Context::from_waker(Waker::noop())),
            Poll::Ready(Ok(()))
        )
    }

    /// Waits until the connection can take a request.
    pub async fn ready(&mut self) -> hyper::Result<()> {
        poll_fn(|cx| self.poll_beside(cx, |sender, cx| sender.poll_ready(cx))).await
    }

    /// Writes `req` and waits for the response head, driving the connection
    /// meanwhile (which also streams the request body).
    pub async fn send(&mut self, req: Request<RequestBody>) -> hyper::Result<Response<Incoming>> {
        // Queueing the request wakes the driver, which is polled right below.
        let response = self.fold.quietly(|| self.sender.send_request(req));
        let mut response = std::pin::pin!(response);
        poll_fn(|cx| self.poll_beside(cx, |_, cx| response.as_mut().poll(cx))).await
    }
}

fn drive(state: &mut Drive, peeker: &Peeker, cx: &mut Context<'_>) {
    let Drive::Here(driver) = state else {
        return;
    };
    if let Poll::Ready(result) = Pin::new(&mut **driver).poll(cx) {
        if let Err(e) = result {
            // hyper refuses bytes that arrive on an idle connection.
            if error::mentions(&e, "unexpected message") {
                peeker.watch.flag_unsolicited();
            }
            tracing::debug!(error = %e, "origin connection ended");
        }
        *state = Drive::Ended;
    }
}
