//! One origin fetch per missing slice: the first request that needs a
//! slice fetches it; the others wait for it to be stored (at most the
//! collapse timeout, then they fetch on their own), so a crowd of players
//! starting the same video costs the origin each slice once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as Gate, OwnedMutexGuard};

#[derive(Default)]
pub struct SliceFlights {
    active: Mutex<HashMap<String, Arc<Gate<()>>>>,
}

/// What a request needing a slice does.
pub enum Claim {
    /// Fetch it; the others wait until this is dropped.
    Lead(Leading),
    /// Wait on this for the leader, then look in the store again.
    Follow(Arc<Gate<()>>),
}

/// Held while a slice is fetched; dropping it (however the fetch ended)
/// releases the waiters and ends the flight.
pub struct Leading {
    flights: Arc<SliceFlights>,
    key: String,
    _gate: OwnedMutexGuard<()>,
}

impl Drop for Leading {
    fn drop(&mut self) {
        self.flights
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

impl SliceFlights {
    pub fn claim(self: &Arc<Self>, key: &str) -> Claim {
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(gate) = active.get(key) {
            return Claim::Follow(gate.clone());
        }
        let gate = Arc::new(Gate::new(()));
        let guard = gate.clone().try_lock_owned().expect("a new gate is free");
        active.insert(key.to_string(), gate);
        Claim::Lead(Leading {
            flights: self.clone(),
            key: key.to_string(),
            _gate: guard,
        })
    }
}

/// Waits for the leader of `gate`, at most `timeout`.
pub async fn wait(gate: Arc<Gate<()>>, timeout: std::time::Duration) {
    let _ = tokio::time::timeout(timeout, gate.lock()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_wait_for_the_leader_and_the_flight_ends_with_it() {
        let flights = Arc::new(SliceFlights::default());
        let Claim::Lead(lead) = flights.claim("k") else {
            panic!("the first request leads")
        };
        let Claim::Follow(gate) = flights.claim("k") else {
            panic!("the second follows")
        };
        let waiter = tokio::spawn(wait(gate, std::time::Duration::from_secs(20)));
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(lead);
        waiter.await.unwrap();
        assert!(matches!(flights.claim("k"), Claim::Lead(_)));
    }
}
