//! Opening origin connections: resolve (through the destination guard for
//! forward traffic), connect with a timeout, TCP_NODELAY and keep-alive, a
//! count of new connections (so reuse is measurable), and a hard cap on
//! connections open to one origin. The cap's permit travels with the socket and
//! frees when the connection closes, whether it was busy or idle.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::sharded::Counter;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::guard::{Guard, GuardError};

/// Forgetting idle per-origin slots keeps the map small for a forward proxy
/// that talks to many hosts.
const PRUNE_ABOVE: usize = 1024;

/// TCP keep-alive probes on origin connections find peers that vanished.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

pub struct Connector {
    opened: Counter,
    max_per_host: usize,
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    connect_timeout: Duration,
    /// Forward traffic: resolve and check every destination, then connect to
    /// exactly the checked address.
    guard: Option<Arc<Guard>>,
}

/// Why no connection could be opened.
#[derive(Debug)]
pub enum ConnectError {
    Guard(GuardError),
    Resolve,
    Refused,
    Timeout,
    Io(io::Error),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Guard(e) => e.fmt(f),
            ConnectError::Resolve => f.write_str("host name could not be resolved"),
            ConnectError::Refused => f.write_str("connection refused"),
            ConnectError::Timeout => f.write_str("connect timed out"),
            ConnectError::Io(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ConnectError {}

/// A connected socket and its place under the per-origin cap.
pub struct Opened {
    pub stream: TcpStream,
    pub slot: OwnedSemaphorePermit,
}

impl Connector {
    /// The destination guard, for forward traffic.
    pub fn guard(&self) -> Option<&Arc<Guard>> {
        self.guard.as_ref()
    }

    pub fn new(
        max_per_host: usize,
        connect_timeout: Duration,
        opened: Counter,
        guard: Option<Arc<Guard>>,
    ) -> Connector {
        Connector {
            opened,
            max_per_host,
            slots: Mutex::new(HashMap::new()),
            connect_timeout,
            guard,
        }
    }

    /// Connections opened since start.
    pub fn opened(&self) -> u64 {
        self.opened.get()
    }

    /// The origin's connection slots (one permit per open connection).
    pub fn slots_for(&self, origin: &str) -> Arc<Semaphore> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sem) = slots.get(origin) {
            return sem.clone();
        }
        if slots.len() >= PRUNE_ABOVE {
            let max = self.max_per_host;
            slots.retain(|_, sem| sem.available_permits() < max);
        }
        let sem = Arc::new(Semaphore::new(self.max_per_host));
        slots.insert(origin.to_string(), sem.clone());
        sem
    }

    /// Opens a connection to `host:port` in the origin slot `slot`.
    pub async fn connect(
        &self,
        slot: OwnedSemaphorePermit,
        host: &str,
        port: u16,
    ) -> Result<Opened, ConnectError> {
        let addrs = self.resolve(host, port).await?;
        let mut last = ConnectError::Resolve;
        for addr in addrs {
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
                    let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
                    self.opened.inc();
                    return Ok(Opened { stream, slot });
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    last = ConnectError::Refused
                }
                Ok(Err(e)) => last = ConnectError::Io(e),
                Err(_) => last = ConnectError::Timeout,
            }
        }
        Err(last)
    }

    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ConnectError> {
        if let Some(guard) = &self.guard {
            return guard.resolve(host, port).await.map_err(ConnectError::Guard);
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
            .await
            .map_err(|_| ConnectError::Resolve)?
            .collect();
        if addrs.is_empty() {
            return Err(ConnectError::Resolve);
        }
        Ok(addrs)
    }
}
