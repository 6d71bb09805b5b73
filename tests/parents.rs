//! Parent proxies for forward traffic (`[forward] parent`, `never_direct`):
//! a chain of two viaducts over real sockets, fake parents that record what
//! they receive, parents that are down, CONNECT through a parent, the
//! destination guard in front of the parent, and the parent URL's checks.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::Value;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use viaduct::Config;

/// `[forward] parent` as the configuration file would give it.
fn parents(urls: &[String]) -> Vec<viaduct::config::ParentUrl> {
    let list: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    let text = format!("[forward]\nparent = [{}]\n", list.join(", "));
    Config::from_toml(&text, "parents.toml")
        .expect("valid parent URLs")
        .forward
        .parent
}

/// A viaduct named `name` (each hop of a chain needs its own, for `Via`).
fn named(name: &str) -> Config {
    let mut config = base_config();
    config.server.name = name.to_string();
    config
}

/// A child named "child" whose parents are `urls`.
fn child_of(urls: &[String]) -> Config {
    let mut config = named("child");
    config.forward.parent = parents(urls);
    config
}

fn http_url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// An origin answering `body` with `Cache-Control: max-age=3600`.
async fn cacheable_origin(body: &'static str) -> Origin {
    Origin::start(move |_| {
        Response::builder()
            .header("cache-control", "max-age=3600")
            .body(TestBody::full(Bytes::from_static(body.as_bytes())))
            .unwrap()
    })
    .await
}

