//! Upstream groups: balancing over real origins that count requests,
//! failover past a dead server, passive and active marking, backups, and 503
//! with Retry-After when every server is down.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::*;

fn no_store(tag: &'static str) -> impl Fn(&Seen) -> http::Response<TestBody> + Send + Sync {
    move |_| {
        let mut resp = text(StatusCode::OK, tag);
        resp.headers_mut()
            .insert("cache-control", "no-store".parse().unwrap());
        resp
    }
}

fn config(group: &str) -> viaduct::Config {
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\naccess = \"off\"\n\
         [[upstream.group]]\nname = \"app\"\n{group}\n[[route]]\nhost = \"*\"\nupstream = \"app\"\n"
    );
    let mut config = viaduct::Config::from_toml(&text, "test").unwrap();
    config.forward.allow_loopback = true;
    config
}

/// GET `path` for host `app.test`.
fn site(path: &str) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let mut req = get(path);
    req.headers_mut()
        .insert("host", "app.test".parse().unwrap());
    req
}

fn servers(list: &[String]) -> String {
    let quoted: Vec<String> = list.iter().map(|s| format!("{s:?}")).collect();
    format!("servers = [{}]", quoted.join(", "))
}

#[tokio::test]
async fn round_robin_spreads_by_weight() {
    let a = Origin::start(no_store("a")).await;
    let b = Origin::start(no_store("b")).await;
    let c = Origin::start(no_store("c")).await;
    let list = [
        format!("http://{}", a.addr),
        format!("http://{}", b.addr),
        format!("http://{} weight=2", c.addr),
    ];
    let proxy = start(config(&servers(&list))).await;
    for i in 0..400 {
        let got = fetch(proxy.addr(), site(&format!("/rr/{i}"))).await;
        assert_eq!(got.status, StatusCode::OK);
    }
    let (na, nb, nc) = (a.count("/rr/"), b.count("/rr/"), c.count("/rr/"));
    assert_eq!(na + nb + nc, 400);
    for (n, want) in [(na, 100), (nb, 100), (nc, 200)] {
        assert!(n.abs_diff(want) <= want / 10, "{na} {nb} {nc}");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_dead_server_costs_no_failed_request_and_is_marked_down() {
    let a = Origin::start(no_store("a")).await;
    let (_dead, dead) = refusing_port();
    let list = [format!("http://{}", a.addr), format!("http://{dead}")];
    let proxy = start(config(&format!(
        "{}\nmax_fails = 2\nfail_timeout = \"30s\"",
        servers(&list)
    )))
    .await;
    for i in 0..20 {
        let got = fetch(proxy.addr(), site(&format!("/f/{i}"))).await;
        assert_eq!(got.status, StatusCode::OK, "request {i}: {}", got.text());
    }
    assert_eq!(a.count("/f/"), 20);
    let scrape = scrape(proxy.admin_addr()).await;
    let labels = |server: String| [("group", "app".to_string()), ("server", server)];
    let up = |server: String| {
        let labels = labels(server);
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        value(&scrape, "viaduct_upstream_server_up", &labels)
    };
    assert_eq!(up(dead.to_string()), 0.0, "passively marked down");
    assert_eq!(up(a.addr.to_string()), 1.0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn backups_serve_only_when_the_primaries_are_down_and_then_503() {
    let backup = Origin::start(no_store("backup")).await;
    let (_dead, dead) = refusing_port();
    let list = [
        format!("http://{dead}"),
        format!("http://{} backup", backup.addr),
    ];
    let proxy = start(config(&format!("{}\nmax_fails = 1", servers(&list)))).await;
    let got = fetch(proxy.addr(), site("/b/1")).await;
    assert_eq!(got.text(), "backup", "failover to the backup");
    assert_eq!(fetch(proxy.addr(), site("/b/2")).await.text(), "backup");
    proxy.shutdown().await;

    // Every server down: 503 naming the group, with Retry-After.
    let (_d1, d1) = refusing_port();
    let (_d2, d2) = refusing_port();
    let list = [format!("http://{d1}"), format!("http://{d2}")];
    let proxy = start(config(&format!(
        "{}\nmax_fails = 1\nfail_timeout = \"20s\"",
        servers(&list)
    )))
    .await;
    let first = fetch(proxy.addr(), site("/down")).await;
    assert_eq!(
        first.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        first.text()
    );
    let got = fetch(proxy.addr(), site("/down")).await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(got.text().contains("upstream group app"), "{}", got.text());
    let retry: u64 = got.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn consistent_hash_keeps_each_url_on_one_server() {
    let a = Origin::start(no_store("a")).await;
    let b = Origin::start(no_store("b")).await;
    let list = [format!("http://{}", a.addr), format!("http://{}", b.addr)];
    let proxy = start(config(&format!(
        "{}\nbalance = \"consistent_hash\"",
        servers(&list)
    )))
    .await;
    for round in 0..3 {
        for i in 0..20 {
            let got = fetch(proxy.addr(), site(&format!("/h/{i}"))).await;
            assert_eq!(got.status, StatusCode::OK, "round {round}");
        }
    }
    let mut both = 0;
    for i in 0..20 {
        let path = format!("/h/{i}");
        let exact = |o: &Origin| o.seen().iter().filter(|s| s.target == path).count();
        let (na, nb) = (exact(&a), exact(&b));
        assert!(na == 0 || nb == 0, "/h/{i} went to both: {na} {nb}");
        assert_eq!(na + nb, 3);
        both += (na > 0) as usize;
    }
    assert!(
        (3..=17).contains(&both),
        "keys spread over both servers: {both} on a"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn health_checks_take_a_server_out_and_bring_it_back() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let healthy = Arc::new(AtomicBool::new(true));
    let flag = healthy.clone();
    let a = Origin::start(move |seen| {
        if seen.target == "/healthz" && !flag.load(Ordering::SeqCst) {
            return text(StatusCode::INTERNAL_SERVER_ERROR, "sick");
        }
        no_store("a")(seen)
    })
    .await;
    let b = Origin::start(no_store("b")).await;
    let list = [format!("http://{}", a.addr), format!("http://{}", b.addr)];
    let check = "health_check = { path = \"/healthz\", interval = \"50ms\", timeout = \"1s\", rise = 2, fall = 2 }";
    let proxy = start(config(&format!("{}\n{check}", servers(&list)))).await;
    healthy.store(false, Ordering::SeqCst);
    // Wait (without asserting on time) until a's failed checks take it out.
    let before = a.count("/x/");
    let mut out = false;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let scrape = scrape(proxy.admin_addr()).await;
        let server = a.addr.to_string();
        if value(
            &scrape,
            "viaduct_upstream_server_up",
            &[("group", "app"), ("server", &server)],
        ) == 0.0
        {
            out = true;
            break;
        }
    }
    assert!(out, "a failing health check marks the server down");
    for i in 0..10 {
        assert_eq!(
            fetch(proxy.addr(), site(&format!("/x/{i}"))).await.text(),
            "b"
        );
    }
    assert_eq!(a.count("/x/"), before);
    // Healthy again: back after `rise` passes.
    healthy.store(true, Ordering::SeqCst);
    let mut back = false;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if fetch(proxy.addr(), site("/y")).await.text() == "a" {
            back = true;
            break;
        }
    }
    assert!(back, "the server came back after its checks passed");
    proxy.shutdown().await;
}

#[test]
fn bad_groups_are_refused_naming_the_key() {
    let bad = [
        ("servers = []", "at least one server"),
        (
            "servers = [\"http://127.0.0.1:1 weight=0\"]",
            "weight must be 1 to 1000",
        ),
        ("servers = [\"http://127.0.0.1:1/app\"]", "path or query"),
        (
            "servers = [\"http://127.0.0.1:1\"]\nhealth_check = { path = \"healthz\" }",
            "must start with /",
        ),
    ];
    for (group, message) in bad {
        let text = format!(
            "[[upstream.group]]\nname = \"app\"\n{group}\n[[route]]\nhost = \"*\"\nupstream = \"app\"\n"
        );
        let err = viaduct::Config::from_toml(&text, "p.toml").unwrap_err();
        assert!(err.to_string().contains(message), "{group}: {err}");
        assert!(err.line.is_some(), "{err}");
    }
    let text = "[[route]]\nhost = \"*\"\nupstream = \"nothing\"\n";
    let err = viaduct::Config::from_toml(text, "p.toml").unwrap_err();
    assert!(
        err.to_string()
            .contains("no [[upstream.group]] is named \"nothing\""),
        "{err}"
    );
    assert_eq!(err.line, Some(3));
}

#[tokio::test]
async fn with_every_server_down_a_stored_response_is_served_stale() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let failing = Arc::new(AtomicBool::new(false));
    let flag = failing.clone();
    let a = Origin::start(move |_| {
        if flag.load(Ordering::SeqCst) {
            return text(StatusCode::SERVICE_UNAVAILABLE, "overloaded");
        }
        let mut resp = text(StatusCode::OK, "stored");
        resp.headers_mut().insert(
            "cache-control",
            "max-age=0, stale-if-error=600".parse().unwrap(),
        );
        resp
    })
    .await;
    let list = [format!("http://{}", a.addr)];
    let proxy = start(config(&format!(
        "{}\nmax_fails = 1\nfail_timeout = \"60s\"",
        servers(&list)
    )))
    .await;
    assert_eq!(fetch(proxy.addr(), site("/s")).await.text(), "stored");
    failing.store(true, Ordering::SeqCst);
    // The origin answers 503: stale-if-error, and the server is marked down.
    assert_eq!(fetch(proxy.addr(), site("/s")).await.text(), "stored");
    assert_eq!(a.count("/s"), 2);
    // Now nothing is up: still the stored response, and no request sent.
    let got = fetch(proxy.addr(), site("/s")).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "stored");
    assert_eq!(a.count("/s"), 2);
    // Nothing stored for another URL: 503 naming the group.
    let got = fetch(proxy.addr(), site("/other")).await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(got.header("retry-after").is_some());
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_admin_lists_each_group_and_its_servers() {
    let a = Origin::start(no_store("a")).await;
    let (_dead, dead) = refusing_port();
    let list = [
        format!("http://{}", a.addr),
        format!("http://{dead} backup"),
    ];
    let proxy = start(config(&format!("{}\nmax_fails = 1", servers(&list)))).await;
    assert_eq!(fetch(proxy.addr(), site("/u")).await.status, StatusCode::OK);
    let admin = proxy.admin_addr();
    let got = fetch(admin, get(&format!("http://{admin}/upstreams"))).await;
    assert_eq!(got.status, StatusCode::OK);
    let body: serde_json::Value = serde_json::from_str(&got.text()).unwrap();
    let group = &body["groups"][0];
    assert_eq!(group["name"], "app");
    assert_eq!(group["balance"], "round_robin");
    let first = &group["servers"][0];
    assert_eq!(first["server"], a.addr.to_string());
    assert_eq!(first["up"], true);
    assert_eq!(first["requests"], 1);
    assert_eq!(group["servers"][1]["backup"], true);
    // The same in /stats.
    let stats = fetch(admin, get(&format!("http://{admin}/stats"))).await;
    let stats: serde_json::Value = serde_json::from_str(&stats.text()).unwrap();
    assert_eq!(stats["upstream_groups"][0]["name"], "app");
    proxy.shutdown().await;
}

/// An origin that can be stopped: its listener closes and every connection
/// it holds is dropped, as when the process dies.
async fn killable(tag: &'static str) -> (std::net::SocketAddr, tokio::sync::watch::Sender<bool>) {
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (kill, dead) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut stop = dead.clone();
        loop {
            let (tcp, _) = tokio::select! {
                accepted = listener.accept() => accepted.unwrap(),
                _ = stop.changed() => return,
            };
            let mut stop = dead.clone();
            tokio::spawn(async move {
                let service = service_fn(
                    move |_req: http::Request<hyper::body::Incoming>| async move {
                        let mut resp =
                            http::Response::new(http_body_util::Full::new(bytes::Bytes::from(tag)));
                        resp.headers_mut()
                            .insert("cache-control", "no-store".parse().unwrap());
                        Ok::<_, std::convert::Infallible>(resp)
                    },
                );
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
                tokio::select! {
                    _ = conn => {}
                    _ = stop.changed() => {}
                }
            });
        }
    });
    (addr, kill)
}

#[tokio::test]
async fn a_server_killed_mid_run_costs_no_failed_request() {
    let (a, kill_a) = killable("a").await;
    let (b, _keep_b) = killable("b").await;
    let list = [format!("http://{a}"), format!("http://{b}")];
    let proxy = start(config(&format!(
        "{}\nmax_fails = 1\nfail_timeout = \"30s\"",
        servers(&list)
    )))
    .await;
    let mut seen_a = 0;
    for i in 0..200 {
        if i == 100 {
            kill_a.send(true).unwrap();
        }
        let got = fetch(proxy.addr(), site(&format!("/k/{i}"))).await;
        assert_eq!(got.status, StatusCode::OK, "request {i}: {}", got.text());
        if got.text() == "a" {
            assert!(i < 100, "a answered after it was killed");
            seen_a += 1;
        }
    }
    assert!(seen_a > 20, "a took its share before: {seen_a}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_and_traffic_moves() {
    // Accepts connections and reads, but never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            held.push(tcp);
        }
    });
    let b = Origin::start(no_store("b")).await;
    let list = [
        format!("http://{silent_addr}"),
        format!("http://{}", b.addr),
    ];
    let mut config = config(&format!(
        "{}\nmax_fails = 1\nfail_timeout = \"30s\"",
        servers(&list)
    ));
    config.upstream.response_header_timeout = viaduct::config::Dur(Duration::from_millis(300));
    let proxy = start(config).await;
    for i in 0..6 {
        let got = fetch(proxy.addr(), site(&format!("/n/{i}"))).await;
        // The one request that met the silent server timed out there and
        // was sent once more to b.
        assert_eq!(got.status, StatusCode::OK, "{}", got.text());
        assert_eq!(got.text(), "b");
    }
    let scrape = scrape(proxy.admin_addr()).await;
    let server = silent_addr.to_string();
    assert_eq!(
        value(
            &scrape,
            "viaduct_upstream_server_up",
            &[("group", "app"), ("server", &server)]
        ),
        0.0
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_group_overrides_the_upstream_timeouts_for_its_servers() {
    let slow = Origin::start_delayed(no_store("slow"), |_| Duration::from_secs(5)).await;
    let list = [format!("http://{}", slow.addr)];
    // [upstream] response_header_timeout stays at its 60 s default.
    let proxy = start(config(&format!(
        "{}\nresponse_header_timeout = \"200ms\"",
        servers(&list)
    )))
    .await;
    let got = fetch(proxy.addr(), site("/slow")).await;
    assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT, "{}", got.text());
    assert!(got.text().contains("within 200ms"), "{}", got.text());
    proxy.shutdown().await;
}

