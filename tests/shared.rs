//! The shared tier (`[cache.shared]`) on a real redis-server: what one node
//! fetched, another serves from Redis; purges reach every node; a cold key
//! is fetched once for the whole cluster.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use support::redis::{shared_node, RedisServer};
use support::*;

/// Every URL gets its own body, fresh for an hour, tagged `t-<first path
/// segment>`; `/vary/...` varies on Accept-Encoding and echoes it.
async fn origin() -> Origin {
    origin_slow(Duration::ZERO).await
}

async fn origin_slow(delay: Duration) -> Origin {
    Origin::start_delayed(
        |seen| {
            let segment = seen.target.split('/').nth(1).unwrap_or("").to_string();
            let mut body = format!("body of {}", seen.target);
            let mut resp = http::Response::builder()
                .header("cache-control", "max-age=3600")
                .header("surrogate-key", format!("t-{segment}"));
            if segment == "vary" {
                let coding = seen
                    .headers
                    .get("accept-encoding")
                    .map_or("none", |v| v.to_str().unwrap());
                body.push_str(&format!(" for {coding}"));
                resp = resp.header("vary", "accept-encoding");
            }
            resp.body(TestBody::full(Bytes::from(body))).unwrap()
        },
        move |_| delay,
    )
    .await
}

fn status_of(got: &Got) -> String {
    got.header("cache-status").unwrap_or("").to_string()
}

fn is_shared_hit(got: &Got) -> bool {
    status_of(got).contains("; hit;") && status_of(got).contains("detail=shared")
}