/// Every value of `name` in `headers`, joined with ", ".
fn all(headers: &http::HeaderMap, name: &str) -> String {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A call to an admin listener.
async fn admin_call(method: &str, admin: SocketAddr, path_and_query: &str) -> Got {
    fetch(admin, admin_request(method, admin, path_and_query, None)).await
}

/// Whether the cache behind `admin` holds `url` (admin `GET /cache?url=`).
async fn stored(admin: SocketAddr, url: &str) -> bool {
    let got = admin_call("GET", admin, &format!("/cache?url={}", query_value(url))).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    let json: Value = serde_json::from_slice(&got.body).unwrap();
    json["stored"] == Value::Bool(true)
}

/// Waits (bounded by PATIENCE) until the cache behind `admin` holds `url`:
/// a store may complete just after the client has the last byte.
async fn wait_stored(admin: SocketAddr, url: &str) -> bool {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        if stored(admin, url).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Scraped `viaduct_forward_parent_requests_total{parent, outcome}`.
async fn parent_requests(admin: SocketAddr, parent: &str, outcome: &str) -> f64 {
    value(
        &scrape(admin).await,
        "viaduct_forward_parent_requests_total",
        &[("parent", parent), ("outcome", outcome)],
    )
}

/// A fake parent proxy: records each request head it reads and answers it
/// with a canned `200 ok` (keep-alive, so a pooled connection can be reused).
struct FakeParent {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    connections: Arc<AtomicUsize>,
}

impl FakeParent {
    async fn start() -> FakeParent {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (h, c) = (heads.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let h = h.clone();
                tokio::spawn(async move {
                    loop {
                        let mut head = Vec::new();
                        let mut byte = [0u8; 1];
                        while !head.ends_with(b"\r\n\r\n") {
                            match stream.read(&mut byte).await {
                                Ok(1) => head.push(byte[0]),
                                _ => return,
                            }
                        }
                        h.lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&head).into_owned());
                        let answer = "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nfrom fake";
                        if stream.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        FakeParent {
            addr,
            heads,
            connections,
        }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// A plain TCP echo server; counts its connections.
async fn echo_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let c = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (mut r, mut w) = stream.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, connections)
}

/// Sends `CONNECT target` to `proxy` and reads the answer head.
async fn connect(proxy: SocketAddr, target: SocketAddr) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = read_response(&mut stream).await;
    (stream, head)
}

fn status_of(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"))
}

// 1. A cache hierarchy: the child's misses go through the parent, both
//    store, and the parent's cache answers the child's next miss.
#[tokio::test]
async fn a_child_fetches_through_its_parent_and_the_parents_cache_serves_it_again() {
    let origin = cacheable_origin("from origin").await;
    let parent = start(named("parent")).await;
    let child = start(child_of(&[http_url(parent.addr())])).await;
    let url = origin.url("/hier/a");

    let got = fetch(child.addr(), get(&url)).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(got.text(), "from origin");
    assert_eq!(origin.count("/hier/a"), 1);
    // The origin got it from the parent, which got it from the child.
    let seen = origin.last();
    assert_eq!(seen.target, "/hier/a", "the parent sends origin-form");
    let via = all(&seen.headers, "via");
    assert!(
        via.contains("child") && via.contains("parent"),
        "Via at the origin: {via}"
    );
    let via = all(&got.headers, "via");
    assert!(
        via.contains("child") && via.contains("parent"),
        "Via of the response: {via}"
    );
    let cache_status = got.header("cache-status").unwrap();
    // RFC 9211 §2: the parent's member first, then the child's.
    let members: Vec<&str> = cache_status.split(", ").collect();
    assert!(
        members.len() == 2
            && members[0].starts_with("parent; fwd=uri-miss")
            && members[1].starts_with("child; fwd=uri-miss")
            && members[1].contains("stored"),
        "{cache_status}"
    );
    // Counted as the parent's: answered, once.
    let label = parent.addr().to_string();
    assert_eq!(
        parent_requests(child.admin_addr(), &label, "answered").await,
        1.0
    );
    assert_eq!(
        parent_requests(child.admin_addr(), "direct", "answered").await,
        0.0
    );
    let scraped = scrape(parent.admin_addr()).await;
    assert_eq!(value(&scraped, "viaduct_cache_misses_total", &[]), 1.0);
    // Both caches keep it.
    assert!(wait_stored(child.admin_addr(), &url).await, "child stores");
    assert!(
        wait_stored(parent.admin_addr(), &url).await,
        "parent stores"
    );

    // The child forgets it; its next miss is the parent's hit.
    let purged = admin_call(
        "POST",
        child.admin_addr(),
        &format!("/purge?url={}", query_value(&url)),
    )
    .await;
    assert_eq!(purged.status, StatusCode::OK, "{}", purged.text());
    assert!(!stored(child.admin_addr(), &url).await);
    let again = fetch(child.addr(), get(&url)).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.text(), "from origin");
    assert_eq!(origin.count("/hier/a"), 1, "the parent's cache answered");
    // The parent's member says it hit, the child's that it missed
    // (RFC 9211 §2); the parent's counters agree.
    let cache_status = again.header("cache-status").unwrap();
    assert!(
        cache_status.starts_with("parent; hit") && cache_status.contains(", child; fwd=uri-miss"),
        "{cache_status}"
    );
    let scraped = scrape(parent.admin_addr()).await;
    assert_eq!(value(&scraped, "viaduct_cache_hits_total", &[]), 1.0);
    assert_eq!(value(&scraped, "viaduct_cache_misses_total", &[]), 1.0);
    assert_eq!(
        parent_requests(child.admin_addr(), &label, "answered").await,
        2.0
    );
    assert!(
        wait_stored(child.admin_addr(), &url).await,
        "child stores again"
    );

    // A second child with the same parent: the parent's hit too.
    let second = start(child_of(&[http_url(parent.addr())])).await;
    let third = fetch(second.addr(), get(&url)).await;
    assert_eq!(third.status, StatusCode::OK);
    assert_eq!(third.text(), "from origin");
    assert_eq!(origin.count("/hier/a"), 1);
    let scraped = scrape(parent.admin_addr()).await;
    assert_eq!(value(&scraped, "viaduct_cache_hits_total", &[]), 2.0);

    second.shutdown().await;
    child.shutdown().await;
    parent.shutdown().await;
}

// RFC 9211 §2: "When adding a value to the Cache-Status header field, caches
// SHOULD preserve the existing field value, to allow debugging of the entire
// chain of caches handling the request."
#[tokio::test]
async fn cache_status_keeps_the_parents_member() {
    let origin = cacheable_origin("from origin").await;
    let parent = start(named("parent")).await;
    let warm = fetch(parent.addr(), get(&origin.url("/chain/cs"))).await;
    assert_eq!(warm.status, StatusCode::OK);
    assert!(wait_stored(parent.admin_addr(), &origin.url("/chain/cs")).await);
    let child = start(child_of(&[http_url(parent.addr())])).await;
    let got = fetch(child.addr(), get(&origin.url("/chain/cs"))).await;
    assert_eq!(got.status, StatusCode::OK);
    let cache_status = all(&got.headers, "cache-status");
    assert!(cache_status.contains("parent; hit"), "{cache_status}");
    assert!(
        cache_status.contains("child; fwd=uri-miss"),
        "{cache_status}"
    );
    child.shutdown().await;
    parent.shutdown().await;
}

// 2. What the parent receives: absolute-form, and Basic credentials from
//    the parent URL's user information.
#[tokio::test]
async fn the_parent_gets_absolute_form_and_its_credentials() {
    let fake = FakeParent::start().await;
    let child = start(child_of(&[format!("http://user:pass@{}", fake.addr)])).await;
    // A name nobody resolves: the parent resolves it, not the child.
    let got = fetch(child.addr(), get("http://origin.invalid/two?x=1")).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(got.text(), "from fake");
    let heads = fake.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let head = &heads[0];
    assert!(head.starts_with("GET http://"), "{head}");
    assert!(
        head.starts_with("GET http://origin.invalid/two?x=1 HTTP/1.1\r\n"),
        "{head}"
    );
    // base64("user:pass")
    let auth = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("proxy-authorization")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no Proxy-Authorization in {head}"));
    assert_eq!(auth, "Basic dXNlcjpwYXNz");
    child.shutdown().await;

    // Without user information, no credentials.
    let plain = FakeParent::start().await;
    let child = start(child_of(&[http_url(plain.addr)])).await;
    let got = fetch(child.addr(), get("http://origin.invalid/plain")).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    let heads = plain.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(
        heads[0].starts_with("GET http://origin.invalid/plain HTTP/1.1\r\n"),
        "{}",
        heads[0]
    );
    assert!(
        !heads[0]
            .to_ascii_lowercase()
            .contains("proxy-authorization"),
        "{}",
        heads[0]
    );
    child.shutdown().await;
}

// 3. A parent that is down is passed over: direct after it, or the next
//    parent.
#[tokio::test]
async fn a_parent_that_is_down_is_passed_over_and_the_request_goes_direct() {
    let origin = Origin::fixed("direct").await;
    let (_hold, down) = refusing_port();
    let child = start(child_of(&[http_url(down)])).await;
    let got = fetch(child.addr(), get(&origin.url("/down/a"))).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(got.text(), "direct");
    assert_eq!(origin.count("/down/a"), 1);
    let via = all(&origin.last().headers, "via");
    assert!(via.contains("child"), "{via}");
    let admin = child.admin_addr();
    let label = down.to_string();
    assert_eq!(parent_requests(admin, &label, "failed").await, 1.0);
    assert_eq!(parent_requests(admin, &label, "answered").await, 0.0);
    assert_eq!(parent_requests(admin, "direct", "answered").await, 1.0);
    assert_eq!(parent_requests(admin, "direct", "failed").await, 0.0);
    // The dashboard's numbers say the parent is passed over.
    let stats = admin_call("GET", admin, "/stats").await;
    let stats: serde_json::Value = serde_json::from_slice(&stats.body).unwrap();
    assert_eq!(stats["parents"][0]["parent"], label.as_str(), "{stats}");
    assert_eq!(stats["parents"][0]["up"], false, "{stats}");
    child.shutdown().await;
}

#[tokio::test]
async fn with_the_first_parent_down_the_second_serves() {
    let origin = Origin::fixed("via the second").await;
    let (_hold, down) = refusing_port();
    let parent = start(named("parent")).await;
    let child = start(child_of(&[http_url(down), http_url(parent.addr())])).await;
    let got = fetch(child.addr(), get(&origin.url("/second/a"))).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(got.text(), "via the second");
    assert_eq!(origin.count("/second/a"), 1);
    let via = all(&origin.last().headers, "via");
    assert!(
        via.contains("child") && via.contains("parent"),
        "the second parent forwarded it: {via}"
    );
    let admin = child.admin_addr();
    let up = parent.addr().to_string();
    assert_eq!(
        parent_requests(admin, &down.to_string(), "failed").await,
        1.0
    );
    assert_eq!(parent_requests(admin, &up, "answered").await, 1.0);
    assert_eq!(parent_requests(admin, "direct", "answered").await, 0.0);
    let scraped = scrape(parent.admin_addr()).await;
    assert_eq!(
        value(
            &scraped,
            "viaduct_requests_total",
            &[("mode", "forward"), ("cache", "miss")]
        ),
        1.0
    );
    child.shutdown().await;
    parent.shutdown().await;
}

// 4. never_direct: with every parent down, an error and nothing at the origin.
#[tokio::test]
async fn never_direct_with_every_parent_down_is_an_error_and_the_origin_sees_nothing() {
    let origin = Origin::fixed("must not be reached").await;
    let (_hold_a, a) = refusing_port();
    let (_hold_b, b) = refusing_port();
    for list in [vec![http_url(a)], vec![http_url(a), http_url(b)]] {
        let mut config = child_of(&list);
        config.forward.never_direct = true;
        let child = start(config).await;
        let got = fetch(child.addr(), get(&origin.url("/never/a"))).await;
        assert!(
            got.status.is_server_error(),
            "{} {}",
            got.status,
            got.text()
        );
        assert_eq!(got.status, StatusCode::BAD_GATEWAY, "{}", got.text());
        let body = got.text();
        assert_eq!(body.trim_end().lines().count(), 1, "one line: {body:?}");
        assert!(!body.trim().is_empty());
        // Again, with every parent now marked down: still no direct send.
        let again = fetch(child.addr(), get(&origin.url("/never/b"))).await;
        assert!(again.status.is_server_error(), "{}", again.status);
        let admin = child.admin_addr();
        assert_eq!(parent_requests(admin, "direct", "answered").await, 0.0);
        assert!(parent_requests(admin, &a.to_string(), "failed").await >= 1.0);
        child.shutdown().await;
    }
    assert_eq!(origin.count("/never"), 0);
    assert_eq!(origin.connections(), 0);
}

// 5. CONNECT through the parent.
#[tokio::test]
async fn connect_goes_through_the_parent() {
    let (echo, echo_connections) = echo_server().await;
    let mut parent_config = named("parent");
    parent_config.forward.connect_ports = vec![echo.port()];
    let parent = start(parent_config).await;
    let mut config = child_of(&[http_url(parent.addr())]);
    config.forward.connect_ports = vec![echo.port()];
    let child = start(config).await;

    let (mut stream, head) = connect(child.addr(), echo).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    stream.write_all(b"ping through two proxies").await.unwrap();
    let mut back = vec![0u8; b"ping through two proxies".len()];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut back))
        .await
        .expect("echo within patience")
        .unwrap();
    assert_eq!(back, b"ping through two proxies");
    assert_eq!(echo_connections.load(Ordering::SeqCst), 1);
    // The tunnel runs through the parent, not beside it.
    let scraped = scrape(parent.admin_addr()).await;
    assert_eq!(value(&scraped, "viaduct_tunnels_open", &[]), 1.0);
    let label = parent.addr().to_string();
    assert_eq!(
        parent_requests(child.admin_addr(), &label, "answered").await,
        1.0
    );
    assert_eq!(
        parent_requests(child.admin_addr(), "direct", "answered").await,
        0.0
    );
    drop(stream);
    child.shutdown().await;
    parent.shutdown().await;
}

