//! Objects kept in slices (`cache/slices.rs`): a request for an object the
//! cache holds no whole copy of is answered from its slices, fetching the
//! missing ones from the origin by aligned Range, in order, as the client
//! reads; and a Range request for an unknown object starts slicing it
//! instead of passing the client's arbitrary range through.

use std::sync::Arc;
use std::time::SystemTime;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode, Version};

use super::body::ProxyBody;
use super::cached::{forwarded, Answer, CacheStep, Exchange};
use super::slice_fetch::{read_exactly, Origin, Piece, Walk};
use crate::cache::control::RequestControl;
use crate::cache::policy::{self, validation, NotStored, Reuse, StoredResponse, Why};
use crate::cache::range::{self, RangeAnswer};
use crate::cache::slice_flights::{self, Claim};
use crate::cache::slices::{self, ContentRange, Manifest, Slicing};
use crate::cache::store::Entry;
use crate::cache::{CacheStatus, Fwd, Stored};
use crate::upstream::FramingConflict;

impl CacheStep {
    /// A request for an object with no whole copy stored: served from its
    /// slices when it is sliced, or sliced now when it is a single Range.
    /// `Err` hands the exchange back for the usual miss.
    pub(super) async fn sliced(
        &self,
        ex: Exchange,
        req_cc: &RequestControl,
    ) -> Result<Answer, Exchange> {
        if self.cache.slice_size() == 0 {
            return Err(ex);
        }
        if let Some(manifest) = self.cache.manifest(&ex.key) {
            return Ok(self.serve_slices(ex, manifest, req_cc, false).await);
        }
        let start = ex
            .parts
            .headers
            .get(header::RANGE)
            .filter(|_| ex.parts.method == Method::GET)
            .filter(|_| !ex.parts.headers.contains_key(header::IF_RANGE))
            .and_then(range_start);
        match start {
            Some(start) if !self.cache.is_unsliceable(&ex.key) => {
                // A crowd starting the same object: one request fetches the
                // first slice; the others wait, then take the usual way from
                // the top (a manifest, a whole entry, or their own fetch).
                let size = self.cache.slice_size();
                let first = slices::slice_key(&ex.key, size, start / size);
                let _leading = match self.cache.slice_flights.claim(&first) {
                    Claim::Lead(leading) => leading,
                    Claim::Follow(gate) => {
                        slice_flights::wait(gate, self.flights.timeout()).await;
                        return Ok(Box::pin(self.exchange(ex)).await);
                    }
                };
                self.start_slicing(ex, start, req_cc).await
            }
            _ => Err(ex),
        }
    }

