//! `[cluster]`: cache peers. Each URL of a reverse route has one owner among
//! `peers` (rendezvous hashing); the others fetch it through the owner.

use std::net::SocketAddr;

use serde::{de, Deserialize, Deserializer};

use super::Dur;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Every node of the cluster, this one included, as `http://IP:port`
    /// (their proxy listeners).
    pub peers: Vec<PeerAddr>,
    /// Which of `peers` this node is.
    #[serde(rename = "self")]
    pub self_addr: Option<PeerAddr>,
    /// How long a node keeps its own copy of what it fetched through the
    /// owner (capped by the response's freshness); 0: no copy.
    pub local_ttl: Dur,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            peers: Vec::new(),
            self_addr: None,
            local_ttl: Dur(std::time::Duration::from_secs(10)),
        }
    }
}

/// `http://IP:port`: an address, not a name, because a peer's requests are
/// trusted by their source address (a name could point anywhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

impl<'de> Deserialize<'de> for PeerAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.strip_prefix("http://")
            .map(|rest| rest.trim_end_matches('/'))
            .and_then(|rest| rest.parse::<SocketAddr>().ok())
            .map(PeerAddr)
            .ok_or_else(|| {
                de::Error::custom(format!(
                    "peer {text:?}: use http://IP:port (an address, not a name: peers are trusted by address)"
                ))
            })
    }
}
