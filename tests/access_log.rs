//! The access log in each format: one line per request with the cache status,
//! upstream status and time, and bytes, for a miss and for a hit. Then the
//! buffering: a burst logs every request once on whole lines, a quiet proxy's
//! lines still appear, shutdown writes everything, and a stuck writer drops
//! (and counts) lines instead of blocking requests.

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Response, StatusCode};
use support::*;
use tokio::io::AsyncWriteExt;
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

/// A fresh path for a log (or FIFO) named `name` in this test's own directory.
fn log_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("viaduct-access-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

fn json_config(path: &std::path::Path) -> viaduct::Config {
    let mut config = base_config();
    config.log.access = path.display().to_string();
    config.log.format = AccessFormat::Json;
    config
}

/// `connections` client connections at once, each sending `each` requests for
/// `/{prefix}/{connection}/{n}` (answered locally with a 404).
async fn burst(proxy: SocketAddr, prefix: &str, connections: usize, each: usize, agent: &str) {
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let (prefix, agent) = (prefix.to_string(), agent.to_string());
            tokio::spawn(async move {
                let mut client = Client::connect(proxy).await;
                for n in 0..each {
                    let mut req = get(&format!("/{prefix}/{c}/{n}"));
                    req.headers_mut()
                        .insert("host", "none.test".parse().unwrap());
                    req.headers_mut()
                        .insert("user-agent", agent.parse().unwrap());
                    assert_eq!(client.send(req).await.status, StatusCode::NOT_FOUND);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("every request answered");
    }
}

/// Every line of the file, each parsed as JSON (a torn or interleaved line
/// fails). A last line without its newline is being written: left for later.
fn json_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text[..text.rfind('\n').map_or(0, |end| end + 1)]
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"))
        })
        .collect()
}

/// Polls the file until it holds at least `n` lines (or PATIENCE passes).
async fn wait_for_lines(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let lines = json_lines(path);
        if lines.len() >= n || tokio::time::Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The distinct `url`s among `lines` that start with `/{prefix}/`.
fn urls(lines: &[serde_json::Value], prefix: &str) -> HashSet<String> {
    lines
        .iter()
        .filter_map(|v| v["url"].as_str())
        .filter(|url| url.starts_with(&format!("/{prefix}/")))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_logs_every_request_exactly_once_on_whole_lines() {
    let path = log_path("burst.log");
    let proxy = start(json_config(&path)).await;
    burst(proxy.addr(), "burst", 50, 40, "burst-agent").await;
    let lines = wait_for_lines(&path, 2000).await;
    assert_eq!(lines.len(), 2000);
    assert_eq!(urls(&lines, "burst").len(), 2000);
    assert!(lines
        .iter()
        .all(|v| v["status"] == 404 && v["user_agent"] == "burst-agent"));
    proxy.shutdown().await;
    // Nothing is written twice by the shutdown flush either.
    assert_eq!(json_lines(&path).len(), 2000);
}

#[tokio::test]
async fn a_quiet_proxy_writes_its_lines_without_further_traffic() {
    let path = log_path("quiet.log");
    let proxy = start(json_config(&path)).await;
    burst(proxy.addr(), "quiet", 1, 1, "quiet-agent").await;
    // No more requests: the writer's periodic sweep must take the line.
    let lines = wait_for_lines(&path, 1).await;
    assert_eq!(urls(&lines, "quiet").len(), 1, "{lines:?}");
    proxy.shutdown().await;
    assert_eq!(json_lines(&path).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_writes_the_lines_of_every_finished_request() {
    let path = log_path("shutdown.log");
    let proxy = start(json_config(&path)).await;
    burst(proxy.addr(), "shutdown", 10, 30, "shutdown-agent").await;
    proxy.shutdown().await;
    // Read once, at once: shutdown returns only after the lines are written.
    let lines = json_lines(&path);
    assert_eq!(lines.len(), 300);
    assert_eq!(urls(&lines, "shutdown").len(), 300);
}

/// Shutdown gives up on a connection at once, so the proxy (and its log)
/// outlives `shutdown`: the lines are there because shutdown wrote them, not
/// because the log was dropped. Current-thread runtime: nothing else runs
/// between `shutdown` returning and the read.
#[tokio::test]
async fn shutdown_writes_the_finished_lines_while_a_request_is_still_open() {
    let origin = Origin::start_delayed(
        |_| text(StatusCode::OK, "late"),
        |seen| {
            if seen.target.starts_with("/slow") {
                Duration::from_secs(60)
            } else {
                Duration::ZERO
            }
        },
    )
    .await;
    let path = log_path("stop.log");
    let mut config = json_config(&path);
    config.server.shutdown_timeout = viaduct::config::Dur(Duration::ZERO);
    let proxy = start(config).await;
    let mut slow = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let head = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
        origin.url("/slow"),
        origin.addr
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    while origin.count("/slow") == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    burst(proxy.addr(), "stop", 10, 30, "stop-agent").await;
    assert!(!proxy.shutdown().await, "the slow request was still open");
    let lines = json_lines(&path);
    assert_eq!(urls(&lines, "stop").len(), 300);
    // Each once; the only other line can be the slow request's, cut off.
    let others: Vec<_> = lines
        .iter()
        .filter(|v| !v["url"].as_str().unwrap().starts_with("/stop/"))
        .collect();
    assert_eq!(lines.len(), 300 + others.len());
    assert!(
        others.len() <= 1 && others.iter().all(|v| v["complete"] == false),
        "{others:?}"
    );
    drop(slow);
}

/// The log is a FIFO that is open for reading but never read: the pipe fills,
/// then the writer's queue. Requests are still answered, and the lines that
/// could not be queued are counted as dropped.
#[cfg(unix)]
#[test]
fn a_writer_that_cannot_keep_up_drops_lines_instead_of_blocking_requests() {
    let fifo = log_path("access.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    // The proxy in its own runtime: if logging blocked its threads, the
    // clients (in another runtime) would time out and fail rather than hang.
    let proxy_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Opened for reading first, without blocking (O_NONBLOCK), so that the
    // proxy's open for writing finds a reader and does not wait.
    let reader = client_rt.block_on(async {
        tokio::net::unix::pipe::OpenOptions::new()
            .open_receiver(&fifo)
            .unwrap()
    });
    let mut config = base_config();
    config.log.access = fifo.display().to_string();
    let proxy = proxy_rt.block_on(start(config));
    let (addr, admin) = (proxy.addr(), proxy.admin_addr());

    // ~8 KiB lines: 960 of them are ~8 MB, far more than the pipe (64 KiB)
    // and the queue (64 batches of 32 KiB) hold.
    let agent = "a".repeat(8000);
    let (metrics, stats) = client_rt.block_on(async {
        tokio::time::timeout(PATIENCE, burst(addr, "drop", 12, 80, &agent))
            .await
            .expect("every request answered while the log is stuck");
        let metrics = fetch(admin, get(&format!("http://{admin}/metrics"))).await;
        let stats = fetch(admin, get(&format!("http://{admin}/stats"))).await;
        (metrics.text(), stats.text())
    });
    let dropped: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("viaduct_access_log_dropped_total "))
        .expect("the counter is exported")
        .trim()
        .parse()
        .unwrap();
    assert!(dropped > 0.0, "{metrics}");
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["access_log"]["dropped"].as_f64(), Some(dropped));

    // Closing the read end unblocks the writer (EPIPE), so shutdown is quick.
    drop(reader);
    proxy_rt.block_on(proxy.shutdown());
}
