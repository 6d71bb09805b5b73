//! The admin listener: /metrics (parsed with a Prometheus text parser),
//! /stats agreeing with it, the dashboard, health, cache inspection, token.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use support::*;

async fn stats(admin: SocketAddr) -> serde_json::Value {
    let got = fetch(admin, get(&format!("http://{admin}/stats"))).await;
    assert_eq!(got.status, StatusCode::OK);
    serde_json::from_slice(&got.body).unwrap()
}

/// Waits until `n` requests were recorded: they are counted when each
/// response body ends, which can trail the client's read by a moment.
async fn settle(admin: SocketAddr, n: u64) {
    for _ in 0..400 {
        if stats(admin).await["requests"]["total"] == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("requests never reached {n}");
}

#[tokio::test]
async fn metrics_move_by_exactly_the_known_sequence_and_stats_agree() {
    let origin = Origin::start(|_| {
        Response::builder()
            .header("cache-control", "max-age=600")
            .body(TestBody::full(Bytes::from(vec![b'x'; 1000])))
            .unwrap()
    })
    .await;
    let proxy = start_default().await;
    let admin = proxy.admin_addr();
    let before = scrape(admin).await;
    assert_eq!(value(&before, "viaduct_cache_hits_total", &[]), 0.0);
    assert_eq!(
        value(&before, "viaduct_cache_capacity_bytes", &[]),
        (256u64 << 20) as f64
    );

    let mut client = Client::connect(proxy.addr()).await;
    for i in 0..3 {
        let got = client.get(&origin.url(&format!("/obs/{i}"))).await;
        assert!(got.header("cache-status").unwrap().contains("fwd=uri-miss"));
    }
    for i in 0..5 {
        let got = client.get(&origin.url(&format!("/obs/{}", i % 3))).await;
        assert!(got.header("cache-status").unwrap().contains("; hit;"));
        assert_eq!(got.body.len(), 1000);
    }
    settle(admin, 8).await;

    let after = scrape(admin).await;
    let forward = |cache| [("mode", "forward"), ("cache", cache)];
    assert_eq!(
        value(&after, "viaduct_requests_total", &forward("miss")),
        3.0
    );
    assert_eq!(
        value(&after, "viaduct_requests_total", &forward("hit")),
        5.0
    );
    assert_eq!(value(&after, "viaduct_cache_misses_total", &[]), 3.0);
    assert_eq!(value(&after, "viaduct_cache_hits_total", &[]), 5.0);
    assert_eq!(
        value(
            &after,
            "viaduct_response_bytes_total",
            &[("source", "upstream")]
        ),
        3000.0
    );
    assert_eq!(
        value(
            &after,
            "viaduct_response_bytes_total",
            &[("source", "cache")]
        ),
        5000.0
    );
    assert_eq!(value(&after, "viaduct_upstream_requests_total", &[]), 3.0);
    assert_eq!(
        value(&after, "viaduct_upstream_connections_total", &[]),
        1.0
    );
    assert_eq!(value(&after, "viaduct_cache_entries", &[]), 3.0);
    assert!(value(&after, "viaduct_cache_bytes", &[]) >= 3000.0);
    assert_eq!(
        value(
            &after,
            "viaduct_route_requests_total",
            &[("route", "forward proxy")]
        ),
        8.0
    );
    assert_eq!(value(&after, "viaduct_client_connections", &[]), 1.0);
    assert!(after
        .samples
        .iter()
        .any(|s| s.metric.starts_with("viaduct_request_duration_seconds")));
    assert!(after
        .samples
        .iter()
        .any(|s| s.metric == "viaduct_build_info"));

    let s = stats(admin).await;
    assert_eq!(s["hits"], 5);
    assert_eq!(s["misses"], 3);
    assert_eq!(s["hit_ratio"], 5.0 / 8.0);
    assert_eq!(s["bytes"]["cache"], 5000);
    assert_eq!(s["bytes"]["upstream"], 3000);
    assert_eq!(s["byte_hit_ratio"], 5000.0 / 8000.0);
    assert_eq!(s["requests"]["by_cache"]["hit"], 5);
    assert_eq!(s["requests"]["by_mode"]["forward"], 8);
    assert_eq!(s["cache"]["entries"], 3);
    assert_eq!(s["upstream"]["connections_opened"], 1);
    assert_eq!(
        s["upstream"]["requests"],
        value(&after, "viaduct_upstream_requests_total", &[]) as u64
    );
    assert_eq!(s["routes"][0]["route"], "forward proxy");
    assert_eq!(s["routes"][0]["requests"], 8);
    assert_eq!(s["routes"][0]["hits"], 5);
    assert!(s["uptime_seconds"].as_f64().unwrap() >= 0.0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_dashboard_is_html_that_refers_only_to_itself_and_the_admin_endpoints() {
    let proxy = start_default().await;
    let admin = proxy.admin_addr();
    let got = fetch(admin, get(&format!("http://{admin}/"))).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.header("content-type"), Some("text/html; charset=utf-8"));
    let html = got.text();
    assert!(
        html.contains("<html") && html.contains("stats"),
        "not the dashboard"
    );
    for forbidden in [
        "http://",
        "https://",
        "src=\"//",
        "href=\"//",
        "@import",
        "url(http",
    ] {
        assert!(
            !html.contains(forbidden),
            "the dashboard refers outside itself: {forbidden}"
        );
    }
    // Every src/href it has points at an admin endpoint or an anchor.
    for attr in ["src=\"", "href=\""] {
        for target in html
            .split(attr)
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap())
        {
            let endpoint = target.trim_start_matches("./").trim_start_matches('/');
            let endpoint = endpoint.split(['?', '#']).next().unwrap();
            assert!(
                target.starts_with('#')
                    || target == "data:,"
                    || ["", "stats", "metrics", "healthz", "readyz"].contains(&endpoint),
                "unexpected reference {target}"
            );
        }
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn admin_paths_on_the_proxy_port_are_never_the_admin_handler() {
    let proxy = start_default().await;
    for path in ["/metrics", "/stats", "/", "/healthz"] {
        let mut req = get(path);
        req.headers_mut()
            .insert("host", "127.0.0.1".parse().unwrap());
        let got = fetch(proxy.addr(), req).await;
        assert_eq!(got.status, StatusCode::NOT_FOUND, "{path}");
        assert!(
            got.text().starts_with("no route for host"),
            "{path}: {}",
            got.text()
        );
    }
    // Even absolute-form aimed at the admin address from the proxy port is
    // forwarded as ordinary traffic at most, never served by the proxy itself.
    let admin = proxy.admin_addr();
    let got = fetch(proxy.addr(), get(&format!("http://{admin}/healthz"))).await;
    assert!(got.header("cache-status").is_some());
    proxy.shutdown().await;
}

#[tokio::test]
async fn health_readiness_and_cache_inspection() {
    let origin = Origin::start(|_| {
        Response::builder()
            .header("cache-control", "max-age=600")
            .header("vary", "Accept-Encoding")
            .body(TestBody::full(Bytes::from_static(b"inspect me")))
            .unwrap()
    })
    .await;
    let proxy = start_default().await;
    let admin = proxy.admin_addr();
    assert_eq!(
        fetch(admin, get(&format!("http://{admin}/healthz")))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        fetch(admin, get(&format!("http://{admin}/readyz")))
            .await
            .status,
        StatusCode::OK
    );
    let url = origin.url("/obs/inspect");
    fetch(proxy.addr(), get(&url)).await;
    let got = fetch(admin, get(&format!("http://{admin}/cache?url={url}"))).await;
    let v: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(v["stored"], true, "{v}");
    let variant = &v["variants"][0];
    assert_eq!(variant["status"], 200);
    assert_eq!(variant["body_bytes"], 10);
    assert!(variant["ttl"].as_i64().unwrap() > 500);
    assert!(variant["size"].as_u64().unwrap() > 10);
    assert_eq!(variant["headers"]["cache-control"][0], "max-age=600");
    assert!(variant["vary"]
        .as_object()
        .unwrap()
        .contains_key("accept-encoding"));
    let missing = fetch(
        admin,
        get(&format!(
            "http://{admin}/cache?url={}",
            origin.url("/never")
        )),
    )
    .await;
    let v: serde_json::Value = serde_json::from_slice(&missing.body).unwrap();
    assert_eq!(v["stored"], false);
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_admin_token_is_required_when_configured_and_x_cache_is_optional() {
    let origin = Origin::start(|_| {
        Response::builder()
            .header("cache-control", "max-age=600")
            .body(TestBody::full(Bytes::from_static(b"x")))
            .unwrap()
    })
    .await;
    let mut config = base_config();
    config.admin.token = Some("s3cret".into());
    config.cache.x_cache = true;
    let proxy = start(config).await;
    let admin = proxy.admin_addr();
    let got = fetch(admin, get(&format!("http://{admin}/stats"))).await;
    assert_eq!(got.status, StatusCode::UNAUTHORIZED);
    // The page (which asks for the token) and the probes stay open.
    assert_eq!(
        fetch(admin, get(&format!("http://{admin}/"))).await.status,
        StatusCode::OK
    );
    assert_eq!(
        fetch(admin, get(&format!("http://{admin}/healthz")))
            .await
            .status,
        StatusCode::OK
    );
    let got = fetch(admin, get(&format!("http://{admin}/metrics"))).await;
    assert_eq!(got.status, StatusCode::UNAUTHORIZED);
    assert!(got
        .header("www-authenticate")
        .unwrap()
        .starts_with("Bearer"));
    let mut req = get(&format!("http://{admin}/stats"));
    req.headers_mut()
        .insert("authorization", "Bearer wrong".parse().unwrap());
    assert_eq!(fetch(admin, req).await.status, StatusCode::UNAUTHORIZED);
    let mut req = get(&format!("http://{admin}/stats"));
    req.headers_mut()
        .insert("authorization", "Bearer s3cret".parse().unwrap());
    assert_eq!(fetch(admin, req).await.status, StatusCode::OK);

    let url = origin.url("/obs/x-cache");
    assert_eq!(
        fetch(proxy.addr(), get(&url)).await.header("x-cache"),
        Some("MISS")
    );
    assert_eq!(
        fetch(proxy.addr(), get(&url)).await.header("x-cache"),
        Some("HIT")
    );
    proxy.shutdown().await;
}
