//! The access log: one combined-format line per request, with duration and
//! upstream status, written to the configured file.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::*;

#[tokio::test]
async fn one_line_per_request_with_status_bytes_duration_and_upstream_status() {
    let origin = Origin::fixed("twelve bytes").await;
    let dir = std::env::temp_dir().join(format!("viaduct-access-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("access.log");
    let _ = std::fs::remove_file(&path);
    let mut config = base_config();
    config.log.access = path.display().to_string();
    let proxy = start(config).await;

    let mut req = get(&origin.url("/logged?q=1"));
    req.headers_mut()
        .insert("user-agent", "test-agent/1.0".parse().unwrap());
    req.headers_mut()
        .insert("referer", "http://ref.test/".parse().unwrap());
    assert_eq!(fetch(proxy.addr(), req).await.status, StatusCode::OK);
    let mut req = get("/unrouted");
    req.headers_mut()
        .insert("host", "none.test".parse().unwrap());
    assert_eq!(fetch(proxy.addr(), req).await.status, StatusCode::NOT_FOUND);
    proxy.shutdown().await;

    // The writer thread flushes when its queue drains; wait for both lines.
    let mut text = String::new();
    for _ in 0..200 {
        text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.lines().count() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let first = lines[0];
    assert!(first.starts_with("127.0.0.1 - - ["), "{first}");
    assert!(
        first.contains(&format!(
            "\"GET {} HTTP/1.1\" 200 12 \"http://ref.test/\" \"test-agent/1.0\" ",
            origin.url("/logged?q=1")
        )),
        "{first}"
    );
    assert!(first.ends_with(" 200"), "upstream status last: {first}");
    let second = lines[1];
    assert!(
        second.contains("\"GET /unrouted HTTP/1.1\" 404 "),
        "{second}"
    );
    assert!(
        second.ends_with(" -"),
        "no upstream status when not forwarded: {second}"
    );
}
