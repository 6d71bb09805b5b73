//! Configuration reload: under load, with routes retargeted and added, the
//! cache keeps its entries and no request fails; an invalid file changes
//! nothing and says why; what needs a restart is named.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http::StatusCode;
use support::config_file::*;
use support::*;

fn respond(tag: &'static str) -> impl Fn(&Seen) -> http::Response<TestBody> + Send + Sync {
    move |seen| {
        let mut resp = text(StatusCode::OK, tag);
        let cc = if seen.target.starts_with("/cached") {
            "max-age=600"
        } else {
            "no-store"
        };
        resp.headers_mut()
            .insert("cache-control", cc.parse().unwrap());
        resp
    }
}

fn host(path: &str, host: &str) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let mut req = get(path);
    req.headers_mut().insert("host", host.parse().unwrap());
    req
}

#[tokio::test]
async fn reloads_under_load_keep_the_cache_and_fail_no_request() {
    let old = Origin::start_delayed(respond("old"), |seen| {
        if seen.target == "/slow" {
            Duration::from_millis(300)
        } else {
            Duration::ZERO
        }
    })
    .await;
    let new_a = Origin::start(respond("new")).await;
    let new_b = Origin::start(respond("new")).await;
    let file = ConfigFile::new("load");
    let v1 = format!(
        "[[route]]\nhost = \"*\"\nupstream = \"http://{}\"\n",
        old.addr
    );
    file.write(&v1);
    let proxy = viaduct::Proxy::start_from(&file.0).await.unwrap();
    let (addr, admin) = (proxy.addr(), proxy.admin_addr());
    assert_eq!(
        fetch(addr, host("/cached", "site.test")).await.text(),
        "old"
    );

    // A client loop of 500 requests, four at a time, across the reloads.
    let done = Arc::new(AtomicUsize::new(0));
    let mut loops = Vec::new();
    for worker in 0..4 {
        let done = done.clone();
        loops.push(tokio::spawn(async move {
            let mut bodies = Vec::new();
            for i in 0..125 {
                let got = fetch(addr, host(&format!("/loop/{worker}/{i}"), "site.test")).await;
                assert_eq!(got.status, StatusCode::OK, "{}", got.text());
                bodies.push(got.text());
                done.fetch_add(1, Ordering::SeqCst);
            }
            bodies
        }));
    }
    // A request in flight while the route moves: it finishes where it began.
    let slow = tokio::spawn(async move { fetch(addr, host("/slow", "site.test")).await });
    tokio::time::sleep(Duration::from_millis(50)).await;

    // 1: the route moves to a group of two new servers.
    let group = format!(
        "[[upstream.group]]\nname = \"app\"\nservers = [\"http://{}\", \"http://{}\"]\n",
        new_a.addr, new_b.addr
    );
    file.write(&format!(
        "{group}[[route]]\nhost = \"*\"\nupstream = \"app\"\n"
    ));
    let got = reload(admin).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert!(!got.text().contains("restart"), "{}", got.text());
    // 2: a route is added.
    file.write(&format!(
        "{group}[[route]]\nhost = \"added.test\"\nupstream = \"http://{}\"\n[[route]]\nhost = \"*\"\nupstream = \"app\"\n",
        old.addr
    ));
    assert_eq!(reload(admin).await.status, StatusCode::OK);
    // 3: another route on the group, and a forward-proxy user added.
    let hash = bcrypt::hash("open sesame", 4).unwrap();
    file.write(&format!(
        "[forward.auth]\nrealm = \"office\"\nusers = {{ alice = \"{hash}\" }}\n{group}[[route]]\nhost = \"added.test\"\nupstream = \"http://{}\"\n[[route]]\nhost = \"third.test\"\nupstream = \"app\"\n[[route]]\nhost = \"*\"\nupstream = \"app\"\n",
        old.addr
    ));
    assert_eq!(reload(admin).await.status, StatusCode::OK);

    let slow = slow.await.unwrap();
    assert_eq!(slow.status, StatusCode::OK);
    assert_eq!(
        slow.text(),
        "old",
        "the request in flight finished on its route"
    );
    for lp in loops {
        for body in lp.await.unwrap() {
            assert!(body == "old" || body == "new", "{body}");
        }
    }
    assert_eq!(done.load(Ordering::SeqCst), 500);
    // After: the new targets serve, the added route works, the cache kept
    // what it had.
    assert_eq!(fetch(addr, host("/after", "site.test")).await.text(), "new");
    assert_eq!(
        fetch(addr, host("/added", "added.test")).await.text(),
        "old"
    );
    let cached = fetch(addr, host("/cached", "site.test")).await;
    assert!(
        cached.header("cache-status").unwrap().contains("hit"),
        "the cache kept its entry"
    );
    assert_eq!(cached.text(), "old");
    // The added user: forward requests now need credentials, and hers work.
    let url = new_a.url("/through-forward");
    let got = fetch(addr, get(&url)).await;
    assert_eq!(got.status, StatusCode::PROXY_AUTHENTICATION_REQUIRED);
    let mut req = get(&url);
    let credentials = base64::engine::general_purpose::STANDARD.encode("alice:open sesame");
    req.headers_mut().insert(
        "proxy-authorization",
        format!("Basic {credentials}").parse().unwrap(),
    );
    let got = fetch(addr, req).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    let scrape = scrape(admin).await;
    assert_eq!(
        value(&scrape, "viaduct_config_reloads_total", &[("result", "ok")]),
        3.0
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_invalid_file_changes_nothing_and_says_why() {
    let old = Origin::start(respond("old")).await;
    let file = ConfigFile::new("bad");
    file.write(&format!(
        "[[route]]\nhost = \"*\"\nupstream = \"http://{}\"\n",
        old.addr
    ));
    let proxy = viaduct::Proxy::start_from(&file.0).await.unwrap();
    file.write("[[route]]\nhost = \"*\"\nupstream = \"nowhere\"\n");
    let got = reload(proxy.admin_addr()).await;
    assert_eq!(got.status, StatusCode::BAD_REQUEST);
    let text = got.text();
    assert!(
        text.contains(".toml:") && text.contains("no [[upstream.group]] is named"),
        "{text}"
    );
    assert_eq!(proxy.reload().unwrap_err(), text.trim_end());
    assert_eq!(
        fetch(proxy.addr(), host("/still", "site.test"))
            .await
            .text(),
        "old"
    );
    let scrape = scrape(proxy.admin_addr()).await;
    assert_eq!(
        value(
            &scrape,
            "viaduct_config_reloads_total",
            &[("result", "error")]
        ),
        2.0
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn changes_that_need_a_restart_are_named_and_not_applied() {
    let old = Origin::start(respond("old")).await;
    let file = ConfigFile::new("restart");
    let route = format!(
        "[[route]]\nhost = \"*\"\nupstream = \"http://{}\"\n",
        old.addr
    );
    file.write(&route);
    let proxy = viaduct::Proxy::start_from(&file.0).await.unwrap();
    file.write(&format!("[cache]\ncapacity = \"64MiB\"\n{route}"));
    let report = proxy.reload().unwrap();
    assert!(
        report.contains("[cache] capacity") && report.contains("need a restart"),
        "{report}"
    );
    // Named again by the next reload: the running value did not change.
    assert!(proxy.reload().unwrap().contains("[cache] capacity"));
    // Started without a file: nothing to reload from.
    let plain = start_default().await;
    assert!(plain
        .reload()
        .unwrap_err()
        .contains("without a configuration file"));
    plain.shutdown().await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_reload_changes_the_forward_proxy_deny_rules() {
    let origin = Origin::start(respond("origin")).await;
    let file = ConfigFile::new("deny");
    let head = "[server]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\naccess = \"off\"\n";
    std::fs::write(&file.0, format!("{head}[forward]\nallow_loopback = true\n")).unwrap();
    let proxy = viaduct::Proxy::start_from(&file.0).await.unwrap();
    let url = origin.url("/fwd");
    assert_eq!(fetch(proxy.addr(), get(&url)).await.status, StatusCode::OK);
    // The shipped default again: loopback destinations are refused.
    std::fs::write(
        &file.0,
        format!("{head}[forward]\nallow_loopback = false\n"),
    )
    .unwrap();
    let report = proxy.reload().unwrap();
    assert!(!report.contains("restart"), "{report}");
    let got = fetch(proxy.addr(), get(&url)).await;
    assert_eq!(got.status, StatusCode::FORBIDDEN, "{}", got.text());
    proxy.shutdown().await;
}