#[tokio::test]
async fn a_parent_that_refuses_the_connect_makes_the_child_answer_an_error() {
    let (echo, echo_connections) = echo_server().await;
    // The parent does not allow the echo port: it answers 403.
    let parent = start(named("parent")).await;
    let (_, head) = connect(parent.addr(), echo).await;
    assert_eq!(status_of(&head), 403, "{head}");
    let mut config = child_of(&[http_url(parent.addr())]);
    config.forward.connect_ports = vec![echo.port()];
    let child = start(config).await;
    let (_stream, head) = connect(child.addr(), echo).await;
    let status = status_of(&head);
    assert!((400..600).contains(&status), "{head}");
    assert_ne!(status, 200, "{head}");
    assert_eq!(echo_connections.load(Ordering::SeqCst), 0);
    child.shutdown().await;
    parent.shutdown().await;
}

// 6. The destination guard still applies: what the child can refuse
//    without resolving, it refuses before asking the parent.
#[tokio::test]
async fn the_childs_own_admin_listener_is_refused_before_the_parent() {
    let fake = FakeParent::start().await;
    let child = start(child_of(&[http_url(fake.addr)])).await;
    let url = format!("http://{}/stats", child.admin_addr());
    let got = fetch(child.addr(), get(&url)).await;
    assert_eq!(got.status, StatusCode::FORBIDDEN, "{}", got.text());
    assert_eq!(fake.connections(), 0, "{:?}", fake.heads());
    child.shutdown().await;
}

