//! Configuration reload, the parts beyond routing: listeners are kept,
//! added and drained by address; cache settings, the access log and
//! connection limits change in place while the cache keeps its entries.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use support::config_file::*;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn respond(seen: &Seen) -> http::Response<TestBody> {
    let mut resp = if seen.target.starts_with("/big") {
        http::Response::new(TestBody::full(pattern(4096)))
    } else {
        text(StatusCode::OK, "origin")
    };
    resp.headers_mut()
        .insert("cache-control", "max-age=600".parse().unwrap());
    resp
}

fn site(path: &str) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let mut req = get(path);
    req.headers_mut()
        .insert("host", "site.test".parse().unwrap());
    req
}

/// A port nothing listens on now (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn head(listen: &[String]) -> String {
    let listen: Vec<String> = listen.iter().map(|l| format!("\"{l}\"")).collect();
    format!(
        "[server]\nlisten = [{}]\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\naccess = \"off\"\n",
        listen.join(", ")
    )
}

/// A request on a new connection that stays open (keep-alive); the stream
/// is returned after the response was read.
async fn keep_alive(addr: SocketAddr, path: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: site.test\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let resp = read_response(&mut stream).await;
    (stream, resp)
}

#[tokio::test]
async fn listeners_are_kept_added_and_drained_by_address() {
    let origin = Origin::start_delayed(respond, |seen| {
        if seen.target.starts_with("/slow") {
            Duration::from_millis(400)
        } else {
            Duration::ZERO
        }
    })
    .await;
    let file = ConfigFile::new("listeners");
    let route = format!(
        "[[route]]\nhost = \"*\"\nupstream = \"http://{}\"\n",
        origin.addr
    );
    let first = "127.0.0.1:0".to_string();
    file.write_whole(&format!("{}{route}", head(std::slice::from_ref(&first))));
    let proxy = viaduct::Proxy::start_from(&file.0).await.unwrap();
    let a = proxy.addr();
    let (mut idle_on_a, resp) = keep_alive(a, "/one").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");

    // Added: a second address. The first keeps its socket and connections.
    let port = free_port();
    let second = format!("127.0.0.1:{port}");
    file.write_whole(&format!("{}{route}", head(&[first, second.clone()])));
    let report = proxy.reload().unwrap();
    assert!(!report.contains("restart"), "{report}");
    let b: SocketAddr = second.parse().unwrap();
    assert_eq!(proxy.listening(false), vec![a, b]);
    assert_eq!(fetch(b, site("/via-b")).await.status, StatusCode::OK);
    idle_on_a
        .write_all(b"GET /two HTTP/1.1\r\nHost: site.test\r\n\r\n")
        .await
        .unwrap();
    let resp = read_response(&mut idle_on_a).await;
    assert!(
        resp.starts_with("HTTP/1.1 200"),
        "a kept listener's connection lives on: {resp}"
    );

    // Removed: the first address. A request in flight on it finishes, an
    // idle connection on it is closed, and it accepts nothing new.
    let slow = tokio::spawn(async move { fetch(a, site("/slow")).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    file.write_whole(&format!("{}{route}", head(&[second])));
    let report = proxy.reload().unwrap();
    assert!(!report.contains("restart"), "{report}");
    assert_eq!(proxy.listening(false), vec![b]);
    assert!(
        closed_by_peer(&mut idle_on_a).await,
        "an idle connection of a removed listener is closed"
    );
    let slow = slow.await.unwrap();
    assert_eq!(
        slow.status,
        StatusCode::OK,
        "the request in flight finished"
    );
    assert!(
        TcpStream::connect(a).await.is_err(),
        "a removed listener accepts nothing"
    );
    assert_eq!(fetch(b, site("/still-b")).await.status, StatusCode::OK);
    let stats = fetch(proxy.admin_addr(), get("/stats")).await.text();
    assert!(
        stats.contains(&format!("\"listening\":[\"{b}\"]")),
        "{stats}"
    );

    // An address that cannot be bound fails the reload and changes nothing.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = holder.local_addr().unwrap();
    file.write_whole(&format!(
        "{}{route}",
        head(&[b.to_string(), busy.to_string()])
    ));
    let err = proxy.reload().unwrap_err();
    assert!(err.contains(&format!("cannot listen on {busy}")), "{err}");
    assert_eq!(proxy.listening(false), vec![b]);
    proxy.shutdown().await;
}

#[tokio::test]
async fn cache_settings_and_the_access_log_change_in_place() {
    let origin = Origin::start(respond).await;
    let file = ConfigFile::new("knobs");
    let log = std::env::temp_dir().join(format!("viaduct-reload-log-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let route = format!(
        "[[route]]\nhost = \"*\"\nupstream = \"http://{}\"\n",
        origin.addr
    );
    let base = head(&["127.0.0.1:0".to_string()]);
    file.write_whole(&format!(
        "{base}[cache]\nmax_object_size = \"1KiB\"\n{route}"
    ));
    let proxy = viaduct::Proxy::start_from(&file.0).await.unwrap();
    let addr = proxy.addr();
    let small = fetch(addr, site("/small")).await;
    assert!(small.header("x-cache").is_none());
    // Over max_object_size: not stored.
    fetch(addr, site("/big")).await;
    fetch(addr, site("/big")).await;
    assert_eq!(origin.count("/big"), 2);

    let with_log = base.replace(
        "access = \"off\"",
        &format!("access = \"{}\"\nformat = \"json\"", log.display()),
    );
    file.write_whole(&format!(
        "{with_log}[cache]\nmax_object_size = \"64KiB\"\nx_cache = true\n{route}"
    ));
    let report = proxy.reload().unwrap();
    assert!(!report.contains("restart"), "{report}");

    let small = fetch(addr, site("/small")).await;
    assert!(
        small.header("cache-status").unwrap().contains("hit"),
        "the cache kept its entry"
    );
    assert_eq!(small.header("x-cache"), Some("HIT"));
    fetch(addr, site("/big")).await;
    let big = fetch(addr, site("/big")).await;
    assert_eq!(
        big.header("x-cache"),
        Some("HIT"),
        "now small enough to store"
    );
    assert_eq!(origin.count("/big"), 3);
    proxy.shutdown().await;
    let lines = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    assert_eq!(lines.lines().count(), 3, "{lines}");
    assert!(lines.lines().all(|l| l.starts_with('{')), "{lines}");
    assert!(lines.contains("/big"), "{lines}");
}
