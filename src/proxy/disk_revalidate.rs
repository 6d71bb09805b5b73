//! A stale large response on disk (its body streams from the file and is
//! never in memory) revalidated with the origin (RFC 9111 §4.3): the
//! request goes with the stored validators. A 304 serves the body from the
//! file with the refreshed head (§4.3.4) and writes a new record in the
//! background; any other answer is a new response, stored and delivered as
//! on a miss. Without validators, or when the 304 names another
//! representation, the caller fetches the whole response instead.

use std::sync::Arc;
use std::time::SystemTime;

use http::{header, Request, StatusCode};

use super::body::ProxyBody;
use super::cached::{forwarded, Answer, CacheStep, Delivery, Exchange};
use super::serve::{response_with, Body};
use crate::cache::disk::Streamed;
use crate::cache::fill;
use crate::cache::policy::{validation, Why};
use crate::cache::{Fwd, Stored};
use crate::http::headers;
use crate::upstream::peers::PeerCopy;
use crate::upstream::StoreTag;

impl CacheStep {
    /// The answer, and whether it was a 304 (served from the file).
    pub(super) async fn revalidate_on_disk(
        &self,
        ex: &Exchange,
        streamed: Arc<Streamed>,
        why: Why,
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
                let status = forwarded(fwd, None, Stored::NotApplicable(""));
                return Some(((Err(e.into()), status), false));
            }
        };
        if resp.status() != StatusCode::NOT_MODIFIED {
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
        let resp = {
            let len = streamed.body_len();
            let from = Arc::clone(&streamed);
            let body = Body {
                len,
                part: move |span: Option<(u64, u64)>| {
                    let (start, end) = span.unwrap_or((0, len - 1));
                    ProxyBody::channel(from.stream(start, end), end - start + 1)
                },
            };
            let via = self.via.entry(http::Version::HTTP_11);
            response_with(
                &entry,
                body,
                &method,
                &client,
                SystemTime::now(),
                false,
                via,
            )
        };
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
