//! Responses too large for memory (over `[cache] max_object_size`) go to
//! the disk tier as they stream: with a declared length from the start,
//! without one from the chunk that takes them past the limit, a sliceable
//! one whole (not in memory slices); a body cut short leaves nothing, and
//! one over the disk's own limit is counted and left out.

use super::*;

/// Memory keeps nothing over 1 MiB.
const MEMORY: &str = "max_object_size = \"1MiB\"";

/// `/bin/.../<n>` is `pattern(n)` with its length (from `origin()`);
/// `/chunked/.../<n>` is `pattern(n)` in 64 KiB chunks without one.
async fn large_origin() -> Origin {
    Origin::start(|seen| {
        let path = seen.target.as_str();
        let len: usize = path.rsplit('/').next().unwrap().parse().unwrap();
        let body = pattern(len);
        let body = if path.starts_with("/chunked/") {
            let chunks = (0..len).step_by(64 << 10);
            TestBody::chunked(
                chunks
                    .map(|a| body.slice(a..len.min(a + (64 << 10))))
                    .collect(),
            )
        } else {
            TestBody::full(body)
        };
        http::Response::builder()
            .header("cache-control", "max-age=3600")
            .header("etag", "\"v1\"")
            .body(body)
            .unwrap()
    })
    .await
}

fn len_of(path: &str) -> usize {
    path.rsplit('/').next().unwrap().parse().unwrap()
}

/// GET `path`: from the origin, whole, and said to be stored.
async fn stored_from_origin(proxy: SocketAddr, path: &str) {
    stored_from_origin_as(proxy, path, &pattern(len_of(path))).await;
}