#[tokio::test]
async fn least_conn_sends_new_requests_past_a_server_busy_with_slow_ones() {
    let slow = |seen: &Seen| {
        if seen.target.starts_with("/slow") {
            Duration::from_millis(800)
        } else {
            Duration::ZERO
        }
    };
    let a = Origin::start_delayed(no_store("a"), slow).await;
    let b = Origin::start_delayed(no_store("b"), slow).await;
    let list = [format!("http://{}", a.addr), format!("http://{}", b.addr)];
    let proxy = start(config(&format!(
        "{}\nbalance = \"least_conn\"",
        servers(&list)
    )))
    .await;
    let addr = proxy.addr();
    // With both idle the first server takes the slow request...
    let held = tokio::spawn(async move { fetch(addr, site("/slow")).await });
    while a.count("/slow") + b.count("/slow") == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // ...and while it is held, new requests go to the other one.
    let busy_is_a = a.count("/slow") == 1;
    for i in 0..5 {
        let got = fetch(addr, site(&format!("/fast/{i}"))).await;
        assert_eq!(got.text(), if busy_is_a { "b" } else { "a" });
    }
    assert_eq!(held.await.unwrap().status, StatusCode::OK);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_background_revalidation_goes_through_the_group() {
    let b = Origin::start(|_| {
        let mut resp = text(StatusCode::OK, "b");
        resp.headers_mut().insert(
            "cache-control",
            "max-age=1, stale-while-revalidate=600".parse().unwrap(),
        );
        resp
    })
    .await;
    // The first server (which a request without its group would go to) is dead.
    let (_dead, dead) = refusing_port();
    let list = [format!("http://{dead}"), format!("http://{}", b.addr)];
    let proxy = start(config(&format!(
        "{}\nmax_fails = 1\nfail_timeout = \"60s\"",
        servers(&list)
    )))
    .await;
    assert_eq!(fetch(proxy.addr(), site("/swr")).await.text(), "b");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Stale: served at once, refreshed in the background, through the group.
    assert_eq!(fetch(proxy.addr(), site("/swr")).await.text(), "b");
    let mut refreshed = false;
    for _ in 0..200 {
        if b.count("/swr") == 2 {
            refreshed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refreshed, "the revalidation reached b");
    proxy.shutdown().await;
}
