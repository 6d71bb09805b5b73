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

use http::{Request, StatusCode};
use http_body_util::BodyExt;

use super::cached::{forwarded, Answer, CacheStep, Delivery, Exchange};
use super::error::ProxyError;
use super::serve::triggers_stale_if_error;
use crate::cache::control::RequestControl;
use crate::cache::disk::Streamed;
use crate::cache::policy::{validation, Why};
use crate::cache::{fill, CacheStats, CacheStatus, Fwd, Stored};
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
        let ttl = self.stale_within(head, window, SystemTime::now())?;
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
        let now = SystemTime::now();
        let resp = self.streamed_response(streamed, streamed.entry(), method, request, now, true);
        let status = self.served_stale(ttl, None, "stale-while-revalidate");
        Some((Ok(resp), status))
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
                let stale = self.stale_after_failure(&stored.head, req_cc, None, Some(&e), |now| {
                    self.streamed_response(&streamed, stored, &method, &client, now, true)
                });
                if let Some((resp, status)) = stale {
                    return Some(((Ok(resp), status), false));
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
                let stale = self.stale_after_failure(&stored.head, req_cc, code, None, |now| {
                    self.streamed_response(&streamed, stored, &method, &client, now, true)
                });
                if let Some((resp, status)) = stale {
                    return Some(((Ok(resp), status), false));
                }
            }
            // A new representation: it replaces the record.
            let mut request_headers = client;
            fill::origin_request(&mut request_headers, false, None);
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
        let now = SystemTime::now();
        let resp = self.streamed_response(&streamed, &entry, &method, &client, now, false);
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
