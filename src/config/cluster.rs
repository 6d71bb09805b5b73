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
    /// Active checks of the other nodes (`OPTIONS *`, answered by the
    /// node itself).
    pub health_check: PeerCheckConfig,
}

/// `[cluster] health_check`: every `interval` (0s: off), each other node is
/// asked `OPTIONS *` on a new connection; `fall` failures in a row take it
/// out of the owner ranking (its keys move), `rise` passes bring it back.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PeerCheckConfig {
    pub interval: Dur,
    pub timeout: Dur,
    pub rise: u32,
    pub fall: u32,
}

impl Default for PeerCheckConfig {
    fn default() -> Self {
        PeerCheckConfig {
            interval: Dur(std::time::Duration::from_secs(2)),
            timeout: Dur(std::time::Duration::from_secs(1)),
            rise: 2,
            fall: 2,
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            peers: Vec::new(),
            self_addr: None,
            local_ttl: Dur(std::time::Duration::from_secs(10)),
            health_check: PeerCheckConfig::default(),
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
