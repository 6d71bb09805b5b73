//! Cache controls for operators, over real sockets: tags (`Surrogate-Key`,
//! `Cache-Tag`) and purge by tag, the tag index following the store, soft
//! purge, per-route key rules, TTL rules, `ignore_client_no_cache`, and bad
//! input to all of them. Each test names the rule it proves.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};
use support::*;

const HOST: &str = "site.test";

/// A reverse route named `site` for `site.test`, with `extra` route keys.
fn reverse(origin: &Origin, extra: &str) -> viaduct::Config {
    let mut config = base_config();
    config.routes = vec![route_toml(&format!(
        "name = \"site\"\nhost = \"{HOST}\"\nupstream = \"http://{}\"\n{extra}",
        origin.addr
    ))];
    config
}

/// A GET of `path` on the reverse route, with `fields` added.
fn site(path: &str, fields: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut req = get(path);
    req.headers_mut().insert("host", HOST.parse().unwrap());
    for (name, value) in fields {
        req.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    req
}

/// A response with `fields`.
fn respond(
    status: StatusCode,
    body: impl Into<Bytes>,
    fields: &[(&str, &str)],
) -> Response<TestBody> {
    let mut resp = Response::new(TestBody::full(body.into()));
    *resp.status_mut() = status;
    for (name, value) in fields {
        resp.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    resp
}

fn header<'a>(seen: &'a Seen, name: &str) -> Option<&'a str> {
    seen.headers.get(name).map(|v| v.to_str().unwrap())
}

fn is_hit(got: &Got) -> bool {
    got.header("cache-status")
        .is_some_and(|s| s.contains("; hit"))
}

fn cache_status(got: &Got) -> String {
    got.header("cache-status").unwrap_or("-").to_string()
}

