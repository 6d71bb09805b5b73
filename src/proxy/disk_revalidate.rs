//! A stale large response on disk (its body streams from the file and is
//! never in memory) revalidated with the origin (RFC 9111 §4.3): the
//! request goes with the stored validators. A 304 serves the body from the
//! file with the refreshed head (§4.3.4) and writes a new record in the
//! background; any other answer is a new response, stored and delivered as
//! on a miss. Without validators, or when the 304 names another
//! representation, the caller fetches the whole response instead.
//!
//! The stale extensions apply as in memory: inside its
//! stale-while-revalidate window the record is served now and revalidated
//! once in the background (RFC 5861 §3); when the origin fails, it is
//! served within stale-if-error (§4) or, unreachable, within
//! `stale_if_unreachable` (RFC 9111 §4.2.4), and never when it must be
//! revalidated (§5.2.2.2: a 504 instead).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use http::{header, HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;

use super::cached::{forwarded, Answer, CacheStep, Delivery, Exchange};
use super::error::ProxyError;
use super::serve::triggers_stale_if_error;
use crate::cache::control::RequestControl;
use crate::cache::disk::Streamed;
use crate::cache::policy::{validation, Why};
use crate::cache::{fill, plan, CacheStats, CacheStatus, Fwd, Stored};
use crate::http::headers;
use crate::upstream::peers::PeerCopy;
use crate::upstream::StoreTag;

impl CacheStep {
    /// Inside its stale-while-revalidate window: the record served stale
    /// now, and revalidated once in the background.
    pub(super) fn stale_while_revalidating(
        &self,
        ex: &Exchange,
        streamed: &Arc<Streamed>,
        why: Why,
    ) -> Option<Answer> {
        let head = &streamed.entry().head;
        let window = self.cache.stale_while_revalidate(head);
        if why != Why::Stale || window == 0 {
            return None;
        }
        let ttl = self.stale_for(streamed, window)?;
        // One revalidation per URL at a time. (Not a flight: a response
        // too large to share marks its URL "fetch alone".)
        if let Some(guard) = self.disk_revalidations.claim(&ex.key) {
            CacheStats::count(&self.cache.stats.background_revalidations);
            let (me, copy, from) = (self.clone(), ex.replay(), streamed.clone());
            tokio::spawn(async move {
                let _guard = guard;
                let req_cc = RequestControl::default();
                let revalidated = me.revalidate_on_disk(&copy, from, why, &req_cc).await;
                // Nobody reads it: a new representation is drained into
                // its fill here (a 304 or a stale copy need nothing more).
                if let Some(((Ok(resp), CacheStatus::Forward { outcome, .. }), false)) = revalidated
                {
                    if matches!(outcome, Stored::Yes { .. }) {
                        let mut body = resp.into_body();
                        while let Some(Ok(_)) = body.frame().await {}
                    }
                }
            });
        }
        let (method, request) = (&ex.parts.method, &ex.parts.headers);
        let resp = self.streamed_response(streamed, streamed.entry(), method, request, true);
        Some((
            Ok(resp),
            self.served_stale(ttl, None, "stale-while-revalidate"),
        ))
    }

