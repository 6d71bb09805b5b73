//! Request collapsing: one origin fetch per key at a time, shared by every
//! request that wants the same thing.
//!
//! Lessons from other proxies (see references.md) shaped this:
//! - The fetch runs in its own task and belongs to the fill, not to the client
//!   that started it: that client leaving does not cancel it for the others.
//! - A guard released on drop ends the flight whatever happens (error, panic,
//!   cancellation): no key stays locked, and every waiter is woken at once.
//! - Followers wait at most `collapse_timeout`, then fetch on their own.
//! - A response that cannot be shared marks the key "do not collapse" for a
//!   while (hit-for-miss), so the next crowd is not serialized behind it.
//!
//! A flight is a key lock plus a shared body. What the leader alone receives
//! when the answer cannot be shared (`A`), and the unread rest of a body that
//! outgrew the store (`R`), are the pipeline's types: nothing here knows
//! about origins or their errors.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::response::Parts;
use http_body::{Body, Frame, SizeHint};

use super::store::Entry;
use super::Tier;
use crate::http::body::BoxError;

/// Where a flight stands, as readers see it.
pub enum Phase<A> {
    /// The origin has not answered yet.
    Pending,
    /// A storable response is arriving; its body is in `Flight::chunks`.
    Filling {
        head: Arc<Parts>,
        ttl: i64,
        length: Option<u64>,
    },
    /// Complete: stored (or refreshed by a 304), or found in a lower
    /// tier (`tier`) without asking the origin.
    Done {
        entry: Arc<Entry>,
        status: u16,
        ttl: i64,
        tier: Option<Tier>,
    },
    /// Only the leader can use the answer: not storable, too large, or the
    /// origin failed. Followers fetch on their own.
    LeaderOnly(Option<A>),
}

struct State<A, R> {
    phase: Phase<A>,
    /// Body chunks of a filling response, in order.
    chunks: Vec<Bytes>,
    /// Whole body received (`Some(true)`), or broken off (`Some(false)`).
    finished: Option<bool>,
    /// After the body outgrew `max_object_size`: the rest, for the leader only.
    rest: Option<R>,
    overflowed: bool,
    /// When the head or the last body chunk arrived.
    progress: Instant,
    wakers: Vec<Waker>,
}

pub struct Flight<A, R> {
    state: Mutex<State<A, R>>,
}

