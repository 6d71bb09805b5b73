//! Getting a response from the origin through a flight: the first request
//! for a key leads (its fetch runs in a task), later ones follow and share it.

use std::sync::Arc;
use std::time::SystemTime;

use http::header::{self, HeaderMap};
use http::{Method, Request, Response, Version};

use super::body::ProxyBody;
use super::cached::CacheStep;
use super::cached::{forwarded, Answer, Exchange};
use super::error::ProxyError;
use super::fill_task::{self, FillJob};
use super::fill_task::{Flight, FlightBody, Join, LeaderAnswer, Phase};
use crate::cache::control::RequestControl;
use crate::cache::fill::{self, Fill};
use crate::cache::policy::{self, NotStored};
use crate::cache::store::{Entry, Variants};
use crate::cache::{CacheStats, CacheStatus, Fwd, Stored, Tier};
use crate::upstream::{copy_parts, StoreTag};

/// What the stored side knows when a request goes to the origin.
pub(super) struct Refill {
    /// Stored variants to revalidate, and the one this request selected.
    pub revalidating: Option<(Variants, Option<usize>)>,
    pub fwd: Fwd,
    /// The stale entry, for stale-if-error.
    pub stale: Option<Arc<Entry>>,
    pub req_cc: RequestControl,
}

/// A fill that received bytes this recently is flowing, not stalled.
const FLOWING: std::time::Duration = std::time::Duration::from_secs(1);

enum Next {
    Stream(Arc<http::response::Parts>, i64, Option<u64>),
    Entry(Arc<Entry>, u16, i64, Option<Tier>),
    Leader(Option<LeaderAnswer>),
    WaitForWhole,
    Alone,
}

impl CacheStep {
    pub(super) async fn refill(&self, ex: Exchange, refill: Refill) -> Answer {
        // HEAD cannot fill the store; it goes alone.
        if ex.parts.method != Method::GET {
            return self.alone(ex, refill).await;
        }
        match self.flights.join(&ex.key) {
            Join::Alone => self.alone(ex, refill).await,
            Join::Leader(flight, guard) => {
                let method = ex.parts.method.clone();
                let client = ex.parts.headers.clone();
                let fallback = ex.replay();
                // A stored copy answers only a request that lets it (§5.2.1).
                let req = &refill.req_cc;
                let shared = refill.fwd != Fwd::Request
                    && !req.no_cache
                    && req.max_age.is_none()
                    && req.min_fresh.is_none();
                let job = self.fill_job(ex, refill.revalidating.clone(), shared);
                tokio::spawn(fill_task::run(job, flight.clone(), guard));
                match self
                    .await_flight(&flight, true, &method, &client, &refill)
                    .await
                {
                    Some(answer) => answer,
                    None => self.alone(fallback, refill).await,
                }
            }
            Join::Follower(flight) => {
                let method = ex.parts.method.clone();
                let timeout = self.flights.timeout();
                let wait = self.await_flight(&flight, false, &method, &ex.parts.headers, &refill);
                match tokio::time::timeout(timeout, wait).await {
                    Ok(Some(answer)) => answer,
                    Ok(None) => self.alone(ex, refill).await,
                    // The wait ran out: join a fill that is still flowing,
                    // fetch alone past one that stalled.
                    Err(_) => match flight.flowing(FLOWING.min(timeout / 2)) {
                        Some((head, ttl, length))
                            if !ex.parts.headers.contains_key(header::RANGE) =>
                        {
                            self.stream_flight(&flight, false, refill.fwd, head, ttl, Some(length))
                        }
                        _ => self.alone(ex, refill).await,
                    },
                }
            }
        }
    }

    /// Starts one background revalidation for `key` unless one is running
    /// (RFC 5861 §3).
    pub(super) fn revalidate_in_background(&self, ex: &Exchange, all: Variants, index: usize) {
        if let Join::Leader(flight, guard) = self.flights.join(&ex.key) {
            CacheStats::count(&self.cache.stats.background_revalidations);
            let copy = ex.replay();
            let job = self.fill_job(copy, Some((all, Some(index))), true);
            tokio::spawn(fill_task::run(job, flight, guard));
        }
    }

    /// The request the fill task sends: the whole representation (no Range,
    /// none of the client's conditionals), conditional on what we hold.
    fn fill_job(
        &self,
        ex: Exchange,
        revalidating: Option<(Variants, Option<usize>)>,
        shared: bool,
    ) -> FillJob {
        let mut parts = ex.parts;
        fill::origin_request(&mut parts.headers, true, None);
        let plain = Request::from_parts(copy_parts(&parts), ());
        if let Some((all, selected)) = &revalidating {
            fill::origin_request(&mut parts.headers, true, Some((all, *selected)));
        }
        FillJob {
            upstream: ex.pool,
            to: ex.to,
            cache: self.cache.clone(),
            rules: ex.rules,
            flights: self.flights.clone(),
            request: {
                parts.extensions.insert(StoreTag(ex.key.clone()));
                Request::from_parts(parts, ex.body)
            },
            plain,
            label: ex.upstream,
            key: ex.key,
            revalidating,
            shared,
        }
    }