    /// The first Range request for an object: fetch the aligned slice that
    /// holds the first byte asked for; its Content-Range tells the object's
    /// length, and then the object is served from slices like any other.
    /// `Err` when the answer cannot be sliced: the request then takes the
    /// usual way (the whole object, stored when it fits).
    async fn start_slicing(
        &self,
        ex: Exchange,
        start: u64,
        req_cc: &RequestControl,
    ) -> Result<Answer, Exchange> {
        let size = self.cache.slice_size();
        let origin = Origin::of(&ex);
        let index = start / size;
        let bounds = (index * size, index * size + size - 1);
        let slice_key = slices::slice_key(&ex.key, size, index);
        let aligned = |r: &ContentRange, _: &HeaderMap| r.last == bounds.1.min(r.complete - 1);
        match origin.fetch(&self.cache, &slice_key, bounds, aligned).await {
            Piece::Failed(e) => Ok((
                Err(e.into()),
                forwarded(Fwd::UriMiss, None, Stored::NotApplicable("")),
            )),
            Piece::Other(resp) if resp.status() == StatusCode::OK => {
                // The origin ignores ranges: the whole object is here.
                Ok(self.whole_then_range(ex, resp).await)
            }
            Piece::Other(resp) if resp.status() != StatusCode::PARTIAL_CONTENT => {
                // A 416, a 404, a 5xx: the client gets what it would have
                // got, stored by the usual rules.
                Ok(self.deliver(ex, resp, Fwd::UriMiss))
            }
            Piece::Slice {
                body,
                head,
                whole: Some(plan),
            } => {
                let ttl = plan.ttl;
                let complete =
                    slices::ContentRange::parse(&head.headers.to_map(0)).map_or(0, |r| r.complete);
                if complete <= size && complete <= self.cache.max_object_size() {
                    // The whole object came in one piece: keep it whole.
                    let entry = Entry::new(plan.head, body, plan.secondary).with_tags(plan.tags);
                    let entry = Arc::new(entry);
                    self.cache.keep(&ex.key, entry.clone(), None);
                    let resp = self.serve_stored(
                        &entry,
                        &ex.parts.method,
                        &ex.parts.headers,
                        SystemTime::now(),
                        false,
                    );
                    let status = resp.status().as_u16();
                    let stored = Stored::Yes { ttl };
                    return Ok((Ok(resp), forwarded(Fwd::UriMiss, Some(status), stored)));
                }
                let slicing = Slicing { size, complete };
                let Some(etag) = plan
                    .head
                    .headers
                    .get_str(header::ETAG)
                    .and_then(|e| HeaderValue::from_str(e).ok())
                else {
                    self.cache.mark_unsliceable(&ex.key);
                    return Err(ex);
                };
                let entry = self.cache.put_manifest(&ex.key, size, plan.head, plan.tags);
                let manifest = Manifest {
                    entry,
                    slicing,
                    etag,
                };
                self.cache.put_slice(&ex.key, &manifest, index, head, body);
                Ok(self.serve_slices(ex, manifest, req_cc, true).await)
            }
            // A partial answer that cannot be kept (no strong validator,
            // Vary, private, an unaligned range): for a while, ranges of
            // this URL take the usual way.
            Piece::Slice { whole: None, .. } | Piece::Other(_) => {
                self.cache.mark_unsliceable(&ex.key);
                Err(ex)
            }
        }
    }