#[tokio::test]
async fn loopback_is_refused_before_the_parent_without_allow_loopback() {
    let origin = Origin::fixed("loopback").await;
    let fake = FakeParent::start().await;
    let mut config = child_of(&[http_url(fake.addr)]);
    config.forward.allow_loopback = false;
    config.forward.connect_ports = vec![origin.addr.port()];
    let child = start(config).await;
    let got = fetch(child.addr(), get(&origin.url("/lo"))).await;
    assert_eq!(got.status, StatusCode::FORBIDDEN, "{}", got.text());
    assert!(got.text().contains("allow_loopback"), "{}", got.text());
    // CONNECT too.
    let (_stream, head) = connect(child.addr(), origin.addr).await;
    assert_eq!(status_of(&head), 403, "{head}");
    assert_eq!(fake.connections(), 0, "{:?}", fake.heads());
    assert_eq!(origin.connections(), 0);
    child.shutdown().await;
}

// 7. The parent URL's checks, and no password in their messages.
#[test]
fn parent_urls_are_checked_and_errors_name_the_line() {
    for url in [
        "https://p:1",
        "http://p",
        "http://user@p:1",
        "p:1",
        "http://u:secret@p:1/x",
    ] {
        let text = format!("[forward]\nparent = [\"{url}\"]\n");
        let err = Config::from_toml(&text, "p.toml").expect_err(url);
        assert_eq!(err.line, Some(2), "{url}: {err}");
        let message = err.to_string();
        assert!(message.starts_with("p.toml:2:"), "{url}: {message}");
        assert!(message.contains("parent"), "{url}: {message}");
        assert!(!message.contains("secret"), "{url}: {message}");
        assert!(!format!("{err:?}").contains("secret"), "{url}: {err:?}");
    }
    // Valid ones, credentials kept but never shown.
    let config = Config::from_toml(
        "[forward]\nparent = [\"http://u:secret@p.example:3128\", \"http://10.0.0.1:8080/\"]\n",
        "p.toml",
    )
    .unwrap();
    let list = &config.forward.parent;
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].authority.as_str(), "p.example:3128");
    assert_eq!(list[0].credentials.as_deref(), Some("u:secret"));
    assert_eq!(list[1].authority.as_str(), "10.0.0.1:8080");
    assert_eq!(list[1].credentials, None);
    assert!(!format!("{:?}", config.forward).contains("secret"));
    assert!(!config.forward.never_direct);
}