    /// Turns a flight's result into this request's answer; `None` means
    /// "fetch on your own".
    async fn await_flight(
        &self,
        flight: &Arc<Flight>,
        leader: bool,
        method: &Method,
        client: &HeaderMap,
        refill: &Refill,
    ) -> Option<Answer> {
        // A range is served from the whole stored body, so wait for it.
        let wants_range = client.contains_key(header::RANGE);
        let decide = |phase: &mut Phase, overflowed: bool| match phase {
            Phase::Pending => Next::WaitForWhole,
            Phase::Filling { .. } if overflowed && !leader => Next::Alone,
            Phase::Filling { head, ttl, length } => {
                // Followers take only a whole body (or, when their wait runs
                // out, a fill still flowing): a fill that stalls must never
                // hold them, and nothing is sent to them before that is known.
                if leader && !wants_range {
                    Next::Stream(head.clone(), *ttl, *length)
                } else if leader && overflowed {
                    // Too large to store: the leader gets the whole body.
                    Next::Stream(head.clone(), *ttl, *length)
                } else {
                    Next::WaitForWhole
                }
            }
            Phase::Done {
                entry,
                status,
                ttl,
                tier,
            } => Next::Entry(entry.clone(), *status, *ttl, *tier),
            Phase::LeaderOnly(answer) if leader => Next::Leader(answer.take()),
            Phase::LeaderOnly(_) => Next::Alone,
        };
        let mut next = flight.wait(false, &decide).await;
        if matches!(next, Next::WaitForWhole) {
            next = flight.wait(true, &decide).await;
        }
        let fwd = refill.fwd;
        let answer = match next {
            Next::WaitForWhole | Next::Alone => return None,
            Next::Stream(head, ttl, length) => {
                self.stream_flight(flight, leader, fwd, head, ttl, length)
            }
            Next::Entry(entry, status, ttl, tier) => {
                // From a tier it was not validated now: as a hit (§5.2.2.4),
                // and only for a request that accepts it as it is (§5.2.1).
                let unvalidated = tier.is_some();
                let now = SystemTime::now();
                if unvalidated {
                    let heuristics = self.cache.heuristics();
                    let reuse = policy::decide(&refill.req_cc, &entry.head, &heuristics, now);
                    if !matches!(reuse, policy::Reuse::Serve { .. }) {
                        return None;
                    }
                }
                let resp = self.serve_stored(&entry, method, client, now, unvalidated);
                let status = match tier {
                    Some(tier) => CacheStatus::TierHit { ttl, tier },
                    None => self.shared_status(leader, fwd, status, ttl),
                };
                (Ok(resp), status)
            }
            // Too large to store: the client's Range goes to the origin instead
            // of downloading the whole object.
            Next::Leader(Some(
                LeaderAnswer::Response(_, NotStored::TooLarge) | LeaderAnswer::Large(..),
            )) if wants_range => return None,
            Next::Leader(Some(LeaderAnswer::Large(resp, plan, key))) => {
                let (mut parts, body) = (*resp).into_parts();
                self.via.append(&mut parts.headers, parts.version);
                parts.version = Version::HTTP_11;
                let status = parts.status.as_u16();
                let ttl = plan.ttl;
                let mut body = ProxyBody::upstream(body);
                if let Some(fill) = Fill::of(self.cache.clone(), key, *plan) {
                    body = body.with_fill(fill);
                }
                let resp = Response::from_parts(parts, body);
                (Ok(resp), forwarded(fwd, Some(status), Stored::Yes { ttl }))
            }
            Next::Leader(Some(LeaderAnswer::Response(resp, why))) => {
                let status = resp.status();
                if super::serve::triggers_stale_if_error(status) {
                    let stale = refill.stale.as_ref();
                    if let Some(served) = self.stale_if_error(
                        stale,
                        &refill.req_cc,
                        method,
                        client,
                        Some(status.as_u16()),
                    ) {
                        return Some((Ok(served.0), served.1));
                    }
                }
                let (mut parts, body) = (*resp).into_parts();
                self.via.append(&mut parts.headers, parts.version);
                parts.version = Version::HTTP_11;
                let resp = Response::from_parts(parts, ProxyBody::upstream(body));
                (
                    Ok(resp),
                    forwarded(fwd, Some(status.as_u16()), Stored::No(why)),
                )
            }
            Next::Leader(Some(LeaderAnswer::Error(e))) => {
                let stale = refill.stale.as_ref();
                if let Some(served) =
                    self.stale_on_failure(stale, &refill.req_cc, method, client, &e)
                {
                    return Some((Ok(served.0), served.1));
                }
                if refill
                    .stale
                    .as_ref()
                    .is_some_and(|s| s.head.control.forbids_stale())
                {
                    // RFC 9111 §5.2.2.2: never stale; 504 instead.
                    return Some((
                        Err(ProxyError::RevalidationFailed(e)),
                        forwarded(fwd, None, Stored::NotApplicable("must-revalidate")),
                    ));
                }
                (
                    Err(e.into()),
                    forwarded(fwd, None, Stored::NotApplicable("")),
                )
            }
            // The fetch ended without an answer (it cannot, short of a panic):
            // fetch directly.
            Next::Leader(None) => return None,
        };
        Some(answer)
    }

    /// Streams a fill's body as it arrives.
    fn stream_flight(
        &self,
        flight: &Arc<Flight>,
        leader: bool,
        fwd: Fwd,
        head: Arc<http::response::Parts>,
        ttl: i64,
        length: Option<u64>,
    ) -> Answer {
        let mut parts = (*head).clone();
        self.via.append(&mut parts.headers, parts.version);
        parts.version = Version::HTTP_11;
        let status = parts.status.as_u16();
        let body = ProxyBody::flight(FlightBody::new(flight.clone(), leader, length));
        let cache_status = self.shared_status(leader, fwd, status, ttl);
        (Ok(Response::from_parts(parts, body)), cache_status)
    }

    fn shared_status(&self, leader: bool, fwd: Fwd, status: u16, ttl: i64) -> CacheStatus {
        if leader {
            forwarded(fwd, Some(status), Stored::Yes { ttl })
        } else {
            CacheStats::count(&self.cache.stats.collapsed);
            CacheStatus::Collapsed { fwd, status, ttl }
        }
    }
}
