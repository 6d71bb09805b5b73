//! What one client connection is doing, shared by its I/O wrapper (which sees
//! request heads arrive), its handler (requests in flight) and its watchdog
//! (which closes slow and idle connections).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::http::body::Oversized;

const NONE: u64 = u64::MAX;

#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    /// Requests whose responses are not finished yet.
    in_flight: AtomicU64,
    /// Requests handed to the handler so far on this connection.
    requests: AtomicU64,
    /// Milliseconds since `epoch` at which the connection last became idle.
    idle_since: AtomicU64,
    /// Milliseconds since `epoch` at which a partial request head started arriving.
    head_started: AtomicU64,
    /// Index of a request whose head carried both Content-Length and
    /// Transfer-Encoding (RFC 9112 §6.1); answered with 400.
    ambiguous_request: AtomicU64,
    /// The latest request whose head is over the limit.
    large_head: AtomicU64,
    /// Which request's chunked body announced more than `max_request_body`;
    /// answered with 413 (shared with that request's body).
    oversized: Arc<Oversized>,
    /// A 101 was relayed: the bytes that follow are another protocol.
    upgraded: AtomicBool,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            epoch: Instant::now(),
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(NONE),
            ambiguous_request: AtomicU64::new(NONE),
            large_head: AtomicU64::new(NONE),
            oversized: Arc::default(),
            upgraded: AtomicBool::new(false),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Called by the handler for each request; returns the request's index.
    pub fn request_started(&self) -> u64 {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::AcqRel)
    }

    /// Called when a response body is finished or dropped.
    pub fn request_finished(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle_since.store(self.now_ms(), Ordering::Release);
        }
    }

    pub fn head_started(&self) {
        self.head_started.store(self.now_ms(), Ordering::Release);
    }

    pub fn head_complete(&self) {
        self.head_started.store(NONE, Ordering::Release);
    }

    pub fn mark_ambiguous(&self, request_index: u64) {
        self.ambiguous_request
            .store(request_index, Ordering::Release);
    }

    pub fn is_ambiguous(&self, request_index: u64) -> bool {
        self.ambiguous_request.load(Ordering::Acquire) == request_index
    }

    /// The head of this request is over `max_header_size` (hyper's own
    /// limit never goes below 8 KiB: a smaller one is enforced here).
    pub fn mark_large_head(&self, request_index: u64) {
        self.large_head.store(request_index, Ordering::Release);
    }

    pub fn is_large_head(&self, request_index: u64) -> bool {
        self.large_head.load(Ordering::Acquire) == request_index
    }

    pub fn mark_oversized(&self, request_index: u64) {
        self.oversized.mark(request_index);
    }

    pub fn is_oversized(&self, request_index: u64) -> bool {
        self.oversized.is_marked(request_index)
    }

    /// The flag a request body checks as it streams.
    pub fn oversized(&self) -> Arc<Oversized> {
        self.oversized.clone()
    }

    pub fn mark_upgraded(&self) {
        self.upgraded.store(true, Ordering::Release);
    }

    pub fn upgraded(&self) -> bool {
        self.upgraded.load(Ordering::Acquire)
    }

    /// What the watchdog should do now, given the two timeouts in milliseconds.
    pub fn verdict(&self, header_timeout_ms: u64, idle_timeout_ms: u64) -> Verdict {
        let now = self.now_ms();
        let head = self.head_started.load(Ordering::Acquire);
        if head != NONE {
            let deadline = head + header_timeout_ms;
            return if now >= deadline {
                Verdict::HeaderTimeout
            } else {
                Verdict::RecheckIn(deadline - now)
            };
        }
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Verdict::RecheckIn(idle_timeout_ms.min(header_timeout_ms));
        }
        // The first request must arrive within the header timeout (slowloris);
        // later ones get the keep-alive idle timeout.
        let first = self.requests.load(Ordering::Acquire) == 0;
        let limit = if first {
            header_timeout_ms
        } else {
            idle_timeout_ms
        };
        let deadline = self.idle_since.load(Ordering::Acquire) + limit;
        if now >= deadline {
            if first {
                Verdict::HeaderTimeout
            } else {
                Verdict::Idle
            }
        } else {
            Verdict::RecheckIn(deadline - now)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A client took too long to send a request head: close at once.
    HeaderTimeout,
    /// A persistent connection sat idle past the keep-alive timeout: close it.
    Idle,
    RecheckIn(u64),
}

/// Keeps a request counted as in flight until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl InFlight {
    pub fn new(activity: Arc<Activity>) -> InFlight {
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_connection_is_on_the_header_clock() {
        let a = Activity::new();
        assert!(matches!(a.verdict(10_000, 60_000), Verdict::RecheckIn(ms) if ms <= 10_000));
        assert_eq!(a.verdict(0, 60_000), Verdict::HeaderTimeout);
    }

    #[test]
    fn busy_connection_is_never_idle() {
        let a = Activity::new();
        a.request_started();
        assert!(matches!(a.verdict(0, 0), Verdict::RecheckIn(_)));
        a.request_finished();
        assert_eq!(a.verdict(10_000, 0), Verdict::Idle);
    }

    #[test]
    fn ambiguous_flag_targets_one_request() {
        let a = Activity::new();
        a.mark_ambiguous(2);
        assert!(!a.is_ambiguous(1));
        assert!(a.is_ambiguous(2));
    }
}
