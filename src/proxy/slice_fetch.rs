//! Getting slices from the origin (`cache/slices.rs`): one aligned Range
//! request per slice, checked to be the slice asked for and of the same
//! representation, and the walk that sends a sliced object's bytes to a
//! client in order, fetching the slices the store does not hold.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;

use super::cached::Exchange;
use crate::cache::fill::finish_origin_head;
use crate::cache::plan::{plan_sliced, Plan};
use crate::cache::policy::StoredResponse;
use crate::cache::rules::CacheRules;
use crate::cache::slice_flights::{self, Claim};
use crate::cache::slices::{self, ContentRange, Manifest};
use crate::cache::Cache;
use crate::http::body::{BoxError, RequestBody};
use crate::upstream::{copy_parts, FramingConflict, StoreTag, Upstream, UpstreamError};

/// What the origin gave for one slice.
pub(super) enum Piece {
    /// Exactly the slice asked for, of the same representation.
    Slice {
        body: Bytes,
        /// The 206 head, as stored with the slice.
        head: StoredResponse,
        /// The whole object's head, freshness and tags, when it may be stored.
        whole: Option<Box<Plan>>,
    },
    /// Something else: a different representation, a 200, an error status.
    Other(Response<crate::upstream::OriginBody>),
    Failed(UpstreamError),
}

/// How to reach the origin for slices, detached from the client's request.
pub(super) struct Origin {
    pool: Arc<Upstream>,
    label: String,
    to: crate::upstream::Target,
    rules: Arc<CacheRules>,
    /// The client's request without body, conditionals or Range.
    parts: Parts,
}

impl Origin {
    pub(super) fn of(ex: &Exchange) -> Origin {
        let mut parts = copy_parts(&ex.parts);
        parts.method = Method::GET;
        for name in [
            header::RANGE,
            header::IF_RANGE,
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::IF_MATCH,
            header::IF_UNMODIFIED_SINCE,
        ] {
            parts.headers.remove(name);
        }
        Origin {
            pool: ex.pool.clone(),
            label: ex.upstream.clone(),
            to: ex.to.clone(),
            rules: ex.rules.clone(),
            parts,
        }
    }

    /// Asks for bytes `first..=last`; `expect` checks the 206 is the slice
    /// wanted (and of the same representation).
    pub(super) async fn fetch(
        &self,
        cache: &Cache,
        key: &str,
        (first, last): (u64, u64),
        expect: impl Fn(&ContentRange, &HeaderMap) -> bool,
    ) -> Piece {
        let mut parts = copy_parts(&self.parts);
        let range = format!("bytes={first}-{last}");
        parts
            .headers
            .insert(header::RANGE, HeaderValue::from_str(&range).expect("ascii"));
        parts.extensions.insert(StoreTag(key.to_string()));
        let request_time = SystemTime::now();
        let out = Request::from_parts(parts, RequestBody::Empty);
        let resp = match self.pool.send(out, &self.label, &self.to).await {
            Ok(resp) => resp,
            Err(e) => return Piece::Failed(e),
        };
        let response_time = SystemTime::now();
        let (mut head, body) = resp.into_parts();
        finish_origin_head(&mut head.headers, response_time);
        let content_range = ContentRange::parse(&head.headers);
        let wanted = head.status == StatusCode::PARTIAL_CONTENT
            && content_range.is_some_and(|r| r.first == first && expect(&r, &head.headers))
            && slices::strong_etag(&head.headers).is_some()
            && !head.headers.contains_key(header::VARY)
            // Framed two ways: delivered at most, never kept (RFC 9112 §6.3).
            && head.extensions.get::<FramingConflict>().is_none();
        let Some(content_range) = content_range.filter(|_| wanted) else {
            return Piece::Other(Response::from_parts(head, body));
        };
        let body = match read_exactly(body, content_range.bytes(), &self.label).await {
            Ok(body) => body,
            Err(e) => return Piece::Failed(e),
        };
        let mut whole = head.clone();
        whole.status = StatusCode::OK;
        whole.headers = slices::whole_head(&head.headers, content_range.complete);
        let plan = plan_sliced(
            cache,
            &self.rules,
            &self.parts.headers,
            &whole,
            request_time,
            response_time,
        );
        let slice_head = StoredResponse::targeted(
            StatusCode::PARTIAL_CONTENT,
            head.headers,
            request_time,
            response_time,
            &self.rules.targeted_fields,
        );
        Piece::Slice {
            body,
            head: slice_head,
            whole: plan.ok().map(Box::new),
        }
    }
}