    /// The answer, and whether it was a 304 (served from the file).
    pub(super) async fn revalidate_on_disk(
        &self,
        ex: &Exchange,
        streamed: Arc<Streamed>,
        why: Why,
        req_cc: &RequestControl,
    ) -> Option<(Answer, bool)> {
        let stored = streamed.entry();
        let fields =
            validation::conditional_fields(std::iter::once(&stored.head), Some(&stored.head));
        if fields.is_empty() {
            return None;
        }
        let fwd = if why == Why::Request {
            Fwd::Request
        } else {
            Fwd::Stale
        };
        let mut out = ex.replay();
        let client = out.parts.headers.clone();
        let method = out.parts.method.clone();
        fill::origin_request(&mut out.parts.headers, false, None);
        for (name, value) in fields {
            out.parts.headers.insert(name, value);
        }
        out.parts.extensions.insert(StoreTag(out.key.clone()));
        let request_time = SystemTime::now();
        let request = Request::from_parts(out.parts, out.body);
        let resp = match out.pool.send(request, &out.upstream, &out.to).await {
            Ok(resp) => resp,
            Err(e) => {
                let stale = self.stale_on_error(&streamed, req_cc, &method, &client, None);
                let stale = stale.or_else(|| {
                    let window = self.cache.stale_if_unreachable(&stored.head);
                    let ttl = self
                        .stale_for(&streamed, window)
                        .filter(|_| e.unreachable())?;
                    let resp = self.streamed_response(&streamed, stored, &method, &client, true);
                    Some((Ok(resp), self.served_stale(ttl, None, "origin-unreachable")))
                });
                if let Some(answer) = stale {
                    return Some((answer, false));
                }
                let answer = if stored.head.control.forbids_stale() {
                    let status = forwarded(fwd, None, Stored::NotApplicable("must-revalidate"));
                    (Err(ProxyError::RevalidationFailed(e)), status)
                } else {
                    (
                        Err(e.into()),
                        forwarded(fwd, None, Stored::NotApplicable("")),
                    )
                };
                return Some((answer, false));
            }
        };
        let status = resp.status();
        if status != StatusCode::NOT_MODIFIED {
            if triggers_stale_if_error(status) {
                let code = Some(status.as_u16());
                if let Some(answer) = self.stale_on_error(&streamed, req_cc, &method, &client, code)
                {
                    return Some((answer, false));
                }
            }
            // A new representation: it replaces the record.
            let mut request_headers = client;
            request_headers.remove(header::IF_NONE_MATCH);
            request_headers.remove(header::IF_MODIFIED_SINCE);
            let ctx = Delivery {
                method: &method,
                request_headers: &request_headers,
                rules: &ex.rules,
                key: ex.key.clone(),
                fwd,
                request_time,
                replacing: true,
            };
            return Some((self.store_and_deliver(resp, ctx), false));
        }
        let (mut parts, _) = resp.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        let (entry, ttl) =
            fill::refresh_head(&self.cache, &ex.rules, stored, &parts.headers, request_time)?;
        let resp = self.streamed_response(&streamed, &entry, &method, &client, false);
        // A copy of what a cache peer owns is not kept longer than it
        // allows: served now, fetched again next time.
        if parts.extensions.get::<PeerCopy>().is_none() {
            self.cache.refresh_on_disk(&ex.key, entry, streamed);
        }
        Some((
            (Ok(resp), forwarded(fwd, Some(304), Stored::Yes { ttl })),
            true,
        ))
    }

    /// The record served stale because the origin failed (`code`: the
    /// status it answered), within stale-if-error.
    fn stale_on_error(
        &self,
        streamed: &Arc<Streamed>,
        req_cc: &RequestControl,
        method: &Method,
        request: &HeaderMap,
        code: Option<u16>,
    ) -> Option<Answer> {
        let window = self
            .cache
            .stale_if_error(&streamed.entry().head, Some(req_cc));
        let ttl = self.stale_for(streamed, window)?;
        let resp = self.streamed_response(streamed, streamed.entry(), method, request, true);
        Some((Ok(resp), self.served_stale(ttl, code, "stale-if-error")))
    }

    /// The record's freshness left, if it expired less than `window`
    /// seconds ago.
    fn stale_for(&self, streamed: &Streamed, window: u64) -> Option<i64> {
        let heuristics = self.cache.heuristics();
        let now = SystemTime::now();
        let ttl = plan::freshness_left(&streamed.entry().head, &heuristics, now);
        (window > 0 && ttl + window as i64 >= 0).then_some(ttl)
    }

    fn served_stale(&self, ttl: i64, fwd_status: Option<u16>, reason: &'static str) -> CacheStatus {
        CacheStats::count(&self.cache.stats.stale_served);
        CacheStatus::StaleServed {
            ttl,
            fwd_status,
            reason,
        }
    }
}

/// The URLs whose large record is being revalidated in the background.
#[derive(Default)]
pub(super) struct Revalidating(Mutex<HashSet<String>>);

/// A URL's claim on its background revalidation, given up when dropped.
pub(super) struct Claim {
    set: Arc<Revalidating>,
    key: String,
}

impl Revalidating {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `None` when `key` is being revalidated already.
    fn claim(self: &Arc<Self>, key: &str) -> Option<Claim> {
        self.lock().insert(key.to_string()).then(|| Claim {
            set: self.clone(),
            key: key.to_string(),
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.set.lock().remove(&self.key);
    }
}
