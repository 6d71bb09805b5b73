//! Micro-benchmarks of the cache's hot pieces: Cache-Control parsing, the
//! policy decision for a typical response, key building plus a hit lookup in
//! a store of 100k entries, and building a hit response.
//!
//! Run: `cargo bench --bench micro`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use viaduct::cache::control::{RequestControl, ResponseControl};
use viaduct::cache::key;
use viaduct::cache::policy::{self, Heuristics, StoredResponse};
use viaduct::cache::store::{Entry, Lookup, Store};

fn response_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "cache-control",
        HeaderValue::from_static("public, max-age=3600, stale-while-revalidate=60"),
    );
    h.insert(
        "content-type",
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert("content-length", HeaderValue::from_static("1024"));
    h.insert("etag", HeaderValue::from_static("\"5f3c-1a2b\""));
    h.insert(
        "last-modified",
        HeaderValue::from_static("Mon, 23 Nov 2026 10:00:00 GMT"),
    );
    h.insert(
        "date",
        httpdate::fmt_http_date(SystemTime::now())
            .parse::<HeaderValue>()
            .unwrap(),
    );
    h
}

fn entry(now: SystemTime) -> Entry {
    let head = StoredResponse::new(StatusCode::OK, response_headers(), now, now);
    Entry::compact(head, &[Bytes::from(vec![b'x'; 1024])], Vec::new())
}

fn benches(c: &mut Criterion) {
    let headers = response_headers();
    c.bench_function("cache_control_parse_response", |b| {
        b.iter(|| ResponseControl::parse(black_box(&headers)))
    });
    let mut request = HeaderMap::new();
    request.insert("cache-control", HeaderValue::from_static("max-age=0"));
    request.insert(
        "accept-encoding",
        HeaderValue::from_static("gzip, deflate, br"),
    );
    c.bench_function("cache_control_parse_request", |b| {
        b.iter(|| RequestControl::parse(black_box(&request)))
    });

    let now = SystemTime::now();
    let stored = StoredResponse::new(StatusCode::OK, response_headers(), now, now);
    let plain = RequestControl::default();
    let heuristics = Heuristics::default();
    let later = now + Duration::from_secs(30);
    c.bench_function("policy_decide_fresh_hit", |b| {
        b.iter(|| policy::decide(black_box(&plain), black_box(&stored), &heuristics, later))
    });

    let store = Store::new(1 << 30, 16, Default::default());
    let shared = Arc::new(entry(now));
    for i in 0..100_000 {
        store.insert(
            &key::primary(
                key::FORWARD,
                "http",
                "bench.test",
                80,
                &format!("/objects/{i}"),
            ),
            shared.clone(),
        );
    }
    let empty = HeaderMap::new();
    let mut i = 0u32;
    c.bench_function("key_and_hit_lookup_100k", |b| {
        b.iter(|| {
            i = (i + 7919) % 100_000;
            let k = key::primary(
                key::FORWARD,
                "http",
                "Bench.test:80",
                80,
                &format!("/objects/{i}"),
            );
            matches!(store.lookup(&k, &empty), Lookup::Found { .. })
        })
    });

    let hit = entry(now);
    let via = HeaderValue::from_static("1.1 viaduct");
    c.bench_function("build_hit_response", |b| {
        b.iter(|| {
            viaduct::stored_response(
                black_box(&hit),
                &Method::GET,
                &empty,
                later,
                true,
                via.clone(),
            )
        })
    });
}

criterion_group!(micro, benches);
criterion_main!(micro);
