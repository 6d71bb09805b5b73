//! The downstream side: listeners, the connection limit, per-connection
//! timeouts, and graceful drain.

mod activity;
mod connection;
mod head_guard;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

pub use activity::{Activity, InFlight};
pub use connection::ConnectionSettings;

use crate::proxy::Handler;

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
/// accepting (the kernel backlog holds new clients) instead of failing.
pub async fn accept_loop(
    listener: TcpListener,
    limit: Arc<Semaphore>,
    handler: Arc<Handler>,
    settings: Arc<ConnectionSettings>,
    mut phase: watch::Receiver<Phase>,
) {
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
        let handler = handler.clone();
        let settings = settings.clone();
        let phase = phase.clone();
        tokio::spawn(async move {
            connection::serve(stream, peer, handler, settings, phase).await;
            drop(permit);
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
