//! Idle origin connections, per origin, for reuse (RFC 9112 §9.3).
//!
//! A connection comes back here only when its response body was read to the
//! end, so the next request is never written behind unread bytes. Before one
//! is handed out again it must be quiet (`Socket`): no bytes arrived while it
//! was idle, none are waiting unread, and the origin has not closed it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::conn::Conn;
use super::socket::Quiet;

struct Idle {
    conn: Conn,
    since: Instant,
}

/// An HTTP/2 connection to an origin: one per origin, shared by every
/// request (streams are multiplexed; hyper's driver runs in its own task).
struct Shared {
    sender: H2Sender,
    last_used: Instant,
}

pub type H2Sender = hyper::client::conn::http2::SendRequest<crate::http::body::RequestBody>;

pub struct Pool {
    /// Bumped by `clear`: connections opened before it are not parked again.
    generation: std::sync::atomic::AtomicU64,
    idle: Mutex<HashMap<Arc<str>, Vec<Idle>>>,
    h2: Mutex<HashMap<Arc<str>, Shared>>,
    /// Wakes requests waiting for a connection to an origin at its cap.
    pub returned: tokio::sync::Notify,
    max_idle: usize,
    idle_timeout: Duration,
}

impl Pool {
    pub fn new(max_idle: usize, idle_timeout: Duration) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            generation: std::sync::atomic::AtomicU64::new(0),
            idle: Mutex::new(HashMap::new()),
            h2: Mutex::new(HashMap::new()),
            returned: tokio::sync::Notify::new(),
            max_idle,
            idle_timeout,
        });
        if max_idle > 0 {
            tokio::spawn(sweep(Arc::downgrade(&pool), idle_timeout));
        }
        pool
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Vec<Idle>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle connection to `origin` that is safe to write a request on.
    /// One that holds bytes nobody asked for is closed and counted.
    pub fn checkout(&self, origin: &str) -> Option<Conn> {
        loop {
            // Newest first: the most recently used connection is the least
            // likely to have been closed by the origin.
            let idle = self.lock().get_mut(origin)?.pop()?;
            if idle.since.elapsed() >= self.idle_timeout {
                continue;
            }
            let mut conn = idle.conn;
            // Nothing polled it while idle: hyper reads a close, or bytes
            // left over from the last response or sent since, now.
            conn.look();
            if conn.is_closed() && !conn.peeker.watch.unsolicited() {
                continue;
            }
            match conn.peeker.quiet() {
                Quiet::Yes => {}
                Quiet::Unsolicited => {
                    conn.peeker.watch.flag_unsolicited();
                    tracing::debug!(
                        origin,
                        "idle origin connection held unsolicited bytes; closed"
                    );
                    continue;
                }
                Quiet::Closed => continue,
            }
            conn.peeker.watch.set_idle(false);
            conn.reused = true;
            return Some(conn);
        }
    }

    /// Parks `conn` for reuse after its response ended cleanly.
    pub fn checkin(&self, conn: Conn) {
        if self.max_idle == 0
            || conn.is_closed()
            || conn.peeker.watch.unsolicited()
            || conn.generation != self.generation()
        {
            return;
        }
        conn.peeker.watch.set_idle(true);
        let mut idle = self.lock();
        let list = idle.entry(conn.origin.clone()).or_default();
        if list.len() < self.max_idle {
            list.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
        drop(idle);
        self.returned.notify_waiters();
    }

    /// Closes every idle connection, and keeps those busy now from coming
    /// back (after a reload changed where connections may go: the next
    /// requests connect, and are checked, anew).
    pub fn clear(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.lock().clear();
        self.lock_h2().clear();
    }

    /// The generation a connection opened now belongs to.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    fn lock_h2(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Shared>> {
        self.h2.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The origin's HTTP/2 connection, if one is open.
    pub fn h2(&self, origin: &str) -> Option<H2Sender> {
        let mut h2 = self.lock_h2();
        let shared = h2.get_mut(origin)?;
        if shared.sender.is_closed() {
            h2.remove(origin);
            return None;
        }
        shared.last_used = Instant::now();
        Some(shared.sender.clone())
    }

    /// Makes a new HTTP/2 connection the one later requests to `origin` use.
    pub fn share_h2(&self, origin: Arc<str>, sender: H2Sender, generation: u64) {
        if self.max_idle == 0 || generation != self.generation() {
            return;
        }
        let shared = Shared {
            sender,
            last_used: Instant::now(),
        };
        self.lock_h2().insert(origin, shared);
    }

    /// Closes connections idle for longer than the idle timeout, and those
    /// the origin closed (or sent unasked bytes on) since they were parked.
    /// An HTTP/2 connection closes when no request used it for that long
    /// (hyper ends it once the pool's handle and every request's are gone).
    fn expire(&self) {
        self.lock_h2().retain(|_, shared| {
            shared.last_used.elapsed() < self.idle_timeout && !shared.sender.is_closed()
        });
        let mut idle = self.lock();
        idle.retain(|_, list| {
            list.retain_mut(|i| {
                i.conn.look();
                i.since.elapsed() < self.idle_timeout && !i.conn.is_closed()
            });
            !list.is_empty()
        });
    }
}

/// Runs until the pool is dropped, closing expired idle connections so they do
/// not hold sockets (and origin slots) for ever.
async fn sweep(pool: Weak<Pool>, idle_timeout: Duration) {
    let period = (idle_timeout / 2).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match pool.upgrade() {
            Some(pool) => pool.expire(),
            None => return,
        }
    }
}