/// `POST /purge?{query}` on the admin listener.
async fn purge(admin: SocketAddr, query: &str) -> Got {
    let req = Request::post(format!("http://{admin}/purge?{query}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    fetch(admin, req).await
}

/// A purge that must succeed: its JSON answer.
async fn purged(admin: SocketAddr, query: &str) -> Value {
    let got = purge(admin, query).await;
    assert_eq!(got.status, StatusCode::OK, "purge?{query}: {}", got.text());
    serde_json::from_slice(&got.body).unwrap()
}

/// `GET {path}` on the admin listener, as JSON.
async fn admin_json(admin: SocketAddr, path: &str) -> Value {
    let got = fetch(admin, get(&format!("http://{admin}{path}"))).await;
    assert_eq!(got.status, StatusCode::OK, "{path}: {}", got.text());
    serde_json::from_slice(&got.body).unwrap()
}

/// `GET /cache?url=http://site.test{path}`.
async fn inspect(admin: SocketAddr, path: &str) -> Value {
    admin_json(
        admin,
        &format!(
            "/cache?url={}",
            query_value(&format!("http://{HOST}{path}"))
        ),
    )
    .await
}

/// The `entries` of `GET /cache/list?{query}`, by URL.
async fn listing(admin: SocketAddr, query: &str) -> Vec<Value> {
    let list = admin_json(admin, &format!("/cache/list?{query}")).await;
    assert_eq!(list["truncated"], json!(false), "{list}");
    list["entries"].as_array().unwrap().clone()
}

fn url_of(path: &str) -> String {
    format!("http://{HOST}:80{path}")
}

fn tags_of(row: &Value) -> Vec<String> {
    row["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

async fn counter(admin: SocketAddr, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(&scrape(admin).await, name, labels)
}

/// An origin for the tag tests: every path fresh for an hour, tagged by path.
async fn tagging_origin() -> Origin {
    Origin::start(|seen| {
        let path = seen.target.as_str();
        let cc = ("cache-control", "max-age=3600");
        match path {
            "/tags/a" => respond(
                StatusCode::OK,
                "a",
                &[cc, ("surrogate-key", "shoes product-a")],
            ),
            "/tags/b" => respond(StatusCode::OK, "b", &[cc, ("cache-tag", "shoes,sale")]),
            "/tags/c" => {
                let coding = header(seen, "accept-encoding")
                    .unwrap_or("none")
                    .to_string();
                respond(
                    StatusCode::OK,
                    format!("c for {coding}"),
                    &[
                        cc,
                        ("vary", "accept-encoding"),
                        ("surrogate-key", "product-c"),
                        ("cache-tag", "shoes"),
                    ],
                )
            }
            "/tags/h" => respond(StatusCode::OK, "h", &[cc, ("cache-tag", "hats, caps")]),
            _ => respond(StatusCode::NOT_FOUND, "", &[]),
        }
    })
    .await
}

/// The requests of the tag tests: (path, Accept-Encoding).
const TAGGED: [(&str, Option<&str>); 5] = [
    ("/tags/a", None),
    ("/tags/b", None),
    ("/tags/c", Some("gzip")),
    ("/tags/c", Some("br")),
    ("/tags/h", None),
];

async fn fetch_tagged(proxy: SocketAddr, (path, coding): (&str, Option<&str>)) -> Got {
    let fields: Vec<(&str, &str)> = coding.map(|c| ("accept-encoding", c)).into_iter().collect();
    let got = fetch(proxy, site(path, &fields)).await;
    assert_eq!(got.status, StatusCode::OK, "{path}");
    if let Some(coding) = coding {
        assert_eq!(got.text(), format!("c for {coding}"));
    }
    got
}

#[tokio::test]
async fn purge_by_tag_removes_every_url_and_variant_carrying_it() {
    // Surrogate-Key (Fastly) and Cache-Tag (Cloudflare) are both read, their
    // words separated by spaces or commas; a tag purge counts URLs (with all
    // their Vary variants), and leaves URLs without the tag alone.
    let origin = tagging_origin().await;
    let proxy = start(reverse(&origin, "")).await;
    let admin = proxy.admin_addr();
    for request in TAGGED {
        let got = fetch_tagged(proxy.addr(), request).await;
        assert!(!is_hit(&got), "{}", cache_status(&got));
        // strip_tag_fields (default true): tags are for this cache only.
        assert_eq!(got.header("surrogate-key"), None, "{request:?} miss");
        assert_eq!(got.header("cache-tag"), None, "{request:?} miss");
    }
    for request in TAGGED {
        let got = fetch_tagged(proxy.addr(), request).await;
        assert!(is_hit(&got), "{request:?}: {}", cache_status(&got));
        assert_eq!(got.header("surrogate-key"), None, "{request:?} hit");
        assert_eq!(got.header("cache-tag"), None, "{request:?} hit");
    }
    for (path, n) in [
        ("/tags/a", 1),
        ("/tags/b", 1),
        ("/tags/c", 2),
        ("/tags/h", 1),
    ] {
        assert_eq!(origin.count(path), n, "{path}");
    }

    // The index: shoes, product-a, sale, product-c, hats, caps; 8 pairs.
    assert_eq!(proxy.cache().store.tag_index_size(), (6, 8));
    let shoes = listing(admin, "tag=shoes").await;
    let urls: Vec<&str> = shoes.iter().map(|r| r["url"].as_str().unwrap()).collect();
    assert_eq!(
        urls,
        [url_of("/tags/a"), url_of("/tags/b"), url_of("/tags/c")],
        "{shoes:?}"
    );
    assert_eq!(tags_of(&shoes[0]), ["shoes", "product-a"]);
    assert_eq!(tags_of(&shoes[1]), ["shoes", "sale"]);
    assert_eq!(shoes[2]["variants"], json!(2));
    let c_tags: BTreeSet<String> = tags_of(&shoes[2]).into_iter().collect();
    assert_eq!(c_tags, BTreeSet::from(["product-c".into(), "shoes".into()]));
    let hats = listing(admin, "tag=hats").await;
    assert_eq!(hats.len(), 1);
    assert_eq!(tags_of(&hats[0]), ["hats", "caps"]);

    let answer = purged(admin, "tag=shoes").await;
    assert_eq!(
        answer,
        json!({"selector": "tag", "target": ["shoes"], "purged": 3, "soft": false})
    );
    assert_eq!(counter(admin, "viaduct_cache_purges_total", &[]).await, 3.0);
    assert_eq!(proxy.cache().store.entry_count(), 1);
    assert_eq!(proxy.cache().store.tag_index_size(), (2, 2));
    assert!(listing(admin, "tag=shoes").await.is_empty());

    for request in TAGGED {
        let got = fetch_tagged(proxy.addr(), request).await;
        assert_eq!(
            is_hit(&got),
            request.0 == "/tags/h",
            "{request:?}: {}",
            cache_status(&got)
        );
    }
    for (path, n) in [
        ("/tags/a", 2),
        ("/tags/b", 2),
        ("/tags/c", 4),
        ("/tags/h", 1),
    ] {
        assert_eq!(origin.count(path), n, "{path} after the purge");
    }
    assert_eq!(proxy.cache().store.tag_index_size(), (6, 8));

    // Two tags, one query: a URL is counted once, and a tag nothing carries
    // adds nothing.
    let answer = purged(admin, "tag=sale&tag=hats&tag=nothing").await;
    assert_eq!(answer["purged"], json!(2), "{answer}");
    assert_eq!(answer["target"], json!(["sale", "hats", "nothing"]));
    let answer = purged(admin, "tag=sale").await;
    assert_eq!(answer["purged"], json!(0), "{answer}");
    let answer = purged(admin, "tag=shoes&tag=product-c").await;
    assert_eq!(answer["purged"], json!(2), "a and c are left: {answer}");
    assert_eq!(counter(admin, "viaduct_cache_purges_total", &[]).await, 7.0);
    assert_eq!(proxy.cache().store.entry_count(), 0);
    assert_eq!(proxy.cache().store.tag_index_size(), (0, 0));
    proxy.shutdown().await;
}

#[tokio::test]
async fn tag_fields_reach_clients_when_not_stripped() {
    // `[cache] strip_tag_fields = false`: the tag fields are passed on, on
    // the miss and on the hit, and are still read.
    let origin = tagging_origin().await;
    let mut config = reverse(&origin, "");
    config.cache.strip_tag_fields = false;
    let proxy = start(config).await;
    for round in ["miss", "hit"] {
        let got = fetch_tagged(proxy.addr(), ("/tags/a", None)).await;
        assert_eq!(is_hit(&got), round == "hit", "{}", cache_status(&got));
        assert_eq!(
            got.header("surrogate-key"),
            Some("shoes product-a"),
            "{round}"
        );
        let got = fetch_tagged(proxy.addr(), ("/tags/b", None)).await;
        assert_eq!(got.header("cache-tag"), Some("shoes,sale"), "{round}");
    }
    let answer = purged(proxy.admin_addr(), "tag=shoes").await;
    assert_eq!(answer["purged"], json!(2), "{answer}");
    proxy.shutdown().await;
}

/// What `GET /cache/list` says the live entries carry: (distinct tags,
/// tag-key pairs, entries).
async fn live_tags(admin: SocketAddr) -> (usize, usize, usize) {
    let rows = listing(admin, "limit=10000").await;
    let mut distinct = BTreeSet::new();
    let mut pairs = 0;
    for row in &rows {
        let tags = tags_of(row);
        assert_eq!(tags.len(), 2, "{row}");
        pairs += tags.len();
        distinct.extend(tags);
    }
    (distinct.len(), pairs, rows.len())
}

/// The index holds exactly the live entries' tags.
async fn assert_index_follows_store(proxy: &viaduct::Running, when: &str) -> usize {
    let entries = proxy.cache().store.entry_count() as usize;
    let index = proxy.cache().store.tag_index_size();
    let (distinct, pairs, listed) = live_tags(proxy.admin_addr()).await;
    assert_eq!(listed, entries, "{when}: listed vs entry_count");
    assert_eq!(index, (distinct, pairs), "{when}: index vs live entries");
    assert_eq!(index.1, 2 * entries, "{when}: two tags per entry");
    entries
}

#[tokio::test]
async fn the_tag_index_follows_evictions_replacements_and_purges() {
    // The index gives back a list's tags whenever moka lets it go (evicted
    // for space, replaced, removed): filled far past capacity it holds the
    // live entries' (tag, key) pairs and nothing else.
    let generation = Arc::new(AtomicUsize::new(1));
    let gen = generation.clone();
    let origin = Origin::start(move |seen| {
        let g = gen.load(Ordering::SeqCst);
        let path = seen.target.as_str();
        let id = path.rsplit('/').next().unwrap();
        let tags = format!("g{g}-{id} shared{g}");
        let etag = format!("\"{g}\"");
        // /re/ objects are stale at once but have a validator: each request
        // revalidates, and a 200 with new tags replaces them.
        let cc = if path.starts_with("/re/") {
            "max-age=0"
        } else {
            "max-age=3600"
        };
        let body = pattern(2048);
        let fields = [
            ("cache-control", cc),
            ("etag", etag.as_str()),
            ("surrogate-key", tags.as_str()),
        ];
        respond(StatusCode::OK, body, &fields)
    })
    .await;
    let mut config = reverse(&origin, "");
    config.cache.capacity = viaduct::config::Size(256 << 10);
    config.cache.max_object_size = viaduct::config::Size(8 << 10);
    let proxy = start(config).await;
    let mut client = Client::connect(proxy.addr()).await;
    for i in 0..2000 {
        let got = client.send(site(&format!("/fill/{i}"), &[])).await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.body.len(), 2048);
    }
    let live = assert_index_follows_store(&proxy, "after 2000 fills").await;
    assert!(
        live > 10 && live < 200,
        "{live} entries of ~3 KiB in 256 KiB"
    );
    assert!(
        counter(proxy.admin_addr(), "viaduct_cache_evictions_total", &[]).await > 0.0,
        "the store evicted"
    );

    // Replaced in place: refetched after a generation change (a 200 on
    // revalidation carrying new tags).
    generation.store(2, Ordering::SeqCst);
    for i in 0..40 {
        client.send(site(&format!("/re/{i}"), &[])).await;
    }
    generation.store(3, Ordering::SeqCst);
    for i in 0..40 {
        let got = client.send(site(&format!("/re/{i}"), &[])).await;
        assert!(!is_hit(&got), "{}", cache_status(&got));
    }
    assert_index_follows_store(&proxy, "after replacements").await;
    // Every /re/ entry of generation 2 was replaced (or evicted), and
    // replacements live on under generation 3's tags.
    assert!(listing(proxy.admin_addr(), "tag=shared2").await.is_empty());
    assert!(!listing(proxy.admin_addr(), "tag=shared3").await.is_empty());

    // Purged by the shared tags, then refilled under new tags.
    let live = proxy.cache().store.entry_count();
    let query = "tag=shared1&tag=shared2&tag=shared3";
    let answer = purged(proxy.admin_addr(), query).await;
    assert_eq!(answer["purged"], json!(live), "{answer}");
    assert_eq!(proxy.cache().store.entry_count(), 0);
    assert_eq!(proxy.cache().store.tag_index_size(), (0, 0));
    generation.store(4, Ordering::SeqCst);
    for i in 0..600 {
        client.send(site(&format!("/fill/{i}"), &[])).await;
    }
    let live = assert_index_follows_store(&proxy, "after the refill").await;
    let answer = purged(proxy.admin_addr(), "tag=shared4").await;
    assert_eq!(answer["purged"], json!(live), "{answer}");
    assert_eq!(proxy.cache().store.entry_count(), 0);
    assert_eq!(proxy.cache().store.tag_index_size(), (0, 0));
    proxy.shutdown().await;
}

/// An origin with one validator per path: 304 to a matching If-None-Match,
/// else 200 (fresh for an hour, tagged by path).
async fn validating_origin(delay: Duration) -> Origin {
    Origin::start_delayed(
        |seen| {
            let cc = ("cache-control", "max-age=3600");
            let etag = ("etag", "\"v1\"");
            if header(seen, "if-none-match") == Some("\"v1\"") {
                let tags = ("surrogate-key", "from-304");
                return respond(StatusCode::NOT_MODIFIED, "", &[cc, etag, tags]);
            }
            let tag = if seen.target.starts_with("/soft/tagged") {
                "soft-t"
            } else {
                "soft-other"
            };
            respond(
                StatusCode::OK,
                "soft body",
                &[cc, etag, ("surrogate-key", tag)],
            )
        },
        move |_| delay,
    )
    .await
}

#[tokio::test]
async fn a_soft_purge_sends_one_request_for_a_crowd() {
    // A soft purge makes the entry stale instead of removing it: the next
    // requests revalidate once, collapsed, and every client is answered
    // (a purge never sends a crowd to the origin).
    let origin = validating_origin(Duration::from_millis(200)).await;
    let proxy = start(reverse(&origin, "")).await;
    let admin = proxy.admin_addr();
    let path = "/soft/crowd";
    assert_eq!(
        fetch(proxy.addr(), site(path, &[])).await.text(),
        "soft body"
    );
    assert!(is_hit(&fetch(proxy.addr(), site(path, &[])).await));
    assert_eq!(origin.count(path), 1);
    let index = proxy.cache().store.tag_index_size();

    let query = format!(
        "url={}&soft=1",
        query_value(&format!("http://{HOST}{path}"))
    );
    let answer = purged(admin, &query).await;
    assert_eq!(
        answer,
        json!({"selector": "url", "target": url_of(path), "purged": 1, "soft": true})
    );
    assert_eq!(
        counter(admin, "viaduct_cache_soft_purges_total", &[]).await,
        1.0
    );
    assert_eq!(counter(admin, "viaduct_cache_purges_total", &[]).await, 0.0);
    // Still stored, still tagged, now stale.
    assert_eq!(proxy.cache().store.entry_count(), 1);
    assert_eq!(proxy.cache().store.tag_index_size(), index);
    let stored = inspect(admin, path).await;
    assert!(
        stored["variants"][0]["ttl"].as_i64().unwrap() <= 0,
        "{stored}"
    );

    let addr = proxy.addr();
    let crowd: Vec<_> = (0..50)
        .map(|_| tokio::spawn(async move { fetch(addr, site(path, &[])).await }))
        .collect();
    for client in crowd {
        let got = client.await.unwrap();
        assert_eq!(got.status, StatusCode::OK, "{}", cache_status(&got));
        assert_eq!(got.text(), "soft body");
        assert_eq!(got.header("surrogate-key"), None);
    }
    assert_eq!(origin.count(path), 2, "one revalidation for fifty clients");
    let last = origin.last();
    assert_eq!(header(&last, "if-none-match"), Some("\"v1\""));
    // Fresh again from the 304.
    assert!(is_hit(&fetch(proxy.addr(), site(path, &[])).await));
    assert_eq!(origin.count(path), 2);
    proxy.shutdown().await;
}

/// The next request for `path` revalidates once (304) and the one after hits.
async fn revalidates_once(proxy: &viaduct::Running, origin: &Origin, path: &str) {
    let before = origin.count(path);
    let got = fetch(proxy.addr(), site(path, &[])).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "soft body");
    assert!(!is_hit(&got), "{path}: {}", cache_status(&got));
    assert_eq!(got.header("surrogate-key"), None, "{path}: the 304's tags");
    assert!(
        cache_status(&got).contains("fwd-status=304"),
        "{path}: {}",
        cache_status(&got)
    );
    assert_eq!(origin.count(path), before + 1, "{path}");
    let last = origin.last();
    assert_eq!(last.target, path);
    assert_eq!(header(&last, "if-none-match"), Some("\"v1\""), "{path}");
    let got = fetch(proxy.addr(), site(path, &[])).await;
    assert!(is_hit(&got), "{path}: {}", cache_status(&got));
    assert_eq!(origin.count(path), before + 1, "{path}");
}

#[tokio::test]
async fn soft_purges_by_tag_and_prefix_mark_stale() {
    // `&soft=1` with tag= and prefix=: the URLs stay stored, stale, and are
    // revalidated (If-None-Match, 304) once each; the others stay fresh.
    let origin = validating_origin(Duration::ZERO).await;
    let proxy = start(reverse(&origin, "")).await;
    let admin = proxy.admin_addr();
    let paths = ["/soft/tagged", "/soft/dir/1", "/soft/dir/2", "/soft/else"];
    for path in paths {
        fetch(proxy.addr(), site(path, &[])).await;
        assert!(
            is_hit(&fetch(proxy.addr(), site(path, &[])).await),
            "{path}"
        );
    }
    let index = proxy.cache().store.tag_index_size();
    assert_eq!(index, (2, 4));

    let answer = purged(admin, "tag=soft-t&soft=1").await;
    assert_eq!(
        answer,
        json!({"selector": "tag", "target": ["soft-t"], "purged": 1, "soft": true})
    );
    let prefix = query_value(&format!("http://{HOST}/soft/dir/"));
    let answer = purged(admin, &format!("prefix={prefix}&soft=true")).await;
    assert_eq!(
        answer,
        json!({"selector": "prefix", "target": url_of("/soft/dir/"), "purged": 2, "soft": true})
    );
    assert_eq!(
        counter(admin, "viaduct_cache_soft_purges_total", &[]).await,
        3.0
    );
    assert_eq!(proxy.cache().store.entry_count(), 4);
    assert_eq!(proxy.cache().store.tag_index_size(), index);

    for path in ["/soft/tagged", "/soft/dir/1", "/soft/dir/2"] {
        revalidates_once(&proxy, &origin, path).await;
    }
    assert!(is_hit(&fetch(proxy.addr(), site("/soft/else", &[])).await));
    assert_eq!(origin.count("/soft/else"), 1);
    proxy.shutdown().await;
}

/// An origin that answers with the request-target and the fields that key
/// the cache, fresh for an hour.
async fn echo_origin() -> Origin {
    Origin::start(|seen| {
        let body = format!(
            "{} device={} cookie={}",
            seen.target,
            header(seen, "x-device").unwrap_or("-"),
            header(seen, "cookie").unwrap_or("-"),
        );
        respond(StatusCode::OK, body, &[("cache-control", "max-age=3600")])
    })
    .await
}

const KEY_RULES: &str = "cache_key = { ignore_query = [\"utm_*\", \"fbclid\"], sort_query = true, \
                         include_headers = [\"x-device\"], include_cookies = [\"lang\"] }\n";

#[tokio::test]
async fn key_rules_normalize_the_query_but_forward_it_unchanged() {
    // cache_key: ignored parameters and their order do not split the cache;
    // the origin still gets the query the client sent.
    let origin = echo_origin().await;
    let proxy = start(reverse(&origin, KEY_RULES)).await;
    let admin = proxy.admin_addr();
    let first = fetch(proxy.addr(), site("/p?b=2&a=1", &[])).await;
    assert!(!is_hit(&first));
    let second = fetch(proxy.addr(), site("/p?a=1&b=2&utm_source=x&fbclid=y", &[])).await;
    assert!(is_hit(&second), "{}", cache_status(&second));
    assert_eq!(second.text(), first.text());
    assert!(first.text().starts_with("/p?b=2&a=1 "), "{}", first.text());
    assert_eq!(origin.count("/p"), 1);
    // Another value of a kept parameter is another entry.
    assert!(!is_hit(&fetch(proxy.addr(), site("/p?a=1&b=3", &[])).await));

    // The origin gets utm_* and fbclid as sent.
    let got = fetch(proxy.addr(), site("/q?utm_medium=m&z=1&fbclid=f", &[])).await;
    assert!(!is_hit(&got));
    assert_eq!(origin.last().target, "/q?utm_medium=m&z=1&fbclid=f");
    assert!(is_hit(&fetch(proxy.addr(), site("/q?z=1", &[])).await));
    assert_eq!(origin.count("/q"), 1);

    // GET /cache?url= keys the URL as requests are keyed.
    for asked in ["/p?b=2&a=1", "/p?utm_campaign=c&a=1&b=2"] {
        let stored = inspect(admin, asked).await;
        assert_eq!(
            stored["keys"],
            json!([format!("route:site {}", url_of("/p?a=1&b=2"))]),
            "{stored}"
        );
        assert_eq!(stored["stored"], json!(true));
    }
    let stored = inspect(admin, "/q?fbclid=1&z=1").await;
    assert_eq!(
        stored["keys"],
        json!([format!("route:site {}", url_of("/q?z=1"))])
    );
    // A URL purge keys its URL the same way.
    let url = query_value(&format!("http://{HOST}/p?utm_source=s&b=2&a=1"));
    let answer = purged(admin, &format!("url={url}")).await;
    assert_eq!(answer["purged"], json!(1), "{answer}");
    assert!(!is_hit(&fetch(proxy.addr(), site("/p?a=1&b=2", &[])).await));
    proxy.shutdown().await;
}

#[tokio::test]
async fn key_rules_split_by_header_and_cookie() {
    // include_headers / include_cookies: as if the origin had sent Vary
    // with them; only the named cookie counts.
    let origin = echo_origin().await;
    let proxy = start(reverse(&origin, KEY_RULES)).await;
    let admin = proxy.admin_addr();
    let dev = |device: &'static str| site("/dev", &[("x-device", device)]);
    assert!(!is_hit(&fetch(proxy.addr(), dev("mobile")).await));
    assert!(!is_hit(&fetch(proxy.addr(), dev("desktop")).await));
    for device in ["mobile", "desktop"] {
        let got = fetch(proxy.addr(), dev(device)).await;
        assert!(is_hit(&got), "{device}: {}", cache_status(&got));
        assert!(
            got.text().contains(&format!("device={device} ")),
            "{}",
            got.text()
        );
    }
    assert_eq!(origin.count("/dev"), 2);
    let stored = inspect(admin, "/dev").await;
    assert_eq!(stored["variants"].as_array().unwrap().len(), 2, "{stored}");
    assert_eq!(stored["variants"][0]["vary"]["x-device"], json!("desktop"));

    let ck = |cookie: &'static str| site("/ck", &[("cookie", cookie)]);
    assert!(!is_hit(
        &fetch(proxy.addr(), ck("lang=de; session=1")).await
    ));
    let got = fetch(proxy.addr(), ck("lang=de; session=2")).await;
    assert!(
        is_hit(&got),
        "other cookies do not count: {}",
        cache_status(&got)
    );
    assert!(got.text().contains("session=1"), "{}", got.text());
    assert!(!is_hit(
        &fetch(proxy.addr(), ck("session=1; lang=fr")).await
    ));
    let got = fetch(proxy.addr(), ck("lang=fr")).await;
    assert!(is_hit(&got), "{}", cache_status(&got));
    assert!(got.text().contains("lang=fr"), "{}", got.text());
    let got = fetch(proxy.addr(), ck("lang=de")).await;
    assert!(is_hit(&got), "{}", cache_status(&got));
    assert!(got.text().contains("lang=de"), "{}", got.text());
    // No lang cookie at all is a value of its own.
    assert!(!is_hit(&fetch(proxy.addr(), site("/ck", &[])).await));
    assert_eq!(origin.count("/ck"), 3);
    proxy.shutdown().await;
}

/// An origin for the TTL rules: the path's last segment names what it
/// sends (`404-*` paths answer 404).
async fn ttl_origin() -> Origin {
    Origin::start(|seen| {
        let status = if seen.target.contains("/404") {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::OK
        };
        let cc = if seen.target.ends_with("-no-store") {
            Some("no-store")
        } else if seen.target.ends_with("-private") {
            Some("private")
        } else if seen.target.ends_with("-max-age-0") {
            Some("max-age=0")
        } else {
            None
        };
        let mut fields = vec![("surrogate-key", "ttl")];
        fields.extend(cc.map(|v| ("cache-control", v)));
        respond(status, "ttl", &fields)
    })
    .await
}

/// Two fetches of `path`: how many reached the origin.
/// Stored or not, the client never sees the tag field.
async fn twice(proxy: &viaduct::Running, origin: &Origin, path: &str) -> usize {
    for _ in 0..2 {
        let got = fetch(proxy.addr(), site(path, &[])).await;
        assert_eq!(got.header("surrogate-key"), None, "{path}");
    }
    origin.count(path)
}

#[tokio::test]
async fn ttl_rules_stand_in_for_missing_freshness_only() {
    // status_ttl / default_ttl give a lifetime to responses without explicit
    // freshness (in place of the heuristic); no-store, private and an
    // explicit max-age=0 still win.
    let origin = ttl_origin().await;
    let rules = "status_ttl = { 404 = \"30s\" }\ndefault_ttl = \"5m\"\n";
    let proxy = start(reverse(&origin, rules)).await;
    let admin = proxy.admin_addr();
    assert_eq!(
        twice(&proxy, &origin, "/r/404").await,
        1,
        "404 kept for 30s"
    );
    let stored = inspect(admin, "/r/404").await;
    assert_eq!(
        stored["variants"][0]["freshness_lifetime"],
        json!(30),
        "{stored}"
    );
    assert_eq!(stored["variants"][0]["heuristic"], json!(false), "{stored}");
    assert_eq!(
        twice(&proxy, &origin, "/r/plain").await,
        1,
        "200 kept for 5m"
    );
    let stored = inspect(admin, "/r/plain").await;
    assert_eq!(
        stored["variants"][0]["freshness_lifetime"],
        json!(300),
        "{stored}"
    );
    for path in [
        "/r/200-no-store",
        "/r/200-private",
        "/r/200-max-age-0",
        "/r/404-no-store",
        "/r/404-private",
        "/r/404-max-age-0",
    ] {
        assert_eq!(twice(&proxy, &origin, path).await, 2, "{path}");
        assert_eq!(inspect(admin, path).await["stored"], json!(false), "{path}");
    }
    proxy.shutdown().await;

    // Without the rules: neither is stored (no freshness, no validators).
    let proxy = start(reverse(&origin, "")).await;
    assert_eq!(twice(&proxy, &origin, "/n/404").await, 2);
    assert_eq!(twice(&proxy, &origin, "/n/plain").await, 2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn ignore_client_no_cache_serves_hits_anyway() {
    // ignore_client_no_cache = true: a client's no-cache, Pragma: no-cache
    // and max-age=0 do not send the request to the origin; by default they do.
    let origin = echo_origin().await;
    let proxy = start(reverse(&origin, "ignore_client_no_cache = true\n")).await;
    fetch(proxy.addr(), site("/nc", &[])).await;
    for field in [
        ("cache-control", "no-cache"),
        ("pragma", "no-cache"),
        ("cache-control", "max-age=0"),
        ("cache-control", "no-cache, max-age=0"),
    ] {
        let got = fetch(proxy.addr(), site("/nc", &[field])).await;
        assert!(is_hit(&got), "{field:?}: {}", cache_status(&got));
    }
    assert_eq!(origin.count("/nc"), 1);
    proxy.shutdown().await;

    let proxy = start(reverse(&origin, "")).await;
    fetch(proxy.addr(), site("/nd", &[])).await;
    assert!(is_hit(&fetch(proxy.addr(), site("/nd", &[])).await));
    let got = fetch(proxy.addr(), site("/nd", &[("cache-control", "no-cache")])).await;
    assert!(!is_hit(&got), "{}", cache_status(&got));
    assert_eq!(origin.count("/nd"), 2);
    let got = fetch(proxy.addr(), site("/nd", &[("pragma", "no-cache")])).await;
    assert!(!is_hit(&got), "{}", cache_status(&got));
    assert_eq!(origin.count("/nd"), 3);
    proxy.shutdown().await;
}

#[tokio::test]
async fn bad_tags_are_skipped_dropped_and_counted() {
    // An empty tag field stores no tags; a tag over 1 KiB is dropped
    // (too-long); past max_tags_per_object (64) the rest are dropped
    // (over-limit). The response is stored either way.
    let long = "x".repeat(1025);
    let many: Vec<String> = (0..10_000).map(|i| format!("t{i}")).collect();
    let (long_field, many_field) = (format!("{long} ok"), many.join(" "));
    let origin = Origin::start(move |seen| {
        let tags = match seen.target.as_str() {
            "/bad/empty" => "",
            "/bad/long" => long_field.as_str(),
            _ => many_field.as_str(),
        };
        let fields = [("cache-control", "max-age=3600"), ("surrogate-key", tags)];
        respond(StatusCode::OK, "tagged", &fields)
    })
    .await;
    let proxy = start(reverse(&origin, "")).await;
    let admin = proxy.admin_addr();
    for path in ["/bad/empty", "/bad/long", "/bad/many"] {
        let got = fetch(proxy.addr(), site(path, &[])).await;
        assert_eq!(got.status, StatusCode::OK, "{path}");
        assert_eq!(got.header("surrogate-key"), None);
        assert!(
            is_hit(&fetch(proxy.addr(), site(path, &[])).await),
            "{path}"
        );
    }
    let tags = |v: &Value| v["variants"][0]["tags"].as_array().unwrap().clone();
    assert!(tags(&inspect(admin, "/bad/empty").await).is_empty());
    assert_eq!(tags(&inspect(admin, "/bad/long").await), [json!("ok")]);
    let kept = tags(&inspect(admin, "/bad/many").await);
    assert_eq!(kept.len(), 64);
    assert_eq!(kept[0], json!("t0"));
    assert_eq!(kept[63], json!("t63"));
    assert_eq!(listing(admin, "tag=t63").await.len(), 1);
    assert!(listing(admin, "tag=t64").await.is_empty());
    let dropped = scrape(admin).await;
    let reason = |r| [("reason", r)];
    let name = "viaduct_cache_tags_dropped_total";
    assert_eq!(value(&dropped, name, &reason("too-long")), 1.0);
    assert_eq!(value(&dropped, name, &reason("over-limit")), 9936.0);
    assert_eq!(proxy.cache().store.tag_index_size(), (65, 65));
    proxy.shutdown().await;
}

#[tokio::test]
async fn bad_purge_requests_are_refused_and_remove_nothing() {
    // POST /purge names exactly one selector; tags are 1 to 1024 bytes
    // without spaces or commas; soft is 0/1/true/false; route= names a
    // route. Each refusal is a 400 that purges nothing.
    let origin = tagging_origin().await;
    let proxy = start(reverse(&origin, "")).await;
    let admin = proxy.admin_addr();
    for request in TAGGED {
        fetch_tagged(proxy.addr(), request).await;
    }
    let url = query_value(&format!("http://{HOST}/tags/a"));
    let prefix = query_value(&format!("http://{HOST}/tags/"));
    let long = "x".repeat(1025);
    for query in [
        String::new(),
        "soft=1".to_string(),
        format!("url={url}&tag=shoes"),
        format!("url={url}&prefix={prefix}"),
        format!("prefix={prefix}&tag=shoes"),
        "tag=".to_string(),
        "tag=shoes&tag=".to_string(),
        format!("tag={long}"),
        format!("tag=shoes&tag={long}"),
        "tag=a+b".to_string(),
        "tag=a%2Cb".to_string(),
        "tag=shoes&soft=maybe".to_string(),
        format!("url={url}&soft=2"),
        "tag=shoes&route=unknown".to_string(),
        "tag=shoes&mode=backward".to_string(),
        "url=%2Ftags%2Fa".to_string(),
    ] {
        let got = purge(admin, &query).await;
        assert_eq!(
            got.status,
            StatusCode::BAD_REQUEST,
            "purge?{query}: {}",
            got.text()
        );
    }
    assert_eq!(counter(admin, "viaduct_cache_purges_total", &[]).await, 0.0);
    assert_eq!(
        counter(admin, "viaduct_cache_soft_purges_total", &[]).await,
        0.0
    );
    assert_eq!(proxy.cache().store.entry_count(), 4);
    for request in TAGGED {
        let got = fetch_tagged(proxy.addr(), request).await;
        assert!(is_hit(&got), "{request:?}: {}", cache_status(&got));
    }
    // A URL purge that finds nothing is a 404 (with its JSON).
    let missing = query_value(&format!("http://{HOST}/tags/none"));
    let got = purge(admin, &format!("url={missing}")).await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    let answer: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(answer["purged"], json!(0));
    // route= of the route that exists is accepted.
    let answer = purged(admin, "tag=hats&route=site").await;
    assert_eq!(answer["purged"], json!(1));
    proxy.shutdown().await;
}

/// The error `Config::from_toml` gives for `text`, as shown.
fn config_error(text: &str) -> String {
    match viaduct::Config::from_toml(text, "p.toml") {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_cache_settings_name_file_and_line() {
    // Configuration errors are `file:line: message`, on the line at fault.
    let route = |key: &str| {
        format!(
            "[server]\nname = \"v\"\n\n[[route]]\nhost = \"a.test\"\nupstream = \"http://127.0.0.1:1\"\n{key}\n"
        )
    };
    for (key, says) in [
        ("cache_key = { ignore_query = [\"a=b\"] }", "a=b"),
        (
            "cache_key = { ignore_query = [\"\"] }",
            "query parameter pattern",
        ),
        ("cache_key = { ignore_query = [\"utm_*\", \"a b\"] }", "a b"),
        ("status_ttl = { abc = \"30s\" }", "abc"),
        ("status_ttl = { 99 = \"30s\" }", "99"),
        ("status_ttl = { 600 = \"30s\" }", "600"),
        (
            "cache_key = { include_cookies = [\"bad name\"] }",
            "bad name",
        ),
        (
            "cache_key = { include_headers = [\"bad name\"] }",
            "bad name",
        ),
    ] {
        let err = config_error(&route(key));
        assert!(err.starts_with("p.toml:7: "), "{key}: {err}");
        assert!(err.contains(says), "{key}: {err}");
    }
    let err = config_error("[server]\nname = \"v\"\n[cache]\n\nmax_tags_per_object = 5000\n");
    assert!(err.starts_with("p.toml:5: "), "{err}");
    assert!(err.contains("max_tags_per_object"), "{err}");
    // The documented forms are accepted.
    let good = route(&format!(
        "{KEY_RULES}default_ttl = \"5m\"\nstatus_ttl = {{ 404 = \"30s\" }}\nignore_client_no_cache = true"
    ));
    viaduct::Config::from_toml(&good, "p.toml").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn the_tag_index_follows_concurrent_fills_under_eviction() {
    // As above, with fills on many threads at once: whatever order moka's
    // eviction and the index update come in, the index ends up holding the
    // live entries' pairs.
    let origin = Origin::start(|seen| {
        let id = seen.target.rsplit('/').next().unwrap();
        let tags = format!("c-{id} crowd");
        let fields = [
            ("cache-control", "max-age=3600"),
            ("surrogate-key", tags.as_str()),
        ];
        respond(StatusCode::OK, pattern(2048), &fields)
    })
    .await;
    let mut config = reverse(&origin, "");
    config.cache.capacity = viaduct::config::Size(256 << 10);
    config.cache.max_object_size = viaduct::config::Size(8 << 10);
    let proxy = start(config).await;
    let addr = proxy.addr();
    let clients: Vec<_> = (0..16)
        .map(|c| {
            tokio::spawn(async move {
                let mut client = Client::connect(addr).await;
                for i in 0..250 {
                    let got = client.send(site(&format!("/many/{c}-{i}"), &[])).await;
                    assert_eq!(got.status, StatusCode::OK);
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let live = assert_index_follows_store(&proxy, "after concurrent fills").await;
    let answer = purged(proxy.admin_addr(), "tag=crowd").await;
    assert_eq!(answer["purged"], json!(live), "{answer}");
    assert_eq!(proxy.cache().store.tag_index_size(), (0, 0));
    proxy.shutdown().await;
}
