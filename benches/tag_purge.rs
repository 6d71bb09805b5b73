//! Purge by tag at scale (issue 16): 1,000,000 stored URLs, each with one of
//! 100 tags (10,000 URLs per tag) and a tag of its own; then one tag purged.
//! Prints the time the purge took, the memory the tag index costs (RSS with
//! tags minus RSS without, per tag-key pair and per tag), and checks the
//! index follows the store. Run: `cargo bench --bench tag_purge`.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use viaduct::cache::policy::StoredResponse;
use viaduct::cache::store::Entry;
use viaduct::cache::Cache;
use viaduct::config::{CacheConfig, Size};

const URLS: usize = 1_000_000;
const SHARED_TAGS: usize = 100;

#[path = "rss.rs"]
mod rss;
use rss::rss_kb;

fn fill(cache: &Cache, tagged: bool) {
    let now = SystemTime::now();
    let mut h = http::HeaderMap::new();
    h.insert("cache-control", "max-age=3600".parse().unwrap());
    h.insert("content-length", "16".parse().unwrap());
    let head = StoredResponse::new(http::StatusCode::OK, h, now, now);
    let body = bytes::Bytes::from_static(b"0123456789abcdef");
    for i in 0..URLS {
        let key = format!("route:shop http://shop.test:80/p/{i}");
        let mut entry = Entry::new(head.clone(), body.clone(), Vec::new());
        if tagged {
            let tags: Box<[Arc<str>]> = vec![
                Arc::from(format!("category-{}", i % SHARED_TAGS)),
                Arc::from(format!("product-{i}")),
            ]
            .into();
            entry = entry.with_tags(tags);
        }
        cache.store.insert(&key, Arc::new(entry));
    }
    cache.store.entry_count();
}

fn main() {
    // Memory is measured in two fresh processes (the allocator keeps what a
    // dropped cache freed): the same million URLs without tags, then with.
    match std::env::var("TAG_PURGE_MODE").as_deref() {
        Ok("plain") => return println!("{}", grow(false).1),
        Ok("tagged") => return println!("{}", grow(true).1),
        _ => {}
    }
    let rss_of = |mode: &str| -> u64 {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .env("TAG_PURGE_MODE", mode)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    let without = rss_of("plain");
    let with = rss_of("tagged");
    let (cache, _) = grow(true);
    let (tags, pairs) = cache.store.tag_index_size();
    assert_eq!(pairs, 2 * URLS, "the index holds every tag of every URL");
    let extra = with.saturating_sub(without) * 1024;
    println!("{URLS} URLs, {tags} tags, {pairs} tag-key pairs");
    println!(
        "RSS without tags {:.0} MiB, with tags {:.0} MiB: {:.0} bytes per tag-key pair (on the entry and in the index)",
        without as f64 / 1024.0,
        with as f64 / 1024.0,
        extra as f64 / pairs as f64
    );
    let namespaces = ["route:shop"];
    let started = Instant::now();
    let purged = cache.purge_tags(&namespaces, &["category-7".to_string()], false);
    let took = started.elapsed();
    assert_eq!(purged, URLS / SHARED_TAGS);
    println!(
        "purge tag=category-7: {purged} URLs in {:.1} ms ({:.2} us per URL)",
        took.as_secs_f64() * 1000.0,
        took.as_secs_f64() * 1e6 / purged as f64
    );
    let (_, after) = cache.store.tag_index_size();
    assert_eq!(after, pairs - 2 * purged, "the purged URLs left the index");
    let started = Instant::now();
    let none = cache.purge_tags(&namespaces, &["no-such-tag".to_string()], false);
    println!(
        "purge of a tag nobody carries: {none} URLs in {:.3} ms (the index, not a walk)",
        started.elapsed().as_secs_f64() * 1000.0
    );
}

/// A cache holding the million URLs, and the RSS (KiB) it added.
fn grow(tagged: bool) -> (Cache, u64) {
    let config = CacheConfig {
        capacity: Size(16 << 30),
        ..CacheConfig::default()
    };
    let base = rss_kb();
    let cache = Cache::new(&config);
    fill(&cache, tagged);
    let grown = rss_kb() - base;
    (cache, grown)
}