/// The files left under `v1/tmp`.
fn temporary_files(cache: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(cache.join("v1/tmp"))
        .map(|dir| dir.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Waits until no temporary file is left (a spool given up removes its
/// file once its queued blocks are gone).
async fn no_temporary_files(cache: &Path) {
    let deadline = Instant::now() + WAIT;
    while !temporary_files(cache).is_empty() {
        assert!(
            Instant::now() < deadline,
            "left behind: {:?}",
            temporary_files(cache)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn objects_too_large_for_memory_are_kept_on_disk() {
    let _shared = PROCESS.read().await;
    let dir = Dir::new("large");
    let origin = large_origin().await;
    let proxy = node_ready(&origin, &dir.cache(), MEMORY, "").await;
    let admin = proxy.admin_addr();
    // Declared length over the limit; no length, past the limit in its
    // 17th chunk; exactly two blocks, with and without a length (without
    // one, the end comes after the last full block: a job of its own
    // commits it); two blocks and a byte.
    let paths = [
        "/bin/a/5000000",
        "/chunked/b/3000000",
        "/bin/c/2097152",
        "/chunked/e/2097152",
        "/chunked/d/2097153",
    ];
    for (n, path) in paths.iter().enumerate() {
        stored_from_origin(proxy.addr(), path).await;
        stored(admin, n + 1).await;
        disk_hit(proxy.addr(), path, &pattern(len_of(path))).await;
        assert_eq!(origin.count(path), 1, "{path}");
    }
    // Not copied into memory, however hot.
    disk_hit(proxy.addr(), paths[0], &pattern(5_000_000)).await;
    assert_eq!(
        metric(admin, "viaduct_disk_promotions_total", &[]).await,
        0.0
    );
    assert!(temporary_files(&dir.cache()).is_empty());
    assert!(proxy.shutdown().await);

    let proxy = node(&origin, &dir.cache(), MEMORY, "").await;
    walked(proxy.admin_addr()).await;
    for path in paths {
        disk_hit(proxy.addr(), path, &pattern(len_of(path))).await;
        // And a range across the first block boundary.
        let got = fetch(
            proxy.addr(),
            with(at(path), "range", "bytes=1048570-1048580"),
        )
        .await;
        assert_eq!(got.status, StatusCode::PARTIAL_CONTENT, "{path}");
        assert!(is_disk_hit(&got), "{path}: {}", status_of(&got));
        let want = pattern(len_of(path));
        assert!(
            got.body == want[1_048_570..want.len().min(1_048_581)],
            "{path}"
        );
        assert_eq!(origin.count(path), 1, "{path}");
    }
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn a_refetch_made_alone_replaces_the_record() {
    let _shared = PROCESS.read().await;
    let dir = Dir::new("large-alone");
    let origin = large_origin().await;
    let proxy = node_ready(&origin, &dir.cache(), MEMORY, "").await;
    let admin = proxy.admin_addr();
    let mut written = 0;
    for path in ["/bin/again/3000000", "/chunked/again/3000000"] {
        stored_from_origin(proxy.addr(), path).await;
        written += 1;
        stored(admin, written).await;
        // A response too large to share marks its URL "fetch alone" for
        // a while: the refetch after the purge streams outside a flight.
        let answer = purge(admin, &format!("url=http://site.test{path}")).await;
        assert_eq!(answer["purged"], 1, "{path}: {answer}");
        stored_from_origin(proxy.addr(), path).await;
        written += 1;
        stored(admin, written).await;
        disk_hit(proxy.addr(), path, &pattern(3_000_000)).await;
        assert_eq!(origin.count(path), 2, "{path}");
    }
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn a_sliceable_object_goes_to_disk_whole_not_into_memory_slices() {
    let _shared = PROCESS.read().await;
    let dir = Dir::new("large-sliced");
    let origin = ranged_origin().await;
    let proxy = node_ready(&origin, &dir.cache(), MEMORY, "").await;
    let path = "/r/3000000";
    stored_from_origin(proxy.addr(), path).await;
    stored(proxy.admin_addr(), 1).await;
    disk_hit(proxy.addr(), path, &pattern(3_000_000)).await;
    // A range of it is read from the disk, not fetched as a slice.
    let got = fetch(
        proxy.addr(),
        with(at(path), "range", "bytes=2000000-2000009"),
    )
    .await;
    assert_eq!(got.status, StatusCode::PARTIAL_CONTENT);
    assert!(is_disk_hit(&got), "{}", status_of(&got));
    assert!(got.body == pattern(3_000_000)[2_000_000..2_000_010]);
    assert_eq!(origin.count(path), 1);
    assert!(proxy.shutdown().await);

    // Without a disk tier, the same object is kept in slices.
    let origin = ranged_origin().await;
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[log]\naccess = \"off\"\n[cache]\n{MEMORY}\n\
         [[route]]\nhost = \"site.test\"\nupstream = \"http://{}\"\n",
        origin.addr
    );
    let proxy = start(viaduct::Config::from_toml(&text, "memory.toml").unwrap()).await;
    stored_from_origin(proxy.addr(), path).await;
    let got = fetch(proxy.addr(), at(path)).await;
    assert!(status_of(&got).contains("; hit"), "{}", status_of(&got));
    assert!(got.body == pattern(3_000_000));
    assert_eq!(origin.count(path), 1);
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn a_body_past_the_disk_limit_is_counted_and_left_out() {
    let _shared = PROCESS.read().await;
    let dir = Dir::new("large-over");
    let origin = large_origin().await;
    let disk = "max_object_size = \"2MiB\"";
    let proxy = node_ready(&origin, &dir.cache(), MEMORY, disk).await;
    let admin = proxy.admin_addr();
    // Without a length, found out while it streams; with one, before.
    for (n, path) in ["/chunked/over/3000000", "/bin/over/3000000"]
        .iter()
        .enumerate()
    {
        let got = fetch(proxy.addr(), at(path)).await;
        assert!(got.body == pattern(3_000_000), "{path}: another body");
        let too_large = &[("outcome", "too-large")];
        reaches(
            admin,
            "viaduct_disk_writes_total",
            too_large,
            n as f64 + 1.0,
        )
        .await;
        from_origin(proxy.addr(), path, &pattern(3_000_000)).await;
    }
    no_temporary_files(&dir.cache()).await;
    assert!(records(&dir.cache()).is_empty());
    assert_eq!(
        metric(admin, "viaduct_disk_writes_total", &[("outcome", "stored")]).await,
        0.0
    );
    assert!(proxy.shutdown().await);
}

/// An origin on a raw socket: its response to every request declares
/// `declared` bytes of `pattern` and sends `sent` of them, then closes
/// (`hang` false) or keeps the connection open without a word more.
async fn cutting_origin(declared: usize, sent: usize, hang: bool) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                if read_request_head(&mut stream).await.is_none() {
                    return;
                }
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncache-control: max-age=3600\r\ncontent-length: {declared}\r\n\r\n"
                );
                let _ = stream.write_all(reply.as_bytes()).await;
                let _ = stream.write_all(&pattern(declared)[..sent]).await;
                if hang {
                    pending::<()>().await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_body_cut_short_leaves_nothing_on_disk() {
    let _shared = PROCESS.read().await;
    let dir = Dir::new("large-cut");
    // The origin stops after 2.5 of 4 MB.
    let origin = cutting_origin(4_000_000, 2_500_000, false).await;
    let text = node_toml(origin, &dir.cache(), "127.0.0.1:0", MEMORY, "");
    let proxy = start(viaduct::Config::from_toml(&text, "disk.toml").unwrap()).await;
    walked(proxy.admin_addr()).await;
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    client
        .write_all(b"GET /cut HTTP/1.1\r\nhost: site.test\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = client.read_to_end(&mut got).await;
    assert!(got.len() < 4_000_000, "a short body passed as whole");
    no_temporary_files(&dir.cache()).await;
    assert!(records(&dir.cache()).is_empty());
    assert!(proxy.shutdown().await);

    // The client leaves after 1.5 MB of a body that keeps coming.
    let dir = Dir::new("large-left");
    let origin = cutting_origin(4_000_000, 3_000_000, true).await;
    let text = node_toml(origin, &dir.cache(), "127.0.0.1:0", MEMORY, "");
    let proxy = start(viaduct::Config::from_toml(&text, "disk.toml").unwrap()).await;
    walked(proxy.admin_addr()).await;
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    client
        .write_all(b"GET /left HTTP/1.1\r\nhost: site.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 64 << 10];
    let mut read = 0;
    while read < 1_500_000 {
        let n = client.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed after {read} bytes");
        read += n;
    }
    // A block was on its way to the disk.
    let deadline = Instant::now() + WAIT;
    while temporary_files(&dir.cache()).is_empty() {
        assert!(Instant::now() < deadline, "nothing was spooled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(client);
    no_temporary_files(&dir.cache()).await;
    assert!(records(&dir.cache()).is_empty());
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn a_replaced_record_is_never_read_through_a_file_kept_open() {
    let _shared = PROCESS.read().await;
    let dir = Dir::new("large-open");
    // Every fetch is a new version: its ETag and each byte of its body.
    let version = std::sync::Arc::new(std::sync::atomic::AtomicU8::new(0));
    let origin = Origin::start(move |_| {
        let v = version.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        http::Response::builder()
            .header("cache-control", "max-age=3600")
            .header("etag", format!("\"v{v}\""))
            .body(TestBody::full(Bytes::from(vec![b'0' + v; 4096])))
            .unwrap()
    })
    .await;
    // Over memory's limit: every hit is read from disk.
    let memory = "max_object_size = \"1KiB\"";
    let proxy = node_ready(&origin, &dir.cache(), memory, "").await;
    let admin = proxy.admin_addr();
    let body = |v: u8| vec![b'0' + v; 4096];
    stored_from_origin_as(proxy.addr(), "/o", &body(1)).await;
    stored(admin, 1).await;
    // The second and third hits read through the file kept open.
    for _ in 0..3 {
        disk_hit(proxy.addr(), "/o", &body(1)).await;
    }
    // Replaced by a refetch: renamed over the open file.
    let got = fetch(proxy.addr(), with(at("/o"), "cache-control", "no-cache")).await;
    assert!(got.body == body(2), "{}", status_of(&got));
    stored(admin, 2).await;
    disk_hit(proxy.addr(), "/o", &body(2)).await;
    disk_hit(proxy.addr(), "/o", &body(2)).await;
    // Purged, then fetched again.
    purge(admin, "url=http://site.test/o").await;
    stored_from_origin_as(proxy.addr(), "/o", &body(3)).await;
    stored(admin, 3).await;
    disk_hit(proxy.addr(), "/o", &body(3)).await;
    assert!(proxy.shutdown().await);
}

/// GET `path`: from the origin, with `body`, and said to be stored.
async fn stored_from_origin_as(proxy: SocketAddr, path: &str, body: &[u8]) {
    let got = fetch(proxy, at(path)).await;
    assert_eq!(got.status, StatusCode::OK, "{path}");
    let status = status_of(&got);
    assert!(
        status.contains("fwd=uri-miss") && status.contains("stored"),
        "{path}: {status}"
    );
    assert!(got.body == body, "{path}: another body");
}

#[tokio::test]
async fn a_stale_large_record_is_revalidated_and_its_body_kept() {
    let _shared = PROCESS.read().await;
    let dir = Dir::new("large-304");
    // Always stale (max-age=0), validated by ETag: a 304 while the
    // version holds, carrying the number of its answer; `version` bumps it.
    let version = std::sync::Arc::new(std::sync::atomic::AtomicU8::new(1));
    let answers = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let v = version.clone();
    let origin = Origin::start(move |seen| {
        let n = answers.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let v = v.load(std::sync::atomic::Ordering::SeqCst);
        let etag = format!("\"v{v}\"");
        let resp = http::Response::builder()
            .header("cache-control", "max-age=0")
            .header("etag", &etag)
            .header("x-answer", n.to_string());
        if seen
            .headers
            .get("if-none-match")
            .is_some_and(|m| m == etag.as_str())
        {
            return resp
                .status(StatusCode::NOT_MODIFIED)
                .body(TestBody::full(Bytes::new()))
                .unwrap();
        }
        let body = Bytes::from(vec![b'0' + v; 3_000_000]);
        resp.body(TestBody::full(body)).unwrap()
    })
    .await;
    let proxy = node_ready(&origin, &dir.cache(), MEMORY, "").await;
    let admin = proxy.admin_addr();
    let body = |v: u8| vec![b'0' + v; 3_000_000];
    stored_from_origin_as(proxy.addr(), "/s", &body(1)).await;
    stored(admin, 1).await;
    // Revalidated: the body from the file, the head from the 304.
    for n in 2..=3 {
        let got = fetch(proxy.addr(), at("/s")).await;
        assert_eq!(got.status, StatusCode::OK);
        let status = status_of(&got);
        assert!(
            status.contains("fwd=stale") && status.contains("fwd-status=304"),
            "{status}"
        );
        assert_eq!(got.header("x-answer"), Some(n.to_string().as_str()));
        assert!(got.body == body(1), "another body");
        assert_eq!(origin.last().headers["if-none-match"], "\"v1\"");
        // The refreshed head is written to a new record.
        stored(admin, n).await;
    }
    // A range of it, and a client's own conditional, answered the same way.
    let got = fetch(proxy.addr(), with(at("/s"), "range", "bytes=2999990-")).await;
    assert_eq!(got.status, StatusCode::PARTIAL_CONTENT);
    assert!(got.body == body(1)[2_999_990..]);
    let got = fetch(proxy.addr(), with(at("/s"), "if-none-match", "\"v1\"")).await;
    assert_eq!(got.status, StatusCode::NOT_MODIFIED);
    stored(admin, 5).await;
    assert!(proxy.shutdown().await);

    // After a restart the refreshed record is there, with its new head.
    let proxy = node(&origin, &dir.cache(), MEMORY, "").await;
    let admin = proxy.admin_addr();
    walked(admin).await;
    let got = fetch(proxy.addr(), at("/s")).await;
    assert!(
        status_of(&got).contains("fwd-status=304"),
        "{}",
        status_of(&got)
    );
    assert_eq!(got.header("x-answer"), Some("6"));
    assert!(got.body == body(1), "another body");
    // A new version replaces it.
    version.store(2, std::sync::atomic::Ordering::SeqCst);
    let got = fetch(proxy.addr(), at("/s")).await;
    let status = status_of(&got);
    assert!(
        status.contains("fwd-status=200") && status.contains("stored"),
        "{status}"
    );
    assert!(got.body == body(2), "another body");
    reaches(
        admin,
        "viaduct_disk_writes_total",
        &[("outcome", "stored")],
        2.0,
    )
    .await;
    let got = fetch(proxy.addr(), at("/s")).await;
    assert!(
        status_of(&got).contains("fwd-status=304"),
        "{}",
        status_of(&got)
    );
    assert!(got.body == body(2), "another body");
    assert!(proxy.shutdown().await);
    let seen = origin.seen().iter().filter(|s| s.target == "/s").count();
    assert_eq!(seen, 8, "one fetch, six 304s and one new version");
}

#[tokio::test]
async fn stale_extensions_apply_to_large_records() {
    let _shared = PROCESS.read().await;
    let dir = Dir::new("large-stale");
    // `/swr`: stale at once, served stale for a minute while revalidated;
    // `/sie` and `/must` fail with a 503 from their second request on,
    // `/sie` with a minute of stale-if-error, `/must` with must-revalidate
    // (kept on disk all the same: it has a validator).
    let origin = Origin::start(|seen| {
        let path = seen.target.as_str();
        let control = match path {
            "/swr" | "/new-swr" => "max-age=0, stale-while-revalidate=60",
            "/sie" => "max-age=0, stale-if-error=60",
            _ => "max-age=0, must-revalidate, stale-if-error=60",
        };
        let resp = http::Response::builder().header("cache-control", control);
        if seen.headers.contains_key("if-none-match") && path == "/new-swr" {
            let body = Bytes::from(vec![b'n'; 3_000_000]);
            return resp
                .header("etag", "\"n\"")
                .body(TestBody::full(body))
                .unwrap();
        }
        if seen.headers.contains_key("if-none-match") {
            let status = if path == "/swr" {
                StatusCode::NOT_MODIFIED
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            return resp
                .status(status)
                .header("etag", "\"e\"")
                .body(TestBody::full(Bytes::new()))
                .unwrap();
        }
        let resp = resp.header("etag", "\"e\"");
        resp.body(TestBody::full(pattern(3_000_000))).unwrap()
    })
    .await;
    let proxy = node_ready(&origin, &dir.cache(), MEMORY, "").await;
    let admin = proxy.admin_addr();
    for (n, path) in ["/swr", "/sie", "/must", "/new-swr"].iter().enumerate() {
        stored_from_origin_as(proxy.addr(), path, &pattern(3_000_000)).await;
        stored(admin, n + 1).await;
    }
    // Served stale at once; revalidated in the background (a 304, whose
    // refreshed record is written).
    let got = fetch(proxy.addr(), at("/swr")).await;
    let status = status_of(&got);
    assert!(
        status.contains("fwd=stale") && status.contains("detail=stale-while-revalidate"),
        "{status}"
    );
    assert!(got.body == pattern(3_000_000), "another body");
    stored(admin, 5).await;
    assert_eq!(origin.count("/swr"), 2);
    let background = metric(admin, "viaduct_cache_background_revalidations_total", &[]).await;
    assert_eq!(background, 1.0);
    // A new version found in the background is read into its record.
    let got = fetch(proxy.addr(), at("/new-swr")).await;
    assert!(got.body == pattern(3_000_000), "another body");
    stored(admin, 6).await;
    let got = fetch(proxy.addr(), at("/new-swr")).await;
    assert!(status_of(&got).contains("detail=stale-while-revalidate"));
    assert!(got.body == vec![b'n'; 3_000_000], "not the new version");
    // The origin fails: stale-if-error serves the record.
    let got = fetch(proxy.addr(), at("/sie")).await;
    assert_eq!(got.status, StatusCode::OK);
    let status = status_of(&got);
    assert!(
        status.contains("fwd-status=503") && status.contains("detail=stale-if-error"),
        "{status}"
    );
    assert!(got.body == pattern(3_000_000), "another body");
    assert_eq!(origin.count("/sie"), 2);
    // ... but never a response that must be revalidated: the 503 passes.
    let got = fetch(proxy.addr(), at("/must")).await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(origin.last().headers["if-none-match"], "\"e\"");
    assert!(proxy.shutdown().await);
}
