//! The origin fetch behind a collapsed flight. It runs in its own task so a
//! client that leaves does not cancel it for the others; its `FlightGuard`
//! releases every waiter when it ends, however it ends.

use std::sync::Arc;
use std::time::SystemTime;

use http::{Request, StatusCode};
use http_body_util::BodyExt;

use crate::cache::fill::{finish_origin_head, forget_replaced, refresh, Fill};
use crate::cache::flight;
use crate::cache::plan::{plan_store, Plan};
use crate::cache::policy::NotStored;
use crate::cache::rules::CacheRules;
use crate::cache::shared::Before;
use crate::cache::store::Variants;
use crate::cache::{Cache, Tier};
use crate::http::body::RequestBody;
use crate::http::headers;
use crate::upstream::peers::PeerCopy;
use crate::upstream::{copy_parts, FramingConflict, OriginBody, Upstream, UpstreamError};

pub(crate) use super::body::Teed;

/// What the leader of a collapsed fetch alone receives when the answer
/// cannot be shared.
pub(crate) enum LeaderAnswer {
    /// A response that streams to the leader alone; `why` says why it was not shared.
    Response(Box<http::Response<OriginBody>>, NotStored),
    /// Too large to share whole (over `max_object_size`), but it can be
    /// kept as it streams to the leader (`Fill::of`: in slices, or on
    /// disk), under this key.
    Large(Box<http::Response<OriginBody>>, Box<Plan>, String),
    Error(UpstreamError),
}

/// The cache's flights, with the pipeline's answer and body types.
pub(super) type Flights = flight::Flights<LeaderAnswer, Teed>;
pub(super) type Flight = flight::Flight<LeaderAnswer, Teed>;
pub(super) type FlightGuard = flight::FlightGuard<LeaderAnswer, Teed>;
pub(crate) type FlightBody = flight::FlightBody<LeaderAnswer, Teed>;
pub(super) type Phase = flight::Phase<LeaderAnswer>;
pub(super) type Join = flight::Join<LeaderAnswer, Teed>;

pub(super) struct FillJob {
    pub upstream: Arc<Upstream>,
    /// A reverse route's TLS settings or upstream group.
    pub to: crate::upstream::Target,
    pub cache: Arc<Cache>,
    pub rules: Arc<CacheRules>,
    pub flights: Arc<Flights>,
    /// The request for the origin (conditional when revalidating).
    pub request: Request<RequestBody>,
    /// The same request without our conditional fields, for a refetch.
    pub plain: Request<()>,
    pub label: String,
    pub key: String,
    /// Stored variants being revalidated, and the one the request selected.
    pub revalidating: Option<(Variants, Option<usize>)>,
    /// Look in the shared tier first (not when the client asked for a
    /// response from the origin).
    pub shared: bool,
}

/// Runs the fetch and publishes the result on `flight`.
pub(super) async fn run(job: FillJob, flight: Arc<Flight>, guard: FlightGuard) {
    let _guard = guard;
    let FillJob {
        upstream,
        to,
        cache,
        rules,
        flights,
        request,
        plain,
        label,
        key,
        revalidating,
        shared,
    } = job;
    let (plain_parts, ()) = plain.into_parts();
    let method = plain_parts.method.clone();
    let request_headers = plain_parts.headers.clone();
    // A miss in memory may be a hit in the shared tier; if not, this node
    // fetches for the cluster (holding the key's lock) or waits for the
    // node that does.
    let mut lock = None;
    if let Some(tier) = cache.shared.as_ref().filter(|_| shared) {
        match tier
            .before_origin(&cache, &key, &request_headers, flights.timeout() / 2)
            .await
        {
            Before::Hit(entry, ttl) => return flight.tier_hit(entry, ttl, Tier::Shared),
            Before::Fetch(held) => lock = held,
        }
    }
    let request_time = SystemTime::now();
    let resp = match upstream.send(request, &label, &to).await {
        Ok(resp) => resp,
        Err(e) => return flight.leader_only(LeaderAnswer::Error(e)),
    };
    let resp = if resp.status() == StatusCode::NOT_MODIFIED {
        if let Some((all, selected)) = &revalidating {
            let (mut parts, _) = resp.into_parts();
            headers::strip_hop_by_hop(&mut parts.headers);
            if let Some((entry, ttl)) = refresh(
                &cache,
                &rules,
                &key,
                all,
                *selected,
                &parts.headers,
                request_time,
            ) {
                let (entry, ttl) = match parts.extensions.get::<PeerCopy>() {
                    Some(PeerCopy(limit)) => {
                        crate::cache::fill::refreshed_at_most(&cache, &key, (entry, ttl), *limit)
                    }
                    None => (entry, ttl),
                };
                return flight.done(entry, 304, ttl);
            }
        }
        // A 304 for nothing we hold: ask again without conditions.
        let retry = Request::from_parts(copy_parts(&plain_parts), RequestBody::Empty);
        match upstream.send(retry, &label, &to).await {
            Ok(resp) => resp,
            Err(e) => return flight.leader_only(LeaderAnswer::Error(e)),
        }
    } else {
        resp
    };

    let response_time = SystemTime::now();
    let (mut parts, mut body) = resp.into_parts();
    finish_origin_head(&mut parts.headers, response_time);
    let plan = if parts.extensions.get::<FramingConflict>().is_some() {
        Err(NotStored::Framing)
    } else {
        plan_store(
            &cache,
            &rules,
            &method,
            &request_headers,
            &parts,
            request_time,
            response_time,
        )
        .map(|mut plan| {
            // A copy of what another cache peer owns: kept only briefly.
            if let Some(PeerCopy(limit)) = parts.extensions.get::<PeerCopy>() {
                plan.keep_at_most(*limit, &cache, response_time);
            }
            plan
        })
    };
    // Tag fields are for this cache: the clients (and followers) never see
    // them, stored or not.
    rules.strip_tags(&mut parts.headers);
    let plan = match plan {
        Ok(plan) if plan.slicing.is_some() || plan.length > Some(cache.max_object_size()) => {
            // Kept in slices or on disk as the leader's body streams; the
            // others fetch on their own meanwhile (then from what is kept).
            flights.mark_uncollapsible(&key);
            let resp = Box::new(http::Response::from_parts(parts, body));
            return flight.leader_only(LeaderAnswer::Large(resp, Box::new(plan), key));
        }
        Ok(plan) => plan,
        Err(why) => {
            // Hit-for-miss: the next crowd fetches alone instead of queueing.
            flights.mark_uncollapsible(&key);
            if revalidating.is_some() {
                forget_replaced(&cache, &key, parts.status);
            }
            let resp = http::Response::from_parts(parts, body);
            return flight.leader_only(LeaderAnswer::Response(Box::new(resp), why));
        }
    };
    let (status, ttl) = (parts.status.as_u16(), plan.ttl);
    flight.filling(parts, ttl, plan.length);
    let mut fill = Fill::new(cache, key.clone(), plan).with_lock(lock);
    loop {
        match body.frame().await {
            None => break,
            Some(Err(e)) => {
                tracing::debug!(%key, error = %e, "origin body broke off; nothing stored");
                return flight.body_failed();
            }
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                // Too large to share: the leader alone reads the rest, and
                // the disk tier keeps it if it took it.
                let kept = fill.push(&data);
                if !kept || fill.spilled() {
                    flights.mark_uncollapsible(&key);
                    return flight.overflow(data, Teed::new(body, kept.then_some(fill)));
                }
                flight.chunk(data);
            }
        }
    }
    match fill.finish() {
        Some(entry) => flight.done(entry, status, ttl),
        None => flight.body_failed(),
    }
}
