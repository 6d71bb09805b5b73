//! Where the bytes of a cached object go: the size of the entry structs, the
//! resident memory of 100k entries of 1 KiB held alone, and what the store
//! (moka) adds on top. Run: `cargo bench --bench entry_size`.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::sync::Arc;
#[path = "rss.rs"]
mod rss;
use rss::rss_kb;

fn main() {
    use viaduct::cache::policy::StoredResponse;
    use viaduct::cache::store::{Entry, Store};
    println!(
        "Entry {} StoredResponse {} HeaderMap {} ResponseControl {}",
        std::mem::size_of::<Entry>(),
        std::mem::size_of::<StoredResponse>(),
        std::mem::size_of::<http::HeaderMap>(),
        std::mem::size_of::<viaduct::cache::control::ResponseControl>()
    );
    let make = |i: usize| {
        let mut h = http::HeaderMap::new();
        h.insert("cache-control", "max-age=3600".parse().unwrap());
        h.insert("content-type", "application/octet-stream".parse().unwrap());
        h.insert("content-length", "1024".parse().unwrap());
        h.insert("date", "Tue, 24 Nov 2026 14:00:00 GMT".parse().unwrap());
        let now = std::time::SystemTime::now();
        let head = StoredResponse::new(http::StatusCode::OK, h, now, now);
        let _ = i;
        Entry::compact(head, &[bytes::Bytes::from(vec![b'z'; 1024])], Vec::new())
    };
    let before = rss_kb();
    let v: Vec<Arc<Entry>> = (0..100_000).map(|i| Arc::new(make(i))).collect();
    let mid = rss_kb();
    println!(
        "entries only: {:.2} KiB each",
        (mid - before) as f64 / 100_000.0
    );
    let store = Store::new(1 << 30, 16, Default::default());
    for (i, e) in v.iter().enumerate() {
        store.insert(&format!("http://mem.test:80/obj/{i}"), e.clone());
    }
    let _ = store.entry_count();
    let after = rss_kb();
    println!(
        "store overhead: {:.2} KiB each",
        (after - mid) as f64 / 100_000.0
    );
}