    /// Answers from the slices of `manifest`, fetching what is missing.
    /// `forwarded`: the origin was already asked for this request.
    async fn serve_slices(
        &self,
        ex: Exchange,
        mut manifest: Manifest,
        req_cc: &RequestControl,
        forwarded_already: bool,
    ) -> Answer {
        let now = SystemTime::now();
        let key = ex.key.clone();
        let heuristics = self.cache.heuristics();
        let decision = policy::decide(req_cc, &manifest.entry.head, &heuristics, now);
        let fresh = forwarded_already || matches!(decision, Reuse::Serve { .. });
        // Why the origin is asked when the manifest cannot be used as is.
        let stale = if decision == Reuse::Validate(Why::Request) {
            Fwd::Request
        } else {
            Fwd::Stale
        };
        if ex.parts.method == Method::HEAD && !fresh {
            // A HEAD cannot refresh the manifest: it goes to the origin.
            return self.fetch(ex, stale).await;
        }
        let (method, request) = (&ex.parts.method, &ex.parts.headers);
        let ttl = crate::cache::plan::freshness_left(&manifest.entry.head, &heuristics, now);
        if fresh
            && (*method == Method::HEAD
                || validation::client_not_modified(method, request, &manifest.entry.head))
        {
            let resp = self.serve_stored(&manifest.entry, method, request, now, true);
            return (Ok(resp), CacheStatus::Hit { ttl });
        }
        let complete = manifest.slicing.complete;
        let if_range_holds = request
            .get(header::IF_RANGE)
            .is_none_or(|v| range::if_range_holds(v, &manifest.entry.head));
        let answer = match request.get(header::RANGE).filter(|_| if_range_holds) {
            Some(value) => range::evaluate(value, complete),
            None => RangeAnswer::Full,
        };
        let (status, first, last) = match answer {
            RangeAnswer::Full => (StatusCode::OK, 0, complete - 1),
            RangeAnswer::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, start, end),
            RangeAnswer::Unsatisfiable => {
                return (
                    Ok(unsatisfiable(&manifest.entry, complete)),
                    CacheStatus::Hit { ttl },
                )
            }
        };
        let slicing = manifest.slicing;
        let (first_index, last_index) = (slicing.index_of(first), slicing.index_of(last));
        let origin = Origin::of(&ex);
        let mut first_piece = None;
        let mut fwd = None;
        let held_first = self.cache.slice(&key, &manifest, first_index).is_some();
        if !fresh || (!held_first && !forwarded_already) {
            // Fetched before answering: the first slice from the origin
            // tells whether the stored ones still belong to the object
            // (RFC 9111 §3.4: the same strong tag), and if not, the client
            // gets the new object, not a response cut short.
            let slice_key = slices::slice_key(&key, slicing.size, first_index);
            let etag = manifest.etag.clone();
            let same = |r: &ContentRange, h: &HeaderMap| {
                slicing.is_slice(first_index, r) && slices::strong_etag(h) == Some(&etag)
            };
            match origin
                .fetch(&self.cache, &slice_key, slicing.bounds(first_index), same)
                .await
            {
                Piece::Slice { body, head, whole } => {
                    match whole {
                        Some(plan) => {
                            manifest.entry =
                                self.cache
                                    .put_manifest(&key, slicing.size, plan.head, plan.tags);
                            self.cache
                                .put_slice(&key, &manifest, first_index, head, body.clone());
                        }
                        // No longer storable (now private, say): nothing
                        // stored of it may be served again.
                        None => {
                            self.cache.forget_slices(&key);
                        }
                    }
                    first_piece = Some(body);
                    fwd = Some(if fresh { Fwd::Partial } else { stale });
                }
                Piece::Other(resp) => {
                    // The object changed (or the origin stopped taking
                    // ranges): its slices are useless. A new partial
                    // answer starts the object over; anything else (a 200,
                    // a 404) is the answer.
                    self.cache.forget_slices(&key);
                    if resp.status() == StatusCode::PARTIAL_CONTENT {
                        return Box::pin(self.exchange(ex)).await;
                    }
                    return self.deliver(ex, resp, stale);
                }
                Piece::Failed(e) => {
                    let fwd = if fresh { Fwd::Partial } else { stale };
                    return (
                        Err(e.into()),
                        forwarded(fwd, None, Stored::NotApplicable("")),
                    );
                }
            }
        }
        let all_held = (first_index..=last_index).all(|i| {
            first_piece.is_some() && i == first_index
                || self.cache.slice(&key, &manifest, i).is_some()
        });
        let fwd = fwd.or(
            (!all_held || forwarded_already).then_some(if forwarded_already {
                Fwd::UriMiss
            } else {
                Fwd::Partial
            }),
        );
        let mut headers = manifest.entry.head.headers.to_map(6);
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        if status == StatusCode::PARTIAL_CONTENT {
            let value = format!("bytes {first}-{last}/{complete}");
            headers.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&value).expect("ascii"),
            );
        }
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(last - first + 1));
        let age = policy::current_age(&manifest.entry.head, SystemTime::now());
        headers.insert(header::AGE, HeaderValue::from(age));
        headers.append(header::VIA, self.via.entry(Version::HTTP_11));
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let walk = Walk {
            cache: self.cache.clone(),
            key,
            manifest,
            origin,
            first_piece,
            span: (first, last),
            collapse_timeout: self.flights.timeout(),
        };
        tokio::spawn(walk.run(tx));
        let mut resp = Response::new(ProxyBody::channel(rx, last - first + 1));
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        let cache_status = match fwd {
            None => CacheStatus::Hit { ttl },
            Some(fwd) => forwarded(fwd, Some(206), Stored::Yes { ttl }),
        };
        (Ok(resp), cache_status)
    }

    /// A 200 to a slice request: an object that fits is read whole, stored
    /// by the usual rules, and the client's range is served from it (as a
    /// range on a miss always was); a larger one streams to the client.
    async fn whole_then_range(
        &self,
        ex: Exchange,
        resp: Response<crate::upstream::OriginBody>,
    ) -> Answer {
        let length = crate::http::headers::content_length(resp.headers());
        let conflict = resp.extensions().get::<FramingConflict>().is_some();
        let Some(length) = length.filter(|l| *l <= self.cache.max_object_size() && !conflict)
        else {
            return self.deliver(ex, resp, Fwd::UriMiss);
        };
        let (parts, body) = resp.into_parts();
        let body = match read_exactly(body, length, &ex.upstream).await {
            Ok(body) => body,
            Err(e) => {
                return (
                    Err(e.into()),
                    forwarded(Fwd::UriMiss, Some(200), Stored::No(NotStored::Incomplete)),
                )
            }
        };
        let mut request_headers = ex.parts.headers.clone();
        request_headers.remove(header::RANGE);
        request_headers.remove(header::IF_RANGE);
        let now = SystemTime::now();
        let plan = crate::cache::plan::plan_store(
            &self.cache,
            &ex.rules,
            &Method::GET,
            &request_headers,
            &parts,
            now,
            now,
        );
        let mut parts = parts;
        ex.rules.strip_tags(&mut parts.headers);
        let (entry, outcome) = match plan {
            Ok(plan) => {
                let entry = Entry::new(plan.head, body, plan.secondary).with_tags(plan.tags);
                let entry = Arc::new(entry);
                self.cache.keep(&ex.key, entry.clone(), None);
                (entry, Stored::Yes { ttl: plan.ttl })
            }
            Err(why) => {
                let head = StoredResponse::new(parts.status, parts.headers, now, now);
                (
                    Arc::new(Entry::new(head, body, Vec::new())),
                    Stored::No(why),
                )
            }
        };
        let resp = self.serve_stored(&entry, &ex.parts.method, &ex.parts.headers, now, false);
        (Ok(resp), forwarded(Fwd::UriMiss, Some(200), outcome))
    }

    /// An origin answer that is not a slice, delivered and stored by the
    /// usual rules, for the client's request without its Range.
    fn deliver(
        &self,
        ex: Exchange,
        resp: Response<crate::upstream::OriginBody>,
        fwd: Fwd,
    ) -> Answer {
        let mut request_headers = ex.parts.headers.clone();
        request_headers.remove(header::RANGE);
        self.store_and_deliver_for(&ex, &request_headers, resp, fwd)
    }
}

