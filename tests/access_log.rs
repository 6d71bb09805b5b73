//! The access log in each format: one line per request with the cache status,
//! upstream status and time, and bytes, for a miss and for a hit.

mod support;

use std::time::Duration;

use http::{Response, StatusCode};
use support::*;
use viaduct::config::AccessFormat;

/// Runs a miss then a hit (plus a local 404) through a proxy logging in
/// `format`, and returns the lines written.
async fn lines(format: AccessFormat, name: &str) -> (Vec<String>, Origin) {
    let origin = Origin::start(|_| {
        Response::builder()
            .header("cache-control", "max-age=600")
            .header("content-type", "text/plain")
            .body(TestBody::full("twelve bytes".into()))
            .unwrap()
    })
    .await;
    let dir = std::env::temp_dir().join(format!("viaduct-access-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("access.log");
    let _ = std::fs::remove_file(&path);
    let mut config = base_config();
    config.log.access = path.display().to_string();
    config.log.format = format;
    let proxy = start(config).await;

    let mut client = Client::connect(proxy.addr()).await;
    for _ in 0..2 {
        let mut req = get(&origin.url("/logged?q=1"));
        req.headers_mut()
            .insert("user-agent", "test-agent/1.0".parse().unwrap());
        req.headers_mut()
            .insert("referer", "http://ref.test/".parse().unwrap());
        assert_eq!(client.send(req).await.status, StatusCode::OK);
    }
    let mut req = get("/unrouted");
    req.headers_mut()
        .insert("host", "none.test".parse().unwrap());
    assert_eq!(client.send(req).await.status, StatusCode::NOT_FOUND);
    drop(client);
    proxy.shutdown().await;

    // The writer thread flushes when its queue drains; wait for all lines.
    let mut text = String::new();
    for _ in 0..400 {
        text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.lines().count() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    (text.lines().map(str::to_string).collect(), origin)
}

#[tokio::test]
async fn combined_format() {
    let (lines, origin) = lines(AccessFormat::Combined, "combined").await;
    assert_eq!(lines.len(), 3, "{lines:?}");
    let request = format!(
        "\"GET {} HTTP/1.1\" 200 12 \"http://ref.test/\" \"test-agent/1.0\" ",
        origin.url("/logged?q=1")
    );
    let miss = &lines[0];
    assert!(miss.starts_with("127.0.0.1 - - ["), "{miss}");
    assert!(miss.contains(&request), "{miss}");
    // duration, upstream status, upstream time, cache status
    let tail: Vec<&str> = miss.rsplit(' ').take(3).collect();
    assert_eq!(tail[0], "miss", "{miss}");
    assert!(tail[1].parse::<f64>().is_ok(), "upstream time: {miss}");
    assert_eq!(tail[2], "200", "{miss}");
    let hit = &lines[1];
    assert!(hit.contains(&request), "{hit}");
    assert!(
        hit.ends_with(" - - hit"),
        "no upstream status or time on a hit: {hit}"
    );
    assert!(
        lines[2].contains("\"GET /unrouted HTTP/1.1\" 404 "),
        "{}",
        lines[2]
    );
    assert!(lines[2].ends_with(" - - local"), "{}", lines[2]);
}

#[tokio::test]
async fn json_format() {
    let (lines, origin) = lines(AccessFormat::Json, "json").await;
    assert_eq!(lines.len(), 3, "{lines:?}");
    let parse = |line: &str| serde_json::from_str::<serde_json::Value>(line).unwrap();
    let (miss, hit) = (parse(&lines[0]), parse(&lines[1]));
    for (v, cache) in [(&miss, "miss"), (&hit, "hit")] {
        assert_eq!(v["cache"], cache);
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes"], 12);
        assert_eq!(v["method"], "GET");
        assert_eq!(v["url"], origin.url("/logged?q=1"));
        assert_eq!(v["client"], "127.0.0.1");
        assert_eq!(v["user_agent"], "test-agent/1.0");
        assert_eq!(v["mode"], "forward");
        assert!(v["duration_ms"].as_f64().is_some());
        assert!(v["cache_status"].as_str().unwrap().starts_with("viaduct; "));
    }
    assert_eq!(miss["upstream_status"], 200);
    assert!(miss["upstream_ms"].as_f64().is_some());
    assert_eq!(miss["upstream"], origin.addr.to_string());
    assert!(hit["upstream_status"].is_null());
    assert!(hit["upstream_ms"].is_null());
    assert_eq!(parse(&lines[2])["status"], 404);
}

#[tokio::test]
async fn squid_format() {
    let (lines, origin) = lines(AccessFormat::Squid, "squid").await;
    assert_eq!(lines.len(), 3, "{lines:?}");
    let fields = |line: &str| {
        line.split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let miss = fields(&lines[0]);
    // time elapsed client code/status bytes method URL - hierarchy type
    assert_eq!(miss.len(), 10, "{miss:?}");
    assert!(
        miss[0].contains('.') && miss[0].split('.').nth(1).unwrap().len() == 3,
        "{miss:?}"
    );
    assert!(miss[1].parse::<u64>().is_ok());
    assert_eq!(miss[2], "127.0.0.1");
    assert_eq!(miss[3], "TCP_MISS/200");
    assert_eq!(miss[4], "12");
    assert_eq!(miss[5], "GET");
    assert_eq!(miss[6], origin.url("/logged?q=1"));
    assert_eq!(miss[8], "HIER_DIRECT/127.0.0.1");
    assert_eq!(miss[9], "text/plain");
    let hit = fields(&lines[1]);
    assert_eq!(hit[3], "TCP_MEM_HIT/200");
    assert_eq!(hit[8], "HIER_NONE/-");
    assert_eq!(fields(&lines[2])[3], "NONE/404");
}
