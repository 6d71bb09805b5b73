//! The downstream side: listeners, the connection limit, per-connection
//! timeouts, and graceful drain.

mod activity;
mod catch;
mod connection;
mod head_guard;
mod listeners;
mod slot;
mod zero_copy;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use activity::{Activity, InFlight};
pub use connection::ConnectionSettings;
pub(crate) use connection::{serve as serve_connection, Accepted};
pub(crate) use head_guard::observe_in_reads;
pub use listeners::{Listeners, Shared};
pub use slot::ConnectionSlot;
pub use zero_copy::{SendQueue, PART as ZERO_COPY_PART};

use crate::tls::TlsServer;

/// Lifecycle of the listeners, broadcast to every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// Stop accepting; finish in-flight requests, close idle connections.
    Draining,
    /// The drain timed out: close everything now.
    Stop,
}

/// Accepts connections until the phase leaves `Running`. At most
/// `limit`'s permits are served at once: when they are all taken the loop stops
/// accepting (the kernel backlog holds new clients) instead of failing. With
/// `tls`, each connection first completes a TLS handshake in its own task.
async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<Arc<TlsServer>>,
    mut phase: watch::Receiver<Phase>,
) {
    let limit = &shared.limit;
    loop {
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = phase.changed() => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Typically EMFILE/ENFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed; retrying shortly");
                    drop(permit);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = phase.changed() => return,
        };
        // Small responses must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(peer);
        let handler = shared.handler.clone();
        // A reload's settings apply from the next connection on.
        let settings = shared.settings.load_full();
        let mut phase = phase.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let Some(tls) = tls else {
                let accepted = Accepted {
                    peer,
                    local,
                    tls: false,
                    permit: Some(permit),
                };
                connection::serve(stream, accepted, handler, settings, phase).await;
                return;
            };
            // The handshake has its own deadline: a client that connects and
            // sends nothing (or stalls half way) holds a connection slot only
            // that long, and a failure ends this connection alone.
            let handshake =
                tokio::time::timeout(settings.handshake_timeout, tls.acceptor().accept(stream));
            let failed = |reason: &'static str| {
                handler
                    .metrics()
                    .tls_handshake_errors
                    .get_or_create(&crate::metrics::ReasonLabels { reason })
                    .inc();
            };
            let stream = tokio::select! {
                done = handshake => match done {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        let reason = crate::tls::handshake_failure(&e);
                        tracing::debug!(%peer, reason, error = %e, "TLS handshake failed");
                        failed(reason);
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        failed("timeout");
                        return;
                    }
                },
                _ = phase.changed() => return,
            };
            let accepted = Accepted {
                peer,
                local,
                tls: true,
                permit: Some(permit),
            };
            connection::serve(stream, accepted, handler, settings, phase).await;
        });
    }
}

/// Binds every address, failing with a message that names the one that failed.
pub async fn bind_all(addrs: &[SocketAddr]) -> Result<Vec<TcpListener>, String> {
    let mut listeners = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        listeners.push(listener);
    }
    Ok(listeners)
}