#[tokio::test]
async fn https_targets_go_to_the_parent_in_absolute_form_too() {
    let fake = FakeParent::start().await;
    let child = start(child_of(&[http_url(fake.addr)])).await;
    let got = fetch(child.addr(), get("https://origin.invalid/secure")).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(got.text(), "from fake");
    let heads = fake.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(
        heads[0].starts_with("GET https://origin.invalid/secure HTTP/1.1\r\n"),
        "{}",
        heads[0]
    );
    child.shutdown().await;
}

#[tokio::test]
async fn a_request_body_survives_a_parent_that_is_down() {
    let origin = Origin::start(|seen| {
        http::Response::new(TestBody::full(Bytes::from(format!(
            "got {} bytes",
            seen.body.len()
        ))))
    })
    .await;
    let (_hold, down) = refusing_port();
    let child = start(child_of(&[http_url(down)])).await;
    let req = http::Request::post(origin.url("/down/post"))
        .body(http_body_util::Full::new(pattern(4096)))
        .unwrap();
    let got = fetch(child.addr(), req).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(got.text(), "got 4096 bytes");
    assert!(origin.last().body == pattern(4096));
    let admin = child.admin_addr();
    assert_eq!(
        parent_requests(admin, &down.to_string(), "failed").await,
        1.0
    );
    assert_eq!(parent_requests(admin, "direct", "answered").await, 1.0);
    child.shutdown().await;
}

