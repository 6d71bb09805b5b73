//! Cache peers (`[cluster]`): every URL of a reverse route has one owner
//! among the nodes, chosen by rendezvous hashing (each node scores every
//! (node, key) pair the same way; the highest score owns the key). A node
//! that is not the owner sends its miss to the owner, one hop, marked with
//! `Viaduct-Peer` so the owner fetches it itself and never passes it on.
//! The owner's cache then holds the one copy the cluster shares; the asker
//! keeps a short local copy (`local_ttl`). A peer that cannot be reached is
//! passed over for `passed_over::DOWN_FOR`, and its keys go to their next-best owner.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, Uri};

use super::failover::Unsent;
use super::passed_over::PassedOver;
use super::{OriginBody, StoreTag, Upstream, UpstreamError};
use crate::http::body::RequestBody;

/// Marks a request sent by a peer (its value: the scheme the first node's
/// client used, for the owner's key). Trusted only from a peer's address.
pub static PEER_HEADER: HeaderName = HeaderName::from_static("viaduct-peer");

/// On a response fetched through the owner: keep it at most this long.
#[derive(Debug, Clone, Copy)]
pub struct PeerCopy(pub Duration);

pub(super) struct Peer {
    addr: SocketAddr,
    authority: Authority,
    /// Hashed with each key.
    seed: u64,
    /// Passive: a request could not reach it.
    state: PassedOver,
    /// Active: it failed its health checks (`peer_checks.rs`).
    pub(super) checked_down: std::sync::atomic::AtomicBool,
}

pub struct Cluster {
    peers: Box<[Peer]>,
    /// This node's index in `peers`.
    me: usize,
    local_ttl: Duration,
    /// Connections to the other nodes (operator-chosen: not guarded).
    pool: Arc<Upstream>,
    metrics: super::parents::ParentMetrics,
}

/// Where a request for a key another node owns goes, from `prepare`.
#[derive(Clone)]
pub struct PeerHop {
    pub cluster: Arc<Cluster>,
    score_key: u64,
    /// The `Host` the client sent (the owner routes by it).
    pub host: HeaderValue,
    /// `http` or `https`: what the client used, for the owner's key.
    pub proto: &'static str,
}

