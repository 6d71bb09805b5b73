//! One client connection's place under `[server] max_connections` and in the
//! open-connections gauge. It is shared: a CONNECT tunnel or an upgraded
//! connection (WebSocket) takes a clone when hyper hands the socket over,
//! so the place is given back only when the last of them ends, and shutdown,
//! which waits for every place, waits for tunnels too.

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{watch, OwnedSemaphorePermit};

use super::Phase;

pub struct ConnectionSlot {
    /// `None` for connections made outside a listener (the fuzz harness).
    _permit: Option<OwnedSemaphorePermit>,
    gauge: Gauge,
    /// The listener's phase: a tunnel ends at `Stop` (the shutdown or drain
    /// timeout), like the connection it came from.
    phase: watch::Receiver<Phase>,
}

impl ConnectionSlot {
    pub fn new(
        permit: Option<OwnedSemaphorePermit>,
        gauge: Gauge,
        phase: watch::Receiver<Phase>,
    ) -> ConnectionSlot {
        gauge.inc();
        ConnectionSlot {
            _permit: permit,
            gauge,
            phase,
        }
    }

    /// Resolves when the connection's listener says stop now.
    pub async fn stopped(&self) {
        let mut phase = self.phase.clone();
        loop {
            if *phase.borrow_and_update() == Phase::Stop {
                return;
            }
            if phase.changed().await.is_err() {
                // The listener is gone: nothing will ever say stop.
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}
