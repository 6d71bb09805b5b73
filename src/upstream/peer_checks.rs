//! Active health checks of cache peers: `OPTIONS *` on a new connection to
//! each other node's proxy port every `interval`. The node answers it
//! itself (RFC 9110 §9.3.7), so the check says whether the node is up, not
//! whether some origin is. `fall` failures in a row take a node out of the
//! owner ranking before any request has to fail on it; `rise` passes bring
//! it back. Requests that fail still pass a node over at once (passive).

use std::sync::atomic::Ordering;
use std::sync::Weak;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;

use super::peers::Cluster;
use crate::config::PeerCheckConfig;

pub async fn run(cluster: Weak<Cluster>, index: usize, check: PeerCheckConfig) {
    let mut streak = super::streak::Streak::default();
    let mut tick = tokio::time::interval(check.interval.get());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(addr) = cluster.upgrade().map(|c| c.peer_addr(index)) else {
            return;
        };
        let ok = tokio::time::timeout(check.timeout.get(), probe(addr))
            .await
            .is_ok_and(|status| status == Some(200));
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        let peer = cluster.peer(index);
        let down = peer.checked_down.load(Ordering::Relaxed);
        match streak.record(ok, down, check.rise, check.fall) {
            Some(true) => {
                peer.checked_down.store(false, Ordering::Relaxed);
                tracing::info!(peer = %addr, "cache peer passed its health checks: up");
            }
            Some(false) => {
                peer.checked_down.store(true, Ordering::Relaxed);
                tracing::warn!(peer = %addr, "cache peer failed its health checks: down, its keys move");
            }
            None => {}
        }
    }
}

/// The status of one `OPTIONS *`, or `None` when there was no answer.
async fn probe(addr: std::net::SocketAddr) -> Option<u16> {
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = Request::builder()
        .method(Method::OPTIONS)
        .uri("*")
        .header(http::header::HOST, addr.to_string())
        .header(http::header::USER_AGENT, "viaduct-peer-check")
        .body(Empty::<Bytes>::new())
        .ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .ok()?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.ok()?;
    Some(resp.status().as_u16())
}