impl<A, R> Flight<A, R> {
    fn new() -> Flight<A, R> {
        Flight {
            state: Mutex::new(State {
                phase: Phase::Pending,
                chunks: Vec::new(),
                finished: None,
                rest: None,
                overflowed: false,
                progress: Instant::now(),
                wakers: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<A, R>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut State<A, R>)) {
        let wakers = {
            let mut state = self.lock();
            f(&mut state);
            std::mem::take(&mut state.wakers)
        };
        for w in wakers {
            w.wake();
        }
    }

    /// The fill task: the response head is in and will be stored.
    pub fn filling(&self, head: Parts, ttl: i64, length: Option<u64>) {
        self.update(|s| {
            s.progress = Instant::now();
            s.phase = Phase::Filling {
                head: Arc::new(head),
                ttl,
                length,
            }
        });
    }

    pub fn chunk(&self, data: Bytes) {
        self.update(|s| {
            s.progress = Instant::now();
            s.chunks.push(data)
        });
    }

    /// A fill of known length that is still arriving and made progress
    /// within `within`: worth streaming to a follower whose wait ran out,
    /// rather than fetching the whole object again. A stalled fill is not.
    pub fn flowing(&self, within: Duration) -> Option<(Arc<Parts>, i64, u64)> {
        let state = self.lock();
        match &state.phase {
            Phase::Filling {
                head,
                ttl,
                length: Some(length),
            } if state.finished.is_none()
                && !state.overflowed
                && state.progress.elapsed() <= within =>
            {
                Some((head.clone(), *ttl, *length))
            }
            _ => None,
        }
    }

    /// The body outgrew what may be stored: `last` was read, `rest` is unread.
    pub fn overflow(&self, last: Bytes, rest: R) {
        self.update(|s| {
            s.chunks.push(last);
            s.rest = Some(rest);
            s.overflowed = true;
        });
    }

    pub fn done(&self, entry: Arc<Entry>, status: u16, ttl: i64) {
        self.update(|s| {
            s.finished = Some(true);
            s.phase = Phase::Done {
                entry,
                status,
                ttl,
                tier: None,
            };
        });
    }

    /// Found in a lower tier: every reader serves `entry` as a hit.
    pub fn tier_hit(&self, entry: Arc<Entry>, ttl: i64, tier: Tier) {
        self.update(|s| {
            s.finished = Some(true);
            s.phase = Phase::Done {
                entry,
                status: 200,
                ttl,
                tier: Some(tier),
            };
        });
    }

    /// The body broke off: readers get an error, never a clean end.
    pub fn body_failed(&self) {
        self.update(|s| s.finished = Some(false));
    }

    pub fn leader_only(&self, answer: A) {
        self.update(|s| s.phase = Phase::LeaderOnly(Some(answer)));
    }

    /// Waits until the phase is no longer `Pending` (or `Filling` when
    /// `until_done`), then lets `f` look at it.
    pub async fn wait<T>(
        &self,
        until_done: bool,
        mut f: impl FnMut(&mut Phase<A>, bool) -> T,
    ) -> T {
        std::future::poll_fn(|cx| {
            let mut state = self.lock();
            let overflowed = state.overflowed;
            let ready = match &state.phase {
                Phase::Pending => false,
                Phase::Filling { .. } => !until_done || overflowed || state.finished == Some(false),
                _ => true,
            };
            if ready {
                Poll::Ready(f(&mut state.phase, overflowed))
            } else {
                state.wakers.push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// The registry of flights, and the keys that must not be collapsed for now.
pub struct Flights<A, R> {
    active: Mutex<HashMap<String, Arc<Flight<A, R>>>>,
    uncollapsible: moka::sync::Cache<String, ()>,
    /// `collapse_timeout` in milliseconds; a reload may change it.
    timeout_ms: std::sync::atomic::AtomicU64,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub enum Join<A, R> {
    /// Start the fetch; the guard ends the flight when dropped.
    Leader(Arc<Flight<A, R>>, FlightGuard<A, R>),
    /// Someone is fetching already: wait for them.
    Follower(Arc<Flight<A, R>>),
    /// Do not collapse (hit-for-miss): fetch alone.
    Alone,
}

impl<A, R> Flights<A, R> {
    pub fn new(timeout: Duration, hit_for_miss: Duration) -> Flights<A, R> {
        Flights {
            active: Mutex::new(HashMap::new()),
            uncollapsible: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(hit_for_miss.max(Duration::from_millis(1)))
                .build(),
            timeout_ms: std::sync::atomic::AtomicU64::new(millis(timeout)),
        }
    }

    /// How long a follower waits for the leader.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.load(std::sync::atomic::Ordering::Relaxed))
    }

    pub fn set_timeout(&self, timeout: Duration) {
        self.timeout_ms
            .store(millis(timeout), std::sync::atomic::Ordering::Relaxed);
    }

    pub fn join(self: &Arc<Self>, key: &str) -> Join<A, R> {
        if self.uncollapsible.contains_key(key) {
            return Join::Alone;
        }
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(flight) = active.get(key) {
            return Join::Follower(flight.clone());
        }
        let flight = Arc::new(Flight::new());
        active.insert(key.to_string(), flight.clone());
        let guard = FlightGuard {
            flights: self.clone(),
            key: key.to_string(),
            flight: flight.clone(),
        };
        Join::Leader(flight, guard)
    }

    /// Hit-for-miss: the next requests for `key` fetch alone for a while.
    pub fn mark_uncollapsible(&self, key: &str) {
        self.uncollapsible.insert(key.to_string(), ());
    }

    /// Whether a fetch for `key` is under way (for one background
    /// revalidation per key).
    pub fn is_active(&self, key: &str) -> bool {
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(key)
    }
}

/// Ends a flight when dropped: removes it from the registry and, if it never
/// got an answer, fails it so every waiter is released.
pub struct FlightGuard<A, R> {
    flights: Arc<Flights<A, R>>,
    key: String,
    flight: Arc<Flight<A, R>>,
}

impl<A, R> Drop for FlightGuard<A, R> {
    fn drop(&mut self) {
        {
            let mut active = self
                .flights
                .active
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if active
                .get(&self.key)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
            {
                active.remove(&self.key);
            }
        }
        self.flight.update(|s| {
            if matches!(s.phase, Phase::Pending) {
                s.phase = Phase::LeaderOnly(None);
            }
            if matches!(s.phase, Phase::Filling { .. }) && s.finished.is_none() && !s.overflowed {
                s.finished = Some(false);
            }
        });
    }
}

/// A body read from a flight's shared buffer; the leader continues with the
/// unread rest when the body outgrew the store.
pub struct FlightBody<A, R> {
    flight: Arc<Flight<A, R>>,
    next: usize,
    leader: bool,
    rest: Option<R>,
    length: Option<u64>,
}

impl<A, R> FlightBody<A, R> {
    pub fn new(flight: Arc<Flight<A, R>>, leader: bool, length: Option<u64>) -> FlightBody<A, R> {
        FlightBody {
            flight,
            next: 0,
            leader,
            rest: None,
            length,
        }
    }
}

/// The fill failed; a reader of an incomplete fill gets this, not a clean end.
#[derive(Debug)]
pub struct FillBroken;

impl std::fmt::Display for FillBroken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the origin response broke off")
    }
}

impl std::error::Error for FillBroken {}

impl<A, R> Body for FlightBody<A, R>
where
    R: Body<Data = Bytes> + Unpin,
    R::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(rest) = this.rest.as_mut() {
            return Pin::new(rest).poll_frame(cx).map_err(Into::into);
        }
        let mut state = this.flight.lock();
        if let Some(chunk) = state.chunks.get(this.next) {
            this.next += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
        }
        if state.overflowed {
            if this.leader {
                if let Some(rest) = state.rest.take() {
                    drop(state);
                    this.rest = Some(rest);
                    return self.poll_frame(cx);
                }
            }
            return Poll::Ready(Some(Err(Box::new(FillBroken))));
        }
        match state.finished {
            Some(true) => Poll::Ready(None),
            Some(false) => Poll::Ready(Some(Err(Box::new(FillBroken)))),
            None => {
                state.wakers.push(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