/// The 416 for a range past the end (RFC 9110 §15.5.17).
fn unsatisfiable(manifest: &Entry, complete: u64) -> Response<ProxyBody> {
    let mut headers = manifest.head.headers.to_map(2);
    let value = format!("bytes */{complete}");
    headers.insert(
        header::CONTENT_RANGE,
        HeaderValue::from_str(&value).expect("ascii"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    let mut resp = Response::new(ProxyBody::empty());
    *resp.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
    *resp.headers_mut() = headers;
    resp
}

/// The first byte a single-range `Range` field asks for; 0 for a suffix
/// range (`-n`, whose start needs the length); `None` when it is not one
/// byte range this cache serves.
fn range_start(value: &HeaderValue) -> Option<u64> {
    let text = value.to_str().ok()?.trim();
    let spec = text.strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    match range::evaluate(value, u64::MAX) {
        RangeAnswer::Partial { .. } if spec.starts_with('-') => Some(0),
        RangeAnswer::Partial { start, .. } => Some(start),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_a_range_starts() {
        let start = |v: &str| range_start(&HeaderValue::from_str(v).unwrap());
        assert_eq!(start("bytes=0-"), Some(0));
        assert_eq!(start("bytes=1048576-2097151"), Some(1 << 20));
        assert_eq!(start("bytes=-500"), Some(0));
        assert_eq!(start("bytes=0-1, 5-6"), None);
        assert_eq!(start("bytes=5-4"), None);
        assert_eq!(start("items=0-1"), None);
    }
}
