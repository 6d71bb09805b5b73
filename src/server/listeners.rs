//! The proxy's listening sockets, plain and TLS, as a set a reload can
//! change: an address that stays in the configuration keeps its socket (no
//! re-bind, no refused connection), an added one is bound and starts
//! accepting, a removed one stops accepting and its connections drain (idle
//! ones close, requests in flight finish, and after `shutdown_timeout` what
//! is left is closed). Each listener has its own phase for that; shutdown
//! drains them all.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use super::{accept_loop, ConnectionSettings, Phase};
use crate::proxy::Handler;
use crate::tls::TlsServer;

/// What every accept loop shares; swapped parts are read per connection.
pub struct Shared {
    pub limit: Arc<Semaphore>,
    pub handler: Arc<Handler>,
    pub settings: ArcSwap<ConnectionSettings>,
}

struct Slot {
    /// As written in the configuration (port 0 stays 0): what a reload compares.
    configured: SocketAddr,
    bound: SocketAddr,
    tls: bool,
    phase: Arc<watch::Sender<Phase>>,
    /// The accept loop; taken by `stopped` to wait for it.
    task: Option<JoinHandle<()>>,
}

pub struct Listeners {
    shared: Arc<Shared>,
    slots: Mutex<Vec<Slot>>,
    /// Listeners a reload removed, still draining; shutdown stops them too.
    draining: Mutex<Vec<Arc<watch::Sender<Phase>>>>,
    /// Present once a TLS listener exists (at start or added by a reload).
    tls: Mutex<Option<Arc<TlsServer>>>,
}

/// Sockets a reload bound, not yet accepting: dropping it undoes the bind.
pub struct Pending {
    /// Positions in the current slots that the new configuration keeps.
    keep: Vec<usize>,
    added: Vec<(SocketAddr, SocketAddr, bool, TcpListener)>,
    /// Every address after the reload: (bound, tls), plain ones first.
    after: Vec<(SocketAddr, bool)>,
}

impl Pending {
    /// The proxy's addresses once this is committed, plain and TLS.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.after.iter().map(|(a, _)| *a).collect()
    }

    /// The first TLS listener's port once this is committed.
    pub fn https_port(&self) -> Option<u16> {
        self.after
            .iter()
            .find(|(_, tls)| *tls)
            .map(|(a, _)| a.port())
    }

    pub fn wants_tls(&self) -> bool {
        self.after.iter().any(|(_, tls)| *tls)
    }
}