#[tokio::test]
async fn connect_with_the_parent_down_goes_direct() {
    let (echo, echo_connections) = echo_server().await;
    let (_hold, down) = refusing_port();
    let mut config = child_of(&[http_url(down)]);
    config.forward.connect_ports = vec![echo.port()];
    let child = start(config).await;
    let (mut stream, head) = connect(child.addr(), echo).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    stream.write_all(b"direct").await.unwrap();
    let mut back = [0u8; 6];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut back))
        .await
        .expect("echo within patience")
        .unwrap();
    assert_eq!(&back, b"direct");
    assert_eq!(echo_connections.load(Ordering::SeqCst), 1);
    let admin = child.admin_addr();
    assert_eq!(
        parent_requests(admin, &down.to_string(), "failed").await,
        1.0
    );
    assert_eq!(parent_requests(admin, "direct", "answered").await, 1.0);
    drop(stream);
    child.shutdown().await;
}

// `Handler::open_via_parent` (src/proxy/tunnel.rs) counts
// `{parent="direct",outcome="answered"}` when it returns `Ok(None)`, before
// the direct connection is even tried, so a refused (502) or guard-refused
// direct CONNECT is counted as answered.
#[tokio::test]
async fn a_failed_direct_connect_after_the_parents_is_counted_as_failed() {
    let (_hold_parent, down) = refusing_port();
    let (_hold_target, target) = refusing_port();
    let mut config = child_of(&[http_url(down)]);
    config.forward.connect_ports = vec![target.port()];
    let child = start(config).await;
    let (_stream, head) = connect(child.addr(), target).await;
    assert_eq!(status_of(&head), 502, "{head}");
    let admin = child.admin_addr();
    assert_eq!(
        parent_requests(admin, &down.to_string(), "failed").await,
        1.0
    );
    assert_eq!(parent_requests(admin, "direct", "answered").await, 0.0);
    assert_eq!(parent_requests(admin, "direct", "failed").await, 1.0);
    child.shutdown().await;
}

#[tokio::test]
async fn a_chain_whose_hops_share_a_name_is_a_loop() {
    let origin = Origin::fixed("never").await;
    let parent = start(named("same")).await;
    let mut config = named("same");
    config.forward.parent = parents(&[http_url(parent.addr())]);
    let child = start(config).await;
    let got = fetch(child.addr(), get(&origin.url("/loop"))).await;
    assert_eq!(got.status, StatusCode::LOOP_DETECTED, "{}", got.text());
    assert_eq!(origin.count("/loop"), 0);
    child.shutdown().await;
    parent.shutdown().await;
}
