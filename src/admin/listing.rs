//! `GET /cache/list?prefix=URL&tag=T&limit=N`: the stored URLs, for people
//! (the `viaduct cache ls` command and the dashboard's search box): one row
//! per URL with its status, variants, age, TTL, size and tags. By tag it
//! visits only the tagged keys (the tag index); by prefix or with neither,
//! it walks the store, up to `limit` rows (default 100, at most 10,000).

use std::time::SystemTime;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

use super::purge::{key_of, query_param};
use super::{json, text, Admin};
use crate::cache::key;
use crate::cache::policy;
use crate::cache::slices::{self, KeyKind};
use crate::cache::store::Variants;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;

pub(super) fn list(admin: &Admin, query: &str) -> Response<Full<Bytes>> {
    let namespaces = match admin.namespaces(query) {
        Ok(namespaces) => namespaces,
        Err(why) => return text(StatusCode::BAD_REQUEST, why),
    };
    let limit = match query_param(query, "limit").map(|l| l.parse::<usize>()) {
        None => DEFAULT_LIMIT,
        Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("limit must be a number from 1 to {MAX_LIMIT}\n"),
            )
        }
    };
    let prefix = match query_param(query, "prefix") {
        None => None,
        Some(p) => match key_of(&p) {
            Some(k) => Some(k),
            None => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("not an absolute http(s) URL: {p}\n"),
                )
            }
        },
    };
    let tag = query_param(query, "tag");
    if let Some(bad) = tag.as_ref().filter(|t| !valid_tag(t)) {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "tag {:?}: a tag is 1 to 1024 bytes, without spaces or commas\n",
                bad
            ),
        );
    }
    let wanted = |k: &str| {
        let (namespace, url) = key::split(k);
        namespaces.iter().any(|n| n == namespace)
            && prefix.as_deref().is_none_or(|p| url.starts_with(p))
    };
    // Every match first, then sorted, then cut: a truncated list is the
    // first `limit` keys, the same on every call.
    let mut found: Vec<(String, Variants, bool)> = Vec::new();
    let mut take = |k: &str, all: Variants| {
        // A sliced object shows once, under its URL, as its manifest; its
        // slices are not rows of their own.
        match slices::kind_of(k) {
            KeyKind::Slice(_) => {}
            KeyKind::Manifest(url) => found.push((url.to_string(), all, true)),
            KeyKind::Url => found.push((k.to_string(), all, false)),
        }
    };
    match &tag {
        Some(tag) => {
            for k in admin.cache.store.tagged(tag) {
                if wanted(&k) {
                    if let Some(all) = admin.cache.store.variants(&k) {
                        take(&k, all);
                    }
                }
            }
        }
        None => {
            for (k, all) in admin.cache.store.iter() {
                if wanted(&k) {
                    take(&k, all);
                }
            }
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let truncated = found.len() > limit;
    let now = SystemTime::now();
    let rows: Vec<Value> = found
        .iter()
        .take(limit)
        .map(|(k, all, sliced)| row(admin, k, all, *sliced, now))
        .collect();
    json(json!({ "entries": rows, "truncated": truncated }))
}

/// A tag as a purge or a listing may name it.
pub(super) fn valid_tag(tag: &str) -> bool {
    !tag.is_empty() && tag.len() <= crate::cache::tags::MAX_TAG_BYTES && !tag.contains([' ', ','])
}

/// One URL: its newest variant's facts, the variant count, and the union
/// of its tags.
fn row(admin: &Admin, k: &str, all: &Variants, sliced: bool, now: SystemTime) -> Value {
    let (namespace, url) = key::split(k);
    let newest = &all[0];
    let (lifetime, _) = policy::lifetime(&newest.head, &admin.cache.heuristics());
    let age = policy::current_age(&newest.head, now);
    let tags: Vec<&str> = crate::cache::tags::union(all.iter())
        .into_iter()
        .map(|t| &**t)
        .collect();
    json!({
        "key": k,
        "namespace": namespace,
        "url": url,
        "status": newest.head.status.as_u16(),
        "variants": all.len(),
        "age": age,
        "ttl": lifetime as i64 - age as i64,
        "size": all.iter().map(|e| e.weight()).sum::<usize>(),
        "tags": tags,
        "sliced": sliced,
    })
}