/// Binds at once (a reload is a short synchronous step inside the runtime).
fn bind_now(addr: SocketAddr) -> Result<TcpListener, String> {
    let fail = |e: std::io::Error| format!("cannot listen on {addr}: {e}");
    let listener = std::net::TcpListener::bind(addr).map_err(fail)?;
    listener.set_nonblocking(true).map_err(fail)?;
    TcpListener::from_std(listener).map_err(fail)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Listeners {
    /// Starts accepting on `plain` and `tls` listeners (already bound, with
    /// the addresses the configuration gave them).
    pub fn start(
        shared: Arc<Shared>,
        plain: Vec<(SocketAddr, TcpListener)>,
        secure: Vec<(SocketAddr, TcpListener)>,
        tls: Option<Arc<TlsServer>>,
    ) -> Result<Listeners, String> {
        let listeners = Listeners {
            shared,
            slots: Mutex::new(Vec::new()),
            draining: Mutex::new(Vec::new()),
            tls: Mutex::new(tls),
        };
        let all = plain
            .into_iter()
            .map(|(c, l)| (c, l, false))
            .chain(secure.into_iter().map(|(c, l)| (c, l, true)));
        for (configured, listener, tls) in all {
            let slot = listeners.spawn(configured, listener, tls)?;
            lock(&listeners.slots).push(slot);
        }
        Ok(listeners)
    }

    fn spawn(
        &self,
        configured: SocketAddr,
        listener: TcpListener,
        tls: bool,
    ) -> Result<Slot, String> {
        let bound = listener
            .local_addr()
            .map_err(|e| format!("cannot read the bound address of {configured}: {e}"))?;
        let (phase, rx) = watch::channel(Phase::Running);
        let server = if tls { self.tls() } else { None };
        let task = tokio::spawn(accept_loop(listener, self.shared.clone(), server, rx));
        Ok(Slot {
            configured,
            bound,
            tls,
            phase: Arc::new(phase),
            task: Some(task),
        })
    }

    /// The TLS server, if any listener uses TLS.
    pub fn tls(&self) -> Option<Arc<TlsServer>> {
        lock(&self.tls).clone()
    }

    pub fn set_tls(&self, tls: Arc<TlsServer>) {
        *lock(&self.tls) = Some(tls);
    }

    /// Bound addresses now accepting: plain ones, then TLS ones.
    pub fn addrs(&self, tls: bool) -> Vec<SocketAddr> {
        lock(&self.slots)
            .iter()
            .filter(|s| s.tls == tls)
            .map(|s| s.bound)
            .collect()
    }

    /// Binds what `plain` and `secure` add to the current listeners; nothing
    /// accepts yet and nothing is removed. An address that cannot be bound
    /// fails the whole reload.
    pub fn prepare(&self, plain: &[SocketAddr], secure: &[SocketAddr]) -> Result<Pending, String> {
        // Which current slot each wanted address keeps (one reload runs at
        // a time, so the slots do not change before `commit`).
        let (keep, wanted_new, mut after) = {
            let slots = lock(&self.slots);
            let mut taken = vec![false; slots.len()];
            let mut keep = Vec::new();
            let mut wanted_new = Vec::new();
            let mut after = Vec::new();
            let wanted = plain
                .iter()
                .map(|a| (*a, false))
                .chain(secure.iter().map(|a| (*a, true)));
            for (addr, tls) in wanted {
                let found = slots
                    .iter()
                    .enumerate()
                    .position(|(i, s)| !taken[i] && s.configured == addr && s.tls == tls);
                match found {
                    Some(i) => {
                        taken[i] = true;
                        keep.push(i);
                        after.push((slots[i].bound, tls));
                    }
                    None => wanted_new.push((addr, tls)),
                }
            }
            (keep, wanted_new, after)
        };
        let mut added = Vec::with_capacity(wanted_new.len());
        for (addr, tls) in wanted_new {
            let listener = bind_now(addr)?;
            let bound = listener
                .local_addr()
                .map_err(|e| format!("cannot read the bound address of {addr}: {e}"))?;
            after.push((bound, tls));
            added.push((addr, bound, tls, listener));
        }
        // Plain first, as at start.
        after.sort_by_key(|(_, tls)| *tls);
        Ok(Pending { keep, added, after })
    }

    /// Starts the added listeners and drains the removed ones; the new
    /// connection settings apply to connections accepted from now on.
    pub fn commit(&self, pending: Pending, settings: ConnectionSettings, drain: Duration) {
        self.shared.settings.store(Arc::new(settings));
        let mut slots = lock(&self.slots);
        let old = std::mem::take(&mut *slots);
        let mut kept: Vec<Option<Slot>> = old.into_iter().map(Some).collect();
        let mut next = Vec::new();
        for i in &pending.keep {
            if let Some(slot) = kept[*i].take() {
                next.push(slot);
            }
        }
        for slot in kept.into_iter().flatten() {
            tracing::info!(addr = %slot.bound, tls = slot.tls, "listener removed; draining");
            self.drain_one(slot, drain);
        }
        for (configured, bound, tls, listener) in pending.added {
            match self.spawn(configured, listener, tls) {
                Ok(slot) => {
                    tracing::info!(addr = %bound, tls, "listener added");
                    next.push(slot);
                }
                Err(e) => tracing::error!("{e}"),
            }
        }
        next.sort_by_key(|s| s.tls);
        *slots = next;
    }

    /// Stops accepting on `slot`; its connections finish what they are
    /// doing, and are closed after `drain` if they have not.
    fn drain_one(&self, slot: Slot, drain: Duration) {
        let _ = slot.phase.send(Phase::Draining);
        let phase = slot.phase.clone();
        let mut draining = lock(&self.draining);
        // Those whose connections have all ended need no more signals.
        draining.retain(|s| s.receiver_count() > 0);
        draining.push(slot.phase);
        tokio::spawn(async move {
            tokio::time::sleep(drain).await;
            let _ = phase.send(Phase::Stop);
        });
    }

    /// Every listener (and every one still draining) moves to `phase`.
    pub fn broadcast(&self, phase: Phase) {
        for slot in lock(&self.slots).iter() {
            let _ = slot.phase.send(phase);
        }
        for sender in lock(&self.draining).iter() {
            let _ = sender.send(phase);
        }
    }

    /// Waits for every accept loop to return (after `broadcast(Draining)`).
    pub async fn stopped(&self) {
        let tasks: Vec<JoinHandle<()>> = {
            let mut slots = lock(&self.slots);
            slots.iter_mut().filter_map(|s| s.task.take()).collect()
        };
        for task in tasks {
            let _ = task.await;
        }
    }
}
