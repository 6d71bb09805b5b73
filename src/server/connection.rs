//! Serving one accepted client connection: hyper (HTTP/1.1, h2c) over the head
//! guard, plus a watchdog for the header-read and keep-alive idle timeouts, and
//! the reaction to shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::activity::{Activity, Verdict};
use super::head_guard::HeadGuard;
use super::slot::ConnectionSlot;
use super::zero_copy::{Sendfile, ZeroCopyIo};
use super::Phase;
use crate::config::ServerConfig;
use crate::proxy::{ClientConn, Handler};

/// Per-listener settings built once and shared by every connection.
pub struct ConnectionSettings {
    builder: auto::Builder<TokioExecutor>,
    /// `[tls] handshake_timeout`.
    pub handshake_timeout: Duration,
    header_timeout_ms: u64,
    idle_timeout_ms: u64,
    max_head: usize,
    max_body: u64,
    sendfile: bool,
}

impl ConnectionSettings {
    pub fn new(server: &ServerConfig, handshake_timeout: Duration) -> ConnectionSettings {
        let max_head = server.max_header_size.bytes() as usize;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            // Our watchdog owns this timeout: hyper's also runs while a
            // persistent connection waits for its next request.
            .header_read_timeout(None)
            // A head that does not fit the read buffer is answered with 431;
            // hyper's auto builder exposes no separate header limit.
            .max_buf_size(max_head.max(8192))
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(max_head.min(u32::MAX as usize) as u32);
        if !server.http2 {
            builder = builder.http1_only();
        }
        ConnectionSettings {
            builder,
            handshake_timeout,
            header_timeout_ms: server.header_read_timeout.get().as_millis() as u64,
            idle_timeout_ms: server.keepalive_timeout.get().as_millis() as u64,
            max_head,
            max_body: server.max_request_body.bytes(),
            sendfile: server.sendfile,
        }
    }
}

/// Where a connection came from and how.
pub struct Accepted {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub tls: bool,
    /// The connection's place under `max_connections`.
    pub permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Serves one connection, plain or already through its TLS handshake.
pub async fn serve<S>(
    stream: S,
    accepted: Accepted,
    handler: Arc<Handler>,
    settings: Arc<ConnectionSettings>,
    mut phase: watch::Receiver<Phase>,
) where
    S: AsyncRead + AsyncWrite + Sendfile + Unpin + Send + 'static,
{
    let Accepted {
        peer,
        local,
        tls,
        permit,
    } = accepted;
    // Held by the connection and by a tunnel or upgrade it turns into.
    let slot = Arc::new(ConnectionSlot::new(
        permit,
        handler.metrics().client_connections.clone(),
        phase.clone(),
    ));
    let activity = Activity::new();
    let stream = ZeroCopyIo::new(stream, settings.sendfile);
    let client = Arc::new(ClientConn {
        peer,
        local,
        tls,
        address: crate::http::headers::ClientAddress::new(peer.ip()),
        activity: activity.clone(),
        slot,
        zero_copy: stream.queue(),
    });
    let io = TokioIo::new(HeadGuard::new(
        stream,
        activity.clone(),
        settings.max_head,
        settings.max_body,
    ));
    let panics = handler.metrics().panics.clone();
    let service = service_fn(move |req| {
        let handler = handler.clone();
        let client = client.clone();
        super::catch::answer_or_500(
            async move { handler.handle(req, &client).await },
            panics.clone(),
        )
    });
    let conn = settings.builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);

    let mut draining = false;
    let mut recheck = Duration::ZERO;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "client connection ended with an error");
                }
                return;
            }
            changed = phase.changed() => {
                let now = if changed.is_ok() { *phase.borrow() } else { Phase::Stop };
                match now {
                    Phase::Running => {}
                    Phase::Draining if !draining => {
                        draining = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    Phase::Draining => {}
                    Phase::Stop => return,
                }
            }
            _ = tokio::time::sleep(recheck) => {
                match activity.verdict(settings.header_timeout_ms, settings.idle_timeout_ms) {
                    Verdict::HeaderTimeout => {
                        tracing::debug!(%peer, "closing: no complete request head in time");
                        return;
                    }
                    Verdict::Idle if draining => return,
                    Verdict::Idle => {
                        draining = true;
                        conn.as_mut().graceful_shutdown();
                        recheck = Duration::from_millis(settings.idle_timeout_ms);
                    }
                    Verdict::RecheckIn(ms) => recheck = Duration::from_millis(ms.max(1)),
                }
            }
        }
    }
}
