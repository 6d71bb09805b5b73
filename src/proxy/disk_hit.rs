//! A memory miss answered by the disk tier (`[cache.disk]`): the stored
//! response is served from its file when the policy lets it be reused as
//! it is, with `Cache-Status: ...; detail=disk`. A small hot one is copied
//! into memory; a stale small one is put in memory so that the ordinary
//! revalidation finds it with its validators; a large stale one is
//! revalidated from here (`disk_revalidate.rs`).

use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderMap, Method, Response};

use super::body::ProxyBody;
use super::cached::{Answer, CacheStep, Exchange};
use super::serve::{response_with, Body};
use crate::cache::control::RequestControl;
use crate::cache::disk::{Hit, Streamed};
use crate::cache::policy::{self, Reuse};
use crate::cache::store::Entry;
use crate::cache::{CacheStats, CacheStatus, Tier};

/// What the disk made of a memory miss.
pub(super) enum FromDisk {
    /// Answered (boxed: an answer is large, and this is rare).
    Served(Box<Answer>),
    /// Answered by the origin: a stale record revalidated, and replaced.
    Fetched(Box<Answer>),
    /// Now in memory (stale): look there again.
    InMemory,
}

impl CacheStep {
    pub(super) async fn ask_disk(
        &self,
        ex: &Exchange,
        req_cc: &RequestControl,
    ) -> Option<FromDisk> {
        let disk = self.cache.disk.as_ref()?;
        let answer = self.read_disk(ex, req_cc).await;
        match &answer {
            Some(FromDisk::Served(_)) => disk.stats.hits.inc(),
            _ => disk.stats.misses.inc(),
        };
        answer
    }

    async fn read_disk(&self, ex: &Exchange, req_cc: &RequestControl) -> Option<FromDisk> {
        let disk = self.cache.disk.as_ref()?;
        let hit = disk.read(&ex.key, &ex.parts.headers).await?;
        let now = SystemTime::now();
        let heuristics = self.cache.heuristics();
        let (method, request) = (&ex.parts.method, &ex.parts.headers);
        match hit {
            Hit::Whole { entry, hot } => {
                match policy::decide(req_cc, &entry.head, &heuristics, now) {
                    Reuse::Serve { ttl } => {
                        if hot && entry.body.len() as u64 <= self.cache.max_object_size() {
                            self.cache.store.insert(&ex.key, entry.clone());
                            disk.stats.promotions.inc();
                        }
                        if ttl <= 0 {
                            CacheStats::count(&self.cache.stats.stale_served);
                        }
                        let resp = self.serve_stored(&entry, method, request, now, true);
                        let status = CacheStatus::TierHit {
                            ttl,
                            tier: Tier::Disk,
                        };
                        Some(FromDisk::Served(Box::new((Ok(resp), status))))
                    }
                    Reuse::Validate(_)
                        if entry.body.len() as u64 <= self.cache.max_object_size() =>
                    {
                        self.cache.store.insert(&ex.key, entry);
                        Some(FromDisk::InMemory)
                    }
                    Reuse::Validate(_) => None,
                }
            }
            Hit::Stream(streamed) => {
                let ttl = match policy::decide(req_cc, &streamed.entry().head, &heuristics, now) {
                    Reuse::Serve { ttl } => ttl,
                    Reuse::Validate(_) if req_cc.only_if_cached => return None,
                    Reuse::Validate(why) => {
                        if let Some(answer) = self.stale_while_revalidating(ex, &streamed, why) {
                            return Some(FromDisk::Served(Box::new(answer)));
                        }
                        let (answer, not_modified) =
                            self.revalidate_on_disk(ex, streamed, why, req_cc).await?;
                        let answer = Box::new(answer);
                        return Some(if not_modified {
                            FromDisk::Served(answer)
                        } else {
                            FromDisk::Fetched(answer)
                        });
                    }
                };
                if ttl <= 0 {
                    CacheStats::count(&self.cache.stats.stale_served);
                }
                let resp =
                    self.streamed_response(&streamed, streamed.entry(), method, request, now, true);
                let status = CacheStatus::TierHit {
                    ttl,
                    tier: Tier::Disk,
                };
                Some(FromDisk::Served(Box::new((Ok(resp), status))))
            }
        }
    }

    /// The response for a large record whose body streams from its file,
    /// with `entry`'s head (the record's, or one refreshed by a 304).
    pub(super) fn streamed_response(
        &self,
        streamed: &Arc<Streamed>,
        entry: &Entry,
        method: &Method,
        request: &HeaderMap,
        now: SystemTime,
        unvalidated: bool,
    ) -> Response<ProxyBody> {
        let len = streamed.body_len();
        let from = Arc::clone(streamed);
        let body = Body {
            len,
            part: move |span: Option<(u64, u64)>| {
                let (start, end) = span.unwrap_or((0, len - 1));
                ProxyBody::channel(from.stream(start, end), end - start + 1)
            },
        };
        let via = self.via.entry(http::Version::HTTP_11);
        response_with(entry, body, method, request, now, unvalidated, via)
    }
}