/// Reads a slice's body whole; more or fewer bytes than its Content-Range
/// says is a broken answer.
pub(super) async fn read_exactly(
    mut body: crate::upstream::OriginBody,
    len: u64,
    upstream: &str,
) -> Result<Bytes, UpstreamError> {
    let broken = |detail: String| UpstreamError::Invalid {
        upstream: upstream.to_string(),
        detail,
    };
    let mut out = BytesMut::with_capacity(len as usize);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| broken(format!("slice body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if out.len() as u64 + data.len() as u64 > len {
                return Err(broken("a slice longer than its range".into()));
            }
            out.extend_from_slice(&data);
        }
    }
    if out.len() as u64 != len {
        return Err(broken("a slice shorter than its range".into()));
    }
    Ok(out.freeze())
}

/// Sends bytes `span` of a sliced object to the client, slice by slice:
/// from the store when held, else from the origin (and then stored). The
/// client leaving stops the walk after the slice in hand.
pub(super) struct Walk {
    pub cache: Arc<Cache>,
    pub key: String,
    pub manifest: Manifest,
    pub origin: Origin,
    pub first_piece: Option<Bytes>,
    pub span: (u64, u64),
    /// How long to wait for another request's fetch of a slice.
    pub collapse_timeout: std::time::Duration,
}

impl Walk {
    pub(super) async fn run(mut self, tx: tokio::sync::mpsc::Sender<Result<Bytes, BoxError>>) {
        let slicing = self.manifest.slicing;
        let (first, last) = self.span;
        for index in slicing.index_of(first)..=slicing.index_of(last) {
            let piece = match self.piece(index).await {
                Ok(piece) => piece,
                Err(e) => {
                    tracing::debug!(key = %self.key, index, error = %e, "slice fetch failed; response cut");
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            };
            let (start, end) = slicing.bounds(index);
            let from = first.max(start) - start;
            let to = last.min(end) - start;
            if tx
                .send(Ok(piece.slice(from as usize..=to as usize)))
                .await
                .is_err()
            {
                return;
            }
        }
    }

    async fn piece(&mut self, index: u64) -> Result<Bytes, String> {
        if let Some(piece) = self.first_piece.take() {
            return Ok(piece);
        }
        if let Some(piece) = self.cache.slice(&self.key, &self.manifest, index) {
            return Ok(piece);
        }
        let slicing = self.manifest.slicing;
        let slice_key = slices::slice_key(&self.key, slicing.size, index);
        // Another request fetching this slice: wait for it, then take it
        // from the store (or, if it did not come, fetch it here).
        let _leading = match self.cache.slice_flights.claim(&slice_key) {
            Claim::Lead(leading) => leading,
            Claim::Follow(gate) => {
                slice_flights::wait(gate, self.collapse_timeout).await;
                if let Some(piece) = self.cache.slice(&self.key, &self.manifest, index) {
                    return Ok(piece);
                }
                match self.cache.slice_flights.claim(&slice_key) {
                    Claim::Lead(leading) => leading,
                    // Still being fetched: fetch alone rather than wait twice.
                    Claim::Follow(_) => return self.fetch_piece(index, &slice_key).await,
                }
            }
        };
        self.fetch_piece(index, &slice_key).await
    }

    /// Fetches slice `index` from the origin and stores it.
    async fn fetch_piece(&mut self, index: u64, slice_key: &str) -> Result<Bytes, String> {
        let slicing = self.manifest.slicing;
        let etag = self.manifest.etag.clone();
        let same = |r: &ContentRange, h: &HeaderMap| {
            slicing.is_slice(index, r) && slices::strong_etag(h) == Some(&etag)
        };
        match self
            .origin
            .fetch(&self.cache, slice_key, slicing.bounds(index), same)
            .await
        {
            Piece::Slice { body, head, whole } => {
                if whole.is_some() {
                    self.cache
                        .put_slice(&self.key, &self.manifest, index, head, body.clone());
                }
                Ok(body)
            }
            Piece::Other(resp) => {
                // The object changed under us: what was sent cannot be
                // completed, and nothing stored of it is good any more.
                self.cache.forget_slices(&self.key);
                Err(format!(
                    "the object changed while it was served in slices (origin answered {})",
                    resp.status()
                ))
            }
            Piece::Failed(e) => Err(e.to_string()),
        }
    }
}