impl Peer {
    fn is_up(&self, now: Instant) -> bool {
        self.state.is_up(now) && !self.checked_down.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Cluster {
    /// Starts the active checks of the other nodes (they end with the
    /// cluster, e.g. when a reload replaces it).
    pub fn start_checks(self: &Arc<Self>, check: crate::config::PeerCheckConfig) {
        if check.interval.get().is_zero() || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        for index in (0..self.peers.len()).filter(|i| *i != self.me) {
            tokio::spawn(super::peer_checks::run(Arc::downgrade(self), index, check));
        }
    }

    pub(super) fn peer_addr(&self, index: usize) -> SocketAddr {
        self.peers[index].addr
    }

    pub(super) fn peer(&self, index: usize) -> &Peer {
        &self.peers[index]
    }

    /// `None` unless `me` is one of `peers` (the configuration checks it).
    pub fn new(
        peers: &[SocketAddr],
        me: SocketAddr,
        local_ttl: Duration,
        pool: Arc<Upstream>,
        metrics: super::parents::ParentMetrics,
    ) -> Option<Cluster> {
        let me = peers.iter().position(|p| *p == me)?;
        let peers = peers
            .iter()
            .map(|addr| Peer {
                addr: *addr,
                authority: addr
                    .to_string()
                    .parse()
                    .expect("a socket address is an authority"),
                seed: hash(addr.to_string().as_bytes(), 0),
                state: PassedOver::default(),
                checked_down: Default::default(),
            })
            .collect();
        Some(Cluster {
            peers,
            me,
            local_ttl,
            pool,
            metrics,
        })
    }

    /// Whether a request from `ip` may carry `Viaduct-Peer`.
    pub fn is_peer(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.peers.iter().any(|p| p.addr.ip().to_canonical() == ip)
    }

    /// The hop to the owner of `key`, or `None` when this node owns it (or
    /// every node that would own it before this one is down).
    pub fn hop(
        self: &Arc<Self>,
        key: &str,
        host: HeaderValue,
        proto: &'static str,
    ) -> Option<PeerHop> {
        let score_key = hash(key.as_bytes(), 0);
        let first = self.ranked(score_key).next()?;
        (first != self.me).then(|| PeerHop {
            cluster: self.clone(),
            score_key,
            host,
            proto,
        })
    }

    /// The nodes in the order they own `key` (rendezvous), skipping those
    /// down, ending at this node (which is always up for itself).
    fn ranked(&self, score_key: u64) -> impl Iterator<Item = usize> + '_ {
        let now = Instant::now();
        let mut order: Vec<(u64, usize)> = self
            .peers
            .iter()
            .enumerate()
            .filter(|(i, p)| *i == self.me || p.is_up(now))
            .map(|(i, p)| (mix(p.seed ^ score_key), i))
            .collect();
        order.sort_unstable_by(|a, b| b.cmp(a));
        let me = self.me;
        order
            .into_iter()
            .map(|(_, i)| i)
            .take_while(move |i| *i != me)
            .chain(std::iter::once(me))
    }

    fn count(&self, peer: &str, answered: bool) {
        super::parents::count(&self.metrics, peer, answered);
    }

    /// Every node, whether it is up (as this node sees it), and which is this one.
    pub fn state(&self) -> Vec<(SocketAddr, bool, bool)> {
        let now = Instant::now();
        self.peers
            .iter()
            .enumerate()
            .map(|(i, p)| (p.addr, i == self.me || p.is_up(now), i == self.me))
            .collect()
    }

    /// The owner of `key` among the nodes (for tests and the dashboard).
    pub fn owner(&self, key: &str) -> SocketAddr {
        let first = self
            .ranked(hash(key.as_bytes(), 0))
            .next()
            .unwrap_or(self.me);
        self.peers[first].addr
    }
}

impl Upstream {
    /// Sends a request to the owner of its key (origin-form, the client's
    /// Host, marked); a node that cannot be reached gives the request
    /// (nothing of it sent) to the next owner, and when the next owner is
    /// this node, `Err` hands it back to be sent to the origin.
    pub(super) async fn send_peer(
        &self,
        req: Request<RequestBody>,
        hop: &PeerHop,
    ) -> Result<Response<OriginBody>, Result<Request<RequestBody>, UpstreamError>> {
        let cluster = &hop.cluster;
        let (mut parts, body) = req.into_parts();
        let tag = parts.extensions.remove::<StoreTag>();
        let origin_uri = parts.uri.clone();
        let path = origin_uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = Uri::from(path);
        parts.headers.insert(header::HOST, hop.host.clone());
        parts
            .headers
            .insert(PEER_HEADER.clone(), HeaderValue::from_static(hop.proto));
        let mut next = Request::from_parts(parts, body);
        for index in cluster.ranked(hop.score_key) {
            if index == cluster.me {
                break;
            }
            let peer = &cluster.peers[index];
            let mut req = next;
            if let Some(tag) = &tag {
                req.extensions_mut().insert(tag.clone());
            }
            let label = peer.authority.as_str();
            let result = cluster
                .pool
                .send_via(req, label, &peer.authority, "peer")
                .await;
            cluster.count(label, result.is_ok());
            match result {
                Ok(mut resp) => {
                    peer.state.mark(true);
                    resp.extensions_mut().insert(PeerCopy(cluster.local_ttl));
                    return Ok(resp);
                }
                Err((e, back)) => {
                    tracing::debug!(peer = label, error = %e, "cache peer failed");
                    match back {
                        Some(Unsent::Request(unsent)) if e.before_sending() => {
                            peer.state.mark(false);
                            next = unsent;
                        }
                        _ => return Err(Err(e)),
                    }
                }
            }
        }
        // This node owns the key now: back to the origin, unmarked.
        let (mut parts, body) = next.into_parts();
        parts.headers.remove(&PEER_HEADER);
        parts.uri = origin_uri;
        if let Some(tag) = tag {
            parts.extensions.insert(tag);
        }
        Err(Ok(Request::from_parts(parts, body)))
    }
}

/// FNV-1a over `bytes`, then `mix`: stable across builds and machines (the
/// nodes must agree), unlike the standard library's hasher.
fn hash(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// splitmix64's finaliser: spreads every input bit over the output.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(peers: &[u64], key: &str) -> usize {
        let k = hash(key.as_bytes(), 0);
        (0..peers.len()).max_by_key(|i| mix(peers[*i] ^ k)).unwrap()
    }

    #[test]
    fn keys_spread_evenly_and_only_a_dead_nodes_keys_move() {
        let seeds: Vec<u64> = (0..3)
            .map(|i| hash(format!("10.0.0.{i}:8080").as_bytes(), 0))
            .collect();
        let keys: Vec<String> = (0..3000)
            .map(|i| format!("route:a http://s:80/{i}"))
            .collect();
        let owners: Vec<usize> = keys.iter().map(|k| scores(&seeds, k)).collect();
        for node in 0..3 {
            let n = owners.iter().filter(|o| **o == node).count();
            assert!((800..1200).contains(&n), "node {node} owns {n} of 3000");
        }
        // Node 2 gone: its keys go to 0 or 1, nobody else's move.
        let two: Vec<u64> = seeds[..2].to_vec();
        for (k, before) in keys.iter().zip(&owners) {
            let after = scores(&two, k);
            if *before != 2 {
                assert_eq!(after, *before, "{k} moved");
            }
        }
    }
}
