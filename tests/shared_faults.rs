//! The shared tier when Redis fails: killed, slow, full, or holding a
//! damaged record. Clients never notice beyond a miss: every request is
//! answered from memory or the origin, the failure is counted, and the
//! tier comes back by itself.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use support::redis::{shared_node, wait_connected, RedisServer};
use support::*;

async fn origin() -> Origin {
    Origin::start(|seen| {
        http::Response::builder()
            .header("cache-control", "max-age=3600")
            .body(TestBody::full(Bytes::from(format!(
                "body of {}",
                seen.target
            ))))
            .unwrap()
    })
    .await
}

fn status_of(got: &Got) -> String {
    got.header("cache-status").unwrap_or("").to_string()
}

/// B serves `path` from Redis, once A's write is there.
async fn shared_hit_on(redis: &RedisServer, b: &viaduct::Running, path: &str) -> Got {
    redis.wait_stored(path, 1).await;
    let got = fetch(b.addr(), at(path)).await;
    assert!(
        status_of(&got).contains("detail=shared"),
        "{}",
        status_of(&got)
    );
    got
}

async fn errors(node: &viaduct::Running, kind: &str) -> f64 {
    let scrape = scrape(node.admin_addr()).await;
    value(&scrape, "viaduct_shared_errors_total", &[("kind", kind)])
}

#[tokio::test]
async fn redis_killed_mid_run_loses_no_request_and_comes_back() {
    let mut redis = RedisServer::start();
    let origin = origin().await;
    let a = shared_node("a", &redis, origin.addr, "").await;
    let b = shared_node("b", &redis, origin.addr, "").await;
    fetch(a.addr(), at("/before")).await;
    shared_hit_on(&redis, &b, "/before").await;

    redis.kill();
    for i in 0..40 {
        // Hits in memory, and misses that go to the origin past Redis.
        for node in [&a, &b] {
            let got = fetch(node.addr(), at("/before")).await;
            assert_eq!(got.status, StatusCode::OK);
            assert_eq!(got.text(), "body of /before");
        }
        let path = format!("/during/{i}");
        let got = fetch([&a, &b][i % 2].addr(), at(&path)).await;
        assert_eq!(got.status, StatusCode::OK, "{path}");
        assert_eq!(got.text(), format!("body of {path}"));
    }
    let failed = errors(&a, "unavailable").await
        + errors(&a, "timeout").await
        + errors(&b, "unavailable").await
        + errors(&b, "timeout").await;
    assert!(failed > 0.0, "the outage was counted");

    // Same port, empty: both nodes reconnect by themselves and share again.
    redis.restart();
    wait_connected(a.admin_addr()).await;
    wait_connected(b.admin_addr()).await;
    // The first calls after the restart may still meet a connection that
    // is coming back: sharing resumes within a few URLs.
    let deadline = Instant::now() + PATIENCE;
    for i in 0.. {
        let path = format!("/after/{i}");
        fetch(a.addr(), at(&path)).await;
        redis.wait_stored(&path, 1).await;
        let got = fetch(b.addr(), at(&path)).await;
        assert_eq!(got.text(), format!("body of {path}"));
        if status_of(&got).contains("detail=shared") {
            assert_eq!(origin.count(&path), 1);
            break;
        }
        assert!(Instant::now() < deadline, "never shared again");
    }
}

#[tokio::test]
async fn a_slow_redis_is_skipped_after_the_timeout() {
    let redis = RedisServer::start();
    let origin = origin().await;
    let a = shared_node("a", &redis, origin.addr, "").await;
    fetch(a.addr(), at("/warm")).await;

    // Redis answers nothing for 5 s.
    let sleeper = {
        let port = redis.addr.port().to_string();
        std::thread::spawn(move || {
            std::process::Command::new("redis-cli")
                .args(["-p", &port, "DEBUG", "SLEEP", "5"])
                .output()
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..5 {
        let path = format!("/slow/{i}");
        let started = Instant::now();
        let got = fetch(a.addr(), at(&path)).await;
        let took = started.elapsed();
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.text(), format!("body of {path}"));
        // The timeout is 50 ms; the bound leaves room for a loaded machine
        // and stays far below the 5 s Redis is asleep.
        assert!(took < Duration::from_millis(2500), "{path} waited {took:?}");
    }
    let hit = fetch(a.addr(), at("/warm")).await;
    assert!(status_of(&hit).contains("; hit;"));
    assert!(errors(&a, "timeout").await >= 1.0);
    sleeper.join().unwrap();
}

#[tokio::test]
async fn a_damaged_record_is_never_served() {
    let redis = RedisServer::start();
    let origin = origin().await;
    let a = shared_node("a", &redis, origin.addr, "").await;
    let b = shared_node("b", &redis, origin.addr, "").await;
    fetch(a.addr(), at("/damaged")).await;
    shared_hit_on(&redis, &b, "/damaged").await;
    let c = shared_node("c", &redis, origin.addr, "").await;

    // One byte of the body flipped, in place.
    let key = redis
        .keys()
        .into_iter()
        .find(|k| k.ends_with("/damaged"))
        .expect("stored in Redis");
    let flip = "local v = redis.call('HGET', KEYS[1], 'r:') \
                local i = #v - 2 \
                local b = string.byte(v, i) \
                redis.call('HSET', KEYS[1], 'r:', string.sub(v, 1, i - 1) .. string.char((b + 1) % 256) .. string.sub(v, i + 1)) \
                return 1";
    assert_eq!(redis.cli(&["EVAL", flip, "1", &key]).trim(), "1");

    let got = fetch(c.addr(), at("/damaged")).await;
    assert_eq!(got.text(), "body of /damaged");
    assert!(
        status_of(&got).contains("fwd=uri-miss"),
        "{}",
        status_of(&got)
    );
    // Refused at the lookup, and again at the look after taking the lock.
    assert!(errors(&c, "damaged").await >= 1.0);
    assert_eq!(origin.count("/damaged"), 2);
}

#[tokio::test]
async fn a_full_redis_is_counted_and_changes_nothing_for_clients() {
    let redis = RedisServer::start();
    let origin = origin().await;
    let a = shared_node("a", &redis, origin.addr, "").await;
    redis.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    redis.cli(&["CONFIG", "SET", "maxmemory", "1"]);

    for i in 0..10 {
        let path = format!("/full/{i}");
        let got = fetch(a.addr(), at(&path)).await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.text(), format!("body of {path}"));
        let hit = fetch(a.addr(), at(&path)).await;
        assert!(status_of(&hit).contains("; hit;"), "{}", status_of(&hit));
    }
    // Writes fail in the background, after the answers.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let scrape = scrape(a.admin_addr()).await;
        if value(
            &scrape,
            "viaduct_shared_writes_total",
            &[("outcome", "failed")],
        ) >= 1.0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a refused write was never counted: {:?}",
            scrape
                .samples
                .iter()
                .filter(|s| s.metric.starts_with("viaduct_shared"))
                .map(|s| (&s.metric, &s.labels, &s.value))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(errors(&a, "full").await >= 1.0);
}