/// Sends `req` to `proxy` until `done` says yes; the response it accepted.
async fn until(
    proxy: SocketAddr,
    req: impl Fn() -> http::Request<Full<Bytes>>,
    done: impl Fn(&Got) -> bool,
) -> Got {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let got = fetch(proxy, req()).await;
        if done(&got) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "never: last answer {}",
            status_of(&got)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_miss_on_one_node_is_a_shared_hit_on_the_other() {
    let redis = RedisServer::start();
    let origin = origin().await;
    let a = shared_node("a", &redis, origin.addr, "").await;
    let b = shared_node("b", &redis, origin.addr, "").await;

    let first = fetch(a.addr(), at("/one")).await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(
        status_of(&first).contains("fwd=uri-miss"),
        "{}",
        status_of(&first)
    );
    // The write to Redis happens after the answer, in the background.
    redis.wait_stored("/one", 1).await;
    let shared = fetch(b.addr(), at("/one")).await;
    assert!(is_shared_hit(&shared), "{}", status_of(&shared));
    assert_eq!(shared.text(), "body of /one");
    assert_eq!(origin.count("/one"), 1);
    // Now in B's memory: a plain hit.
    let again = fetch(b.addr(), at("/one")).await;
    assert!(
        status_of(&again).contains("; hit; ttl="),
        "{}",
        status_of(&again)
    );
    assert!(!status_of(&again).contains("detail=shared"));
    assert_eq!(origin.count("/one"), 1);

    let scrape = scrape(b.admin_addr()).await;
    assert_eq!(value(&scrape, "viaduct_shared_hits_total", &[]), 1.0);
    let stats = fetch(
        b.admin_addr(),
        get(&format!("http://{}/stats", b.admin_addr())),
    )
    .await;
    let stats: serde_json::Value = serde_json::from_str(&stats.text()).unwrap();
    assert_eq!(stats["shared"]["hits"], 1);
    assert_eq!(stats["shared"]["connected"], true);
    assert_eq!(stats["shared"]["servers"][0], redis.url());
}

#[tokio::test]
async fn vary_variants_are_shared_each_for_its_own_request() {
    let redis = RedisServer::start();
    let origin = origin().await;
    let a = shared_node("a", &redis, origin.addr, "").await;
    let b = shared_node("b", &redis, origin.addr, "").await;

    let gzip = || with(at("/vary/x"), "accept-encoding", "gzip");
    let br = || with(at("/vary/x"), "accept-encoding", "br");
    assert_eq!(
        fetch(a.addr(), gzip()).await.text(),
        "body of /vary/x for gzip"
    );
    assert_eq!(fetch(a.addr(), br()).await.text(), "body of /vary/x for br");
    assert_eq!(origin.count("/vary/x"), 2);

    // Two variant records and the names they vary on.
    redis.wait_stored("/vary/x", 3).await;
    let got = fetch(b.addr(), br()).await;
    assert!(is_shared_hit(&got), "{}", status_of(&got));
    assert_eq!(got.text(), "body of /vary/x for br");
    let got = fetch(b.addr(), gzip()).await;
    assert!(is_shared_hit(&got), "{}", status_of(&got));
    assert_eq!(got.text(), "body of /vary/x for gzip");
    // A selection nobody stored goes to the origin, and gets its own variant.
    let none = fetch(b.addr(), at("/vary/x")).await;
    assert!(status_of(&none).contains("fwd="), "{}", status_of(&none));
    assert_eq!(none.text(), "body of /vary/x for none");
    assert_eq!(origin.count("/vary/x"), 3);
}

/// A's copy (in memory and in Redis) is gone after a purge sent to B.
async fn purged_everywhere(query: &str, path: &str) {
    let redis = RedisServer::start();
    let origin = origin().await;
    let a = shared_node("a", &redis, origin.addr, "").await;
    let b = shared_node("b", &redis, origin.addr, "").await;
    fetch(a.addr(), at(path)).await;
    assert!(status_of(&fetch(a.addr(), at(path)).await).contains("; hit;"));
    // Written to Redis (B's first request is a shared hit, B holds it too).
    redis.wait_stored(path, 1).await;
    assert!(is_shared_hit(&fetch(b.addr(), at(path)).await));
    assert_eq!(origin.count(path), 1);

    let purge = admin_request("POST", b.admin_addr(), &format!("/purge?{query}"), None);
    let got = fetch(b.admin_addr(), purge).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    let answer: serde_json::Value = serde_json::from_str(&got.text()).unwrap();
    assert_eq!(answer["shared"]["purged"], 1, "{answer}");
    assert!(
        !redis.keys().iter().any(|k| k.starts_with("vd:{")),
        "left in Redis: {:?}",
        redis.keys()
    );

    // The order reaches A through Redis: A fetches again.
    let got = until(
        a.addr(),
        || at(path),
        |g| status_of(g).contains("fwd=uri-miss"),
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(origin.count(path), 2);
    let scrape = scrape(a.admin_addr()).await;
    assert!(value(&scrape, "viaduct_shared_purges_received_total", &[]) >= 1.0);
}

#[tokio::test]
async fn a_url_purge_on_one_node_removes_it_for_the_others() {
    purged_everywhere("url=http://site.test/p/url", "/p/url").await;
}

#[tokio::test]
async fn a_prefix_purge_on_one_node_removes_it_for_the_others() {
    purged_everywhere("prefix=http://site.test/pre/", "/pre/fix").await;
}

#[tokio::test]
async fn a_tag_purge_on_one_node_removes_it_for_the_others() {
    purged_everywhere("tag=t-tagged", "/tagged/x").await;
}

#[tokio::test]
async fn an_unsafe_method_on_one_node_invalidates_everywhere() {
    let redis = RedisServer::start();
    let origin = origin().await;
    let a = shared_node("a", &redis, origin.addr, "").await;
    let b = shared_node("b", &redis, origin.addr, "").await;
    fetch(a.addr(), at("/inv")).await;
    redis.wait_stored("/inv", 1).await;
    assert!(is_shared_hit(&fetch(b.addr(), at("/inv")).await));

    let mut post = at("/inv");
    *post.method_mut() = http::Method::POST;
    assert_eq!(fetch(b.addr(), post).await.status, StatusCode::OK);
    // RFC 9111 §4.4: B drops it at once, Redis and A soon after.
    until(
        a.addr(),
        || at("/inv"),
        |g| status_of(g).contains("fwd=uri-miss"),
    )
    .await;
    assert_eq!(origin.count("/inv"), 3, "GET, POST, GET again");
}

#[tokio::test]
async fn a_soft_purge_makes_every_copy_revalidate() {
    let redis = RedisServer::start();
    let origin = Origin::start(|seen| {
        if seen.headers.get("if-none-match").is_some() {
            return http::Response::builder()
                .status(304)
                .header("etag", "\"v1\"")
                .header("cache-control", "max-age=3600")
                .body(TestBody::full(Bytes::new()))
                .unwrap();
        }
        http::Response::builder()
            .header("etag", "\"v1\"")
            .header("cache-control", "max-age=3600")
            .body(TestBody::full(Bytes::from_static(b"soft body")))
            .unwrap()
    })
    .await;
    let a = shared_node("a", &redis, origin.addr, "").await;
    let b = shared_node("b", &redis, origin.addr, "").await;
    fetch(a.addr(), at("/soft")).await;
    redis.wait_stored("/soft", 1).await;
    assert!(is_shared_hit(&fetch(b.addr(), at("/soft")).await));

    let purge = admin_request(
        "POST",
        b.admin_addr(),
        "/purge?url=http://site.test/soft&soft=1",
        None,
    );
    assert_eq!(fetch(b.admin_addr(), purge).await.status, StatusCode::OK);
    // A revalidates (a conditional request), never refetches the body.
    let got = until(
        a.addr(),
        || at("/soft"),
        |g| status_of(g).contains("fwd=stale"),
    )
    .await;
    assert_eq!(got.text(), "soft body");
    let seen = origin.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen[1].headers.get("if-none-match").is_some());
}

#[tokio::test]
async fn a_crowd_over_three_nodes_costs_the_origin_one_request() {
    let redis = RedisServer::start();
    // Slow enough that the whole crowd arrives while the first fetch runs.
    let origin = origin_slow(Duration::from_millis(400)).await;
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        nodes.push(shared_node(name, &redis, origin.addr, "").await);
    }
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr()).collect();
    let crowd: Vec<_> = (0..100)
        .map(|i| {
            let proxy = addrs[i % 3];
            tokio::spawn(async move { fetch(proxy, at("/crowd")).await })
        })
        .collect();
    for request in crowd {
        let got = request.await.unwrap();
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.text(), "body of /crowd");
    }
    assert_eq!(origin.count("/crowd"), 1);
    let collapsed: f64 = {
        let mut sum = 0.0;
        for n in &nodes {
            sum += value(
                &scrape(n.admin_addr()).await,
                "viaduct_shared_collapsed_total",
                &[],
            );
        }
        sum
    };
    assert_eq!(collapsed, 2.0, "the two other nodes waited for the first");
}

#[tokio::test]
async fn objects_over_the_shared_limit_stay_in_memory() {
    let redis = RedisServer::start();
    let big = pattern(64 * 1024);
    let body = big.clone();
    let origin = Origin::start(move |_| {
        http::Response::builder()
            .header("cache-control", "max-age=3600")
            .body(TestBody::full(body.clone()))
            .unwrap()
    })
    .await;
    let a = shared_node("a", &redis, origin.addr, "max_object_size = \"16KiB\"").await;
    let b = shared_node("b", &redis, origin.addr, "max_object_size = \"16KiB\"").await;
    let got = fetch(a.addr(), at("/big")).await;
    assert_eq!(got.body, big);
    let hit = fetch(a.addr(), at("/big")).await;
    assert!(status_of(&hit).contains("; hit;"));
    let scrape_a = scrape(a.admin_addr()).await;
    assert_eq!(
        value(
            &scrape_a,
            "viaduct_shared_writes_total",
            &[("outcome", "too-large")]
        ),
        1.0
    );
    let other = fetch(b.addr(), at("/big")).await;
    assert!(
        status_of(&other).contains("fwd=uri-miss"),
        "{}",
        status_of(&other)
    );
    assert_eq!(other.body, big);
    assert_eq!(origin.count("/big"), 2);
}

#[tokio::test]
async fn shared_settings_are_checked_with_their_line() {
    let bad = [
        ("redis = []", "at least one server"),
        ("redis = \"rediss://u:secret@h:6380\"", "TLS to Redis"),
        ("redis = \"redis://127.0.0.1\"", "redis://host:port"),
        ("redis = \"redis://127.0.0.1:6379\"\nmode = \"l1\"", "l2"),
        (
            "redis = \"redis://127.0.0.1:6379\"\ntimeout = \"soon\"",
            "timeout",
        ),
    ];
    for (body, expect) in bad {
        let text = format!("[server]\nlisten = [\"127.0.0.1:0\"]\n[cache.shared]\n{body}\n");
        let err = viaduct::Config::from_toml(&text, "p.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains(expect), "{body}: {err}");
        assert!(
            err.starts_with("p.toml:4:") || err.starts_with("p.toml:5:"),
            "{body}: {err}"
        );
        assert!(!err.contains("secret"), "{err}");
    }
}

#[tokio::test]
async fn a_client_that_wants_a_validated_answer_is_not_served_from_redis() {
    let redis = RedisServer::start();
    let origin = origin().await;
    let a = shared_node("a", &redis, origin.addr, "").await;
    let b = shared_node("b", &redis, origin.addr, "").await;
    fetch(a.addr(), at("/fresh")).await;
    redis.wait_stored("/fresh", 1).await;
    // RFC 9111 §5.2.1.1 / §5.2.1.4: the record's age is not zero.
    for directive in ["max-age=0", "no-cache"] {
        let got = fetch(b.addr(), with(at("/fresh"), "cache-control", directive)).await;
        assert!(
            !status_of(&got).contains("detail=shared"),
            "{directive}: {}",
            status_of(&got)
        );
    }
    assert_eq!(origin.count("/fresh"), 3);
    // One that accepts it as it is gets it from Redis.
    let c = shared_node("c", &redis, origin.addr, "").await;
    let got = fetch(c.addr(), with(at("/fresh"), "cache-control", "max-stale=5")).await;
    assert!(is_shared_hit(&got), "{}", status_of(&got));
}
