//! Serving files from a route's `root` (and `[[redirect]]` rules) through
//! the proxy: the safe mapping under the document root, directories,
//! validators, conditional and range requests, precompressed siblings,
//! access control, and bad input. Each test writes its own directory.

mod support;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use viaduct::Running;

/// A fresh directory for one test, removed when the test ends.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("viaduct-files-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }

    /// Writes `bytes` at `rel`, creating the directories on the way.
    fn put(&self, rel: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const BASE: &str = "[server]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\naccess = \"off\"\n";

/// A proxy configured with `toml` after the test listeners.
async fn proxy(toml: &str) -> Running {
    let config = viaduct::Config::from_toml(&format!("{BASE}{toml}"), "files.toml").unwrap();
    start(config).await
}

/// A `[[route]]` serving `root` under `prefix`, with `extra` keys.
fn root_route(prefix: &str, root: &Path, extra: &str) -> String {
    format!(
        "[[route]]\nhost = \"*\"\npath_prefix = \"{prefix}\"\nroot = \"{}\"\n{extra}\n",
        root.display()
    )
}

/// A proxy serving `root` under `/s/`.
async fn serve(root: &Path, extra: &str) -> Running {
    proxy(&root_route("/s/", root, extra)).await
}

fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "files.test");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(Bytes::new())).unwrap()
}

async fn ask(p: &Running, method: &str, path: &str, headers: &[(&str, &str)]) -> Got {
    fetch(p.addr(), req(method, path, headers)).await
}

async fn at(p: &Running, path: &str) -> Got {
    ask(p, "GET", path, &[]).await
}

fn config_error(toml: &str) -> String {
    match viaduct::Config::from_toml(&format!("{BASE}{toml}"), "files.toml") {
        Ok(_) => panic!("accepted:\n{toml}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn a_route_has_upstream_or_root_and_redirects_have_redirect_statuses() {
    // BASE is 6 lines: the [[route]] header is line 7, its keys follow.
    let both = config_error(
        "[[route]]\nhost = \"*\"\nupstream = \"http://127.0.0.1:1\"\nroot = \"/tmp\"\n",
    );
    assert!(both.starts_with("files.toml:"), "{both}");
    let line: usize = both.split(':').nth(1).unwrap().parse().expect(&both);
    assert!((7..=10).contains(&line), "{both}");
    let neither = config_error("[[route]]\nhost = \"*\"\npath_prefix = \"/\"\n");
    let line: usize = neither.split(':').nth(1).unwrap().parse().expect(&neither);
    assert!((7..=9).contains(&line), "{neither}");
    assert!(config_error("[[route]]\nroot = \"relative/dir\"\n").contains("absolute"));
    assert!(config_error("[[route]]\nroot = \"/no/such/viaduct/dir\"\n").starts_with("files.toml:"));
    for status in [200, 304, 404, 300] {
        let e = config_error(&format!(
            "[[redirect]]\nfrom = \"/a\"\nto = \"/b\"\nstatus = {status}\n"
        ));
        assert!(e.starts_with("files.toml:") && e.contains("status"), "{e}");
    }
    for status in [301, 302, 303, 307, 308] {
        let text = format!("{BASE}[[redirect]]\nfrom = \"/a\"\nto = \"/b\"\nstatus = {status}\n");
        assert!(
            viaduct::Config::from_toml(&text, "files.toml").is_ok(),
            "{status}"
        );
    }
}

#[tokio::test]
async fn a_redirect_from_ending_in_a_non_ascii_character_is_an_error_not_a_panic() {
    // `from` is checked for a `*` before its last byte; a last character of
    // several bytes must not be cut in the middle.
    let text = format!("{BASE}[[redirect]]\nfrom = \"/café\"\nto = \"/cafe\"\nstatus = 301\n");
    let loaded =
        std::panic::catch_unwind(|| viaduct::Config::from_toml(&text, "files.toml").is_ok());
    assert!(
        loaded.is_ok(),
        "Config::from_toml panicked on from = \"/café\""
    );
}

#[tokio::test]
async fn files_get_their_type_validators_cache_control_cache_status_and_metrics() {
    let dir = Dir::new("types");
    dir.put("index.html", "<h1>home</h1>");
    dir.put("style.css", "body{}");
    dir.put("img.png", b"\x89PNG\r\n\x1a\n");
    dir.put("README", "plain");
    dir.put("app.wasm", b"\0asm");
    let p = serve(
        &dir.0,
        "cache_control = \"public, max-age=3600\"\ntypes = { \"wasm\" = \"application/wasm\" }",
    )
    .await;
    for (path, ty, body) in [
        (
            "/s/index.html",
            "text/html; charset=utf-8",
            &b"<h1>home</h1>"[..],
        ),
        ("/s/style.css", "text/css; charset=utf-8", b"body{}"),
        ("/s/img.png", "image/png", b"\x89PNG\r\n\x1a\n"),
        ("/s/README", "application/octet-stream", b"plain"),
        ("/s/app.wasm", "application/wasm", b"\0asm"),
    ] {
        let got = at(&p, path).await;
        assert_eq!(got.status, StatusCode::OK, "{path}");
        assert_eq!(&got.body[..], body, "{path}");
        assert_eq!(got.header("content-type"), Some(ty), "{path}");
        assert_eq!(got.header("cache-control"), Some("public, max-age=3600"));
        assert_eq!(got.header("accept-ranges"), Some("bytes"));
        let len = body.len().to_string();
        assert_eq!(got.header("content-length"), Some(len.as_str()));
        let etag = got.header("etag").expect("ETag");
        assert!(
            etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"'),
            "{etag}"
        );
        let modified = got.header("last-modified").expect("Last-Modified");
        assert!(httpdate::parse_http_date(modified).is_ok(), "{modified}");
        let status = got.header("cache-status").expect("Cache-Status");
        assert!(status.ends_with("; detail=file"), "{status}");
    }
    let admin = p.admin_addr();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while value(
        &scrape(admin).await,
        "viaduct_requests_total",
        &[("mode", "file")],
    ) < 5.0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "mode=\"file\" not counted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    p.shutdown().await;
}

#[tokio::test]
async fn head_has_the_get_head_without_a_body_and_other_methods_get_405() {
    let dir = Dir::new("head");
    dir.put("style.css", "body{color:red}");
    dir.put("d/x.txt", "x");
    let p = serve(&dir.0, "listing = true").await;
    let full = at(&p, "/s/style.css").await;
    let head = ask(&p, "HEAD", "/s/style.css", &[]).await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    for name in [
        "content-type",
        "content-length",
        "etag",
        "last-modified",
        "accept-ranges",
    ] {
        assert_eq!(head.header(name), full.header(name), "{name}");
    }
    assert_eq!(head.header("content-length"), Some("15"));
    let listing = ask(&p, "HEAD", "/s/d/", &[]).await;
    assert_eq!(listing.status, StatusCode::OK);
    assert!(listing.body.is_empty());
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        for path in ["/s/style.css", "/s/missing", "/s/d/"] {
            let got = ask(&p, method, path, &[]).await;
            assert_eq!(
                got.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            assert_eq!(got.header("allow"), Some("GET, HEAD"), "{method} {path}");
        }
    }
    p.shutdown().await;
}

#[tokio::test]
async fn conditional_requests_answer_304_and_412() {
    let dir = Dir::new("conditional");
    dir.put("page.html", "<p>v1</p>");
    let p = serve(&dir.0, "").await;
    let first = at(&p, "/s/page.html").await;
    let etag = first.header("etag").unwrap().to_string();
    let modified = first.header("last-modified").unwrap().to_string();
    let weak = format!("W/{etag}");
    let listed = format!("\"other\", {etag}");
    let long_ago = "Sun, 06 Nov 1994 08:49:37 GMT";
    let cases: &[(&[(&str, &str)], StatusCode)] = &[
        (&[("if-none-match", &etag)], StatusCode::NOT_MODIFIED),
        (&[("if-none-match", &weak)], StatusCode::NOT_MODIFIED),
        (&[("if-none-match", &listed)], StatusCode::NOT_MODIFIED),
        (&[("if-none-match", "*")], StatusCode::NOT_MODIFIED),
        (&[("if-none-match", "\"other\"")], StatusCode::OK),
        (
            &[("if-modified-since", &modified)],
            StatusCode::NOT_MODIFIED,
        ),
        (&[("if-modified-since", long_ago)], StatusCode::OK),
        // If-None-Match decides when both are sent (RFC 9110 §13.1.3).
        (
            &[
                ("if-none-match", "\"other\""),
                ("if-modified-since", &modified),
            ],
            StatusCode::OK,
        ),
        (
            &[("if-match", "\"other\"")],
            StatusCode::PRECONDITION_FAILED,
        ),
        (&[("if-match", &weak)], StatusCode::PRECONDITION_FAILED),
        (&[("if-match", &etag)], StatusCode::OK),
        (
            &[("if-unmodified-since", long_ago)],
            StatusCode::PRECONDITION_FAILED,
        ),
        (&[("if-unmodified-since", &modified)], StatusCode::OK),
    ];
    for (headers, status) in cases {
        let got = ask(&p, "GET", "/s/page.html", headers).await;
        assert_eq!(got.status, *status, "{headers:?}");
        match *status {
            StatusCode::OK => assert_eq!(&got.body[..], b"<p>v1</p>", "{headers:?}"),
            StatusCode::NOT_MODIFIED => {
                assert!(got.body.is_empty());
                assert_eq!(got.header("etag"), Some(etag.as_str()), "{headers:?}");
            }
            _ => assert!(!got.body.starts_with(b"<p>v1")),
        }
    }
    let head = ask(&p, "HEAD", "/s/page.html", &[("if-none-match", &etag)]).await;
    assert_eq!(head.status, StatusCode::NOT_MODIFIED);
    p.shutdown().await;
}

#[tokio::test]
async fn ranges_answer_206_or_416_and_if_range_decides() {
    let dir = Dir::new("ranges");
    dir.put("digits.txt", "0123456789abcdef");
    let p = serve(&dir.0, "").await;
    let etag = at(&p, "/s/digits.txt")
        .await
        .header("etag")
        .unwrap()
        .to_string();
    for (range, part, content_range) in [
        ("bytes=2-5", "2345", "bytes 2-5/16"),
        ("bytes=10-", "abcdef", "bytes 10-15/16"),
        ("bytes=-3", "def", "bytes 13-15/16"),
        ("bytes=14-99", "ef", "bytes 14-15/16"),
    ] {
        let got = ask(&p, "GET", "/s/digits.txt", &[("range", range)]).await;
        assert_eq!(got.status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(got.text(), part, "{range}");
        assert_eq!(got.header("content-range"), Some(content_range), "{range}");
        assert_eq!(
            got.header("content-length"),
            Some(part.len().to_string().as_str())
        );
    }
    let got = ask(&p, "GET", "/s/digits.txt", &[("range", "bytes=16-20")]).await;
    assert_eq!(got.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(got.header("content-range"), Some("bytes */16"));
    let same = [("range", "bytes=0-3"), ("if-range", etag.as_str())];
    let got = ask(&p, "GET", "/s/digits.txt", &same).await;
    assert_eq!(
        (got.status, got.text().as_str()),
        (StatusCode::PARTIAL_CONTENT, "0123")
    );
    let other = [("range", "bytes=0-3"), ("if-range", "\"not-the-tag\"")];
    let got = ask(&p, "GET", "/s/digits.txt", &other).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "0123456789abcdef");
    assert_eq!(got.header("content-range"), None);
    p.shutdown().await;
}

#[tokio::test]
async fn precompressed_siblings_follow_accept_encoding_with_vary() {
    let dir = Dir::new("precompressed");
    dir.put("style.css", "plain css");
    dir.put("style.css.br", "brotli bytes");
    dir.put("style.css.gz", "gzip bytes");
    dir.put("only.js", "plain js");
    dir.put("only.js.gz", "gzip js");
    dir.put("alone.txt", "alone");
    let p = serve(&dir.0, "").await;
    for (path, accept, body, coding) in [
        ("/s/style.css", "br", "brotli bytes", Some("br")),
        ("/s/style.css", "gzip, br", "brotli bytes", Some("br")),
        ("/s/style.css", "gzip", "gzip bytes", Some("gzip")),
        ("/s/style.css", "br;q=0, gzip", "gzip bytes", Some("gzip")),
        ("/s/style.css", "br;q=0, gzip;q=0", "plain css", None),
        ("/s/style.css", "identity", "plain css", None),
        ("/s/style.css", "", "plain css", None),
        ("/s/only.js", "br, gzip", "gzip js", Some("gzip")),
        ("/s/only.js", "br", "plain js", None),
    ] {
        let headers: &[(&str, &str)] = if accept.is_empty() {
            &[]
        } else {
            &[("accept-encoding", accept)]
        };
        let got = ask(&p, "GET", path, headers).await;
        assert_eq!(got.status, StatusCode::OK, "{path} {accept}");
        assert_eq!(got.text(), body, "{path} {accept}");
        assert_eq!(got.header("content-encoding"), coding, "{path} {accept}");
        assert_eq!(
            got.header("vary"),
            Some("Accept-Encoding"),
            "{path} {accept}"
        );
    }
    let css = ask(&p, "GET", "/s/style.css", &[("accept-encoding", "br")]).await;
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    let alone = ask(
        &p,
        "GET",
        "/s/alone.txt",
        &[("accept-encoding", "br, gzip")],
    )
    .await;
    assert_eq!(
        (alone.text().as_str(), alone.header("vary")),
        ("alone", None)
    );
    assert_eq!(alone.header("content-encoding"), None);
    p.shutdown().await;
}

#[tokio::test]
async fn a_large_file_streams_whole_and_byte_exact() {
    let dir = Dir::new("large");
    let bytes = pattern(3 << 20);
    dir.put("big.bin", &bytes);
    let p = serve(&dir.0, "").await;
    let got = at(&p, "/s/big.bin").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.header("content-length"), Some("3145728"));
    assert!(got.body == bytes, "the body differs from the file");
    let tail = ask(&p, "GET", "/s/big.bin", &[("range", "bytes=1000000-")]).await;
    assert_eq!(tail.status, StatusCode::PARTIAL_CONTENT);
    assert!(
        tail.body == bytes.slice(1_000_000..),
        "the range differs from the file"
    );
    p.shutdown().await;
}

#[tokio::test]
async fn directories_redirect_to_their_slash_then_serve_an_index_or_403() {
    let dir = Dir::new("dirs");
    dir.put("with/index.html", "the index");
    dir.put("custom/home.txt", "custom index");
    dir.put("custom/index.html", "not this one");
    dir.put("bare/file.txt", "a file");
    let mut toml = root_route("/s/", &dir.0, "");
    toml += &root_route("/c/", &dir.0, "index = [\"missing.html\", \"home.txt\"]");
    let p = proxy(&toml).await;
    let got = at(&p, "/s/with?a=1&b=2").await;
    assert_eq!(got.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(got.header("location"), Some("/s/with/?a=1&b=2"));
    assert_eq!(at(&p, "/s/with").await.header("location"), Some("/s/with/"));
    let got = at(&p, "/s/with/").await;
    assert_eq!(
        (got.status, got.text().as_str()),
        (StatusCode::OK, "the index")
    );
    assert_eq!(got.header("content-type"), Some("text/html; charset=utf-8"));
    let got = at(&p, "/c/custom/").await;
    assert_eq!(
        (got.status, got.text().as_str()),
        (StatusCode::OK, "custom index")
    );
    assert_eq!(at(&p, "/s/bare/").await.status, StatusCode::FORBIDDEN);
    assert_eq!(at(&p, "/s/").await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        at(&p, "/s/nothing-here").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        at(&p, "/s/nothing/deeper.txt").await.status,
        StatusCode::NOT_FOUND
    );
    // A file is not a directory: no slash added, nothing under it.
    assert_eq!(
        at(&p, "/s/bare/file.txt/").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        at(&p, "/s/bare/file.txt/x").await.status,
        StatusCode::NOT_FOUND
    );
    p.shutdown().await;
}

#[tokio::test]
async fn listings_are_html_or_json_and_leave_hidden_entries_out() {
    let dir = Dir::new("listing");
    dir.put("d/b.txt", "abc");
    dir.put("d/a <&>.txt", "x");
    dir.put("d/sub/inner.txt", "inner");
    dir.put("d/.hidden", "secret");
    let p = serve(&dir.0, "listing = true").await;
    let html = at(&p, "/s/d/").await;
    assert_eq!(html.status, StatusCode::OK);
    assert_eq!(
        html.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let page = html.text();
    assert!(page.contains("b.txt") && page.contains("sub/"), "{page}");
    assert!(
        page.contains("a &lt;&amp;&gt;.txt") && !page.contains("<&>"),
        "{page}"
    );
    assert!(!page.contains(".hidden"), "{page}");
    let json = ask(&p, "GET", "/s/d/", &[("accept", "application/json")]).await;
    assert_eq!(json.status, StatusCode::OK);
    assert_eq!(json.header("content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&json.body).unwrap();
    assert_eq!(v["path"], "/s/d/");
    let entries = v["entries"].as_array().unwrap();
    let names: Vec<&str> = entries
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["sub", "a <&>.txt", "b.txt"], "{v}");
    assert_eq!(entries[0]["type"], "directory");
    assert_eq!(entries[2]["type"], "file");
    assert_eq!(entries[2]["size"], 3);
    let when = entries[2]["modified"].as_str().unwrap();
    assert!(httpdate::parse_http_date(when).is_ok(), "{when}");
    p.shutdown().await;
}

#[tokio::test]
async fn the_path_is_normalised_then_decoded_exactly_once() {
    let inner = Dir::new("decode-inner");
    let outer = Dir::new("decode-outer");
    inner.put("a b.txt", "space");
    inner.put("a%41.txt", "percent");
    inner.put("aA.txt", "decoded twice");
    inner.put("é.txt", "utf-8");
    outer.put("x", "outer x");
    let mut toml = root_route("/s/", &inner.0, "");
    toml += &root_route("/", &outer.0, "");
    let p = proxy(&toml).await;
    for (path, body) in [
        ("/s/a%20b.txt", "space"),
        ("/s/a%2541.txt", "percent"),
        ("/s/%C3%A9.txt", "utf-8"),
        ("/s/../x", "outer x"),
        ("/s/./sub/../../x", "outer x"),
    ] {
        let got = at(&p, path).await;
        assert_eq!(
            (got.status, got.text().as_str()),
            (StatusCode::OK, body),
            "{path}"
        );
    }
    for path in [
        "/s/a%2Fb.txt",
        "/s/%2e%2e%2Fx",
        "/s/a%00b.txt",
        "/s/a%zz.txt",
    ] {
        assert_eq!(at(&p, path).await.status, StatusCode::BAD_REQUEST, "{path}");
    }
    p.shutdown().await;
}

#[tokio::test]
async fn hidden_segments_and_missing_files_are_not_found() {
    let dir = Dir::new("hidden");
    dir.put(".secret", "secret");
    dir.put(".git/config", "secret");
    dir.put("d/.env", "secret");
    dir.put("d/ok.txt", "ok");
    let p = serve(&dir.0, "listing = true").await;
    assert_eq!(at(&p, "/s/d/ok.txt").await.text(), "ok");
    for path in [
        "/s/.secret",
        "/s/.git/config",
        "/s/.git/",
        "/s/.git",
        "/s/d/.env",
        "/s/%2Esecret",
        "/s/%2egit/config",
        "/s/missing.txt",
    ] {
        let got = at(&p, path).await;
        assert_eq!(got.status, StatusCode::NOT_FOUND, "{path}");
        assert!(!got.text().contains("secret"), "{path}");
    }
    p.shutdown().await;
}

#[tokio::test]
async fn links_out_of_the_root_are_forbidden_and_links_inside_are_followed() {
    let dir = Dir::new("links");
    dir.put("outside.txt", "outside secret");
    dir.put("outside-dir/f.txt", "outside secret");
    dir.put("root/page.txt", "inside page");
    dir.put("root/app.js", "plain js");
    symlink(dir.path("outside.txt"), dir.path("root/out")).unwrap();
    symlink("../outside-dir", dir.path("root/outdir")).unwrap();
    symlink("page.txt", dir.path("root/in")).unwrap();
    symlink(dir.path("outside.txt"), dir.path("root/app.js.gz")).unwrap();
    // The root named through a link of its own is still that root.
    symlink(dir.path("root"), dir.path("alias")).unwrap();
    let p = serve(&dir.path("alias"), "").await;
    for path in ["/s/out", "/s/outdir/f.txt", "/s/outdir/"] {
        let got = at(&p, path).await;
        assert_eq!(got.status, StatusCode::FORBIDDEN, "{path}");
        assert!(
            got.text().contains("a link leads out of the document root"),
            "{path}"
        );
    }
    let got = at(&p, "/s/in").await;
    assert_eq!(
        (got.status, got.text().as_str()),
        (StatusCode::OK, "inside page")
    );
    let js = ask(&p, "GET", "/s/app.js", &[("accept-encoding", "gzip")]).await;
    assert_eq!(
        (js.status, js.text().as_str()),
        (StatusCode::OK, "plain js")
    );
    assert_eq!(js.header("content-encoding"), None);
    p.shutdown().await;
}

#[tokio::test]
async fn a_fifo_is_refused_without_blocking() {
    let dir = Dir::new("fifo");
    dir.put("ok.txt", "ok");
    let fifo = dir.path("pipe");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo");
    let p = serve(&dir.0, "").await;
    // `fetch` gives up after PATIENCE: a blocked open fails the test.
    for _ in 0..3 {
        let got = at(&p, "/s/pipe").await;
        assert_eq!(got.status, StatusCode::FORBIDDEN);
        assert!(got.text().contains("not a regular file"), "{}", got.text());
    }
    assert_eq!(at(&p, "/s/ok.txt").await.text(), "ok");
    p.shutdown().await;
}

#[tokio::test]
async fn an_unreadable_file_is_forbidden() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Dir::new("unreadable");
    let file = dir.put("locked.txt", "locked");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::File::open(&file).is_ok() {
        // Running as root: mode 000 denies nothing, so there is nothing to show.
        eprintln!("skipped: this user reads files with mode 000 (root)");
        return;
    }
    let p = serve(&dir.0, "").await;
    let got = at(&p, "/s/locked.txt").await;
    assert_eq!(got.status, StatusCode::FORBIDDEN);
    assert!(!got.text().contains("locked"));
    p.shutdown().await;
}

#[tokio::test]
async fn redirect_rules_apply_before_routing_and_keep_the_query() {
    let p = proxy(concat!(
        "[[redirect]]\nfrom = \"/old/*\"\nto = \"/new/*\"\nstatus = 301\n",
        "[[redirect]]\nhost = \"a.test\"\nfrom = \"/exact\"\nto = \"https://b.test/there\"\nstatus = 302\n",
        "[[redirect]]\nfrom = \"/see\"\nto = \"/other\"\nstatus = 303\n",
        "[[redirect]]\nfrom = \"/temp/*\"\nto = \"/elsewhere\"\nstatus = 307\n",
        "[[redirect]]\nfrom = \"/perm\"\nto = \"/moved\"\nstatus = 308\n",
    ))
    .await;
    let on = |host: &'static str, path: &str| {
        let mut r = req("GET", path, &[]);
        r.headers_mut()
            .insert("host", http::HeaderValue::from_static(host));
        r
    };
    for (host, path, status, location) in [
        ("files.test", "/old/a/b?x=1&y=2", 301, "/new/a/b?x=1&y=2"),
        ("files.test", "/old/", 301, "/new/"),
        ("a.test", "/exact", 302, "https://b.test/there"),
        ("a.test", "/exact?q", 302, "https://b.test/there?q"),
        ("files.test", "/see", 303, "/other"),
        ("files.test", "/temp/x/y?z", 307, "/elsewhere?z"),
        ("files.test", "/perm", 308, "/moved"),
    ] {
        let got = fetch(p.addr(), on(host, path)).await;
        assert_eq!(got.status.as_u16(), status, "{host}{path}");
        assert_eq!(got.header("location"), Some(location), "{host}{path}");
        let cache_status = got.header("cache-status").unwrap_or("");
        assert!(
            cache_status.ends_with("; detail=redirect"),
            "{cache_status}"
        );
    }
    // Exact rules match only their path, host rules only their host.
    for (host, path) in [
        ("a.test", "/exact/more"),
        ("a.test", "/exactly"),
        ("c.test", "/exact"),
        ("files.test", "/perm/x"),
        ("files.test", "/older"),
    ] {
        let got = fetch(p.addr(), on(host, path)).await;
        assert_eq!(got.header("location"), None, "{host}{path}");
        assert!(!got.status.is_redirection(), "{host}{path}: {}", got.status);
    }
    p.shutdown().await;
}

#[tokio::test]
async fn allow_and_basic_auth_admit_clients_before_any_file_is_looked_at() {
    use base64::Engine;
    let dir = Dir::new("access");
    dir.put("f.txt", "guarded");
    let hash = bcrypt::hash("pw", 4).unwrap();
    let mut toml = root_route("/far/", &dir.0, "allow = [\"10.0.0.0/8\"]");
    toml += &root_route("/near/", &dir.0, "allow = [\"127.0.0.0/8\"]");
    toml += &root_route(
        "/auth/",
        &dir.0,
        &format!("basic_auth = {{ realm = \"r\", users = {{ alice = \"{hash}\" }} }}"),
    );
    let p = proxy(&toml).await;
    for path in ["/far/f.txt", "/far/missing"] {
        let got = at(&p, path).await;
        assert_eq!(got.status, StatusCode::FORBIDDEN, "{path}");
        assert!(!got.text().contains("guarded"));
    }
    assert_eq!(at(&p, "/near/f.txt").await.text(), "guarded");
    let basic = |creds: &str| {
        let encoded = base64::engine::general_purpose::STANDARD.encode(creds);
        format!("Basic {encoded}")
    };
    let (wrong, right) = (basic("alice:nope"), basic("alice:pw"));
    for (path, headers) in [
        ("/auth/f.txt", vec![]),
        ("/auth/missing", vec![]),
        ("/auth/f.txt", vec![("authorization", wrong.as_str())]),
        ("/auth/f.txt", vec![("authorization", "Basic !!!")]),
    ] {
        let got = ask(&p, "GET", path, &headers).await;
        assert_eq!(got.status, StatusCode::UNAUTHORIZED, "{path} {headers:?}");
        let challenge = got.header("www-authenticate");
        assert_eq!(challenge, Some("Basic realm=\"r\", charset=\"UTF-8\""));
        assert!(!got.text().contains("guarded"));
    }
    let got = ask(&p, "GET", "/auth/f.txt", &[("authorization", &right)]).await;
    assert_eq!(
        (got.status, got.text().as_str()),
        (StatusCode::OK, "guarded")
    );
    p.shutdown().await;
}

#[tokio::test]
async fn a_huge_path_gets_a_4xx_and_the_proxy_keeps_serving() {
    let dir = Dir::new("huge");
    dir.put("ok.txt", "ok");
    let p = serve(&dir.0, "").await;
    let request = format!("GET /s/{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100_000));
    let reply = raw(p.addr(), request.as_bytes()).await;
    assert!(
        reply.starts_with("HTTP/1.1 4"),
        "{}",
        &reply[..reply.len().min(200)]
    );
    assert_eq!(at(&p, "/s/ok.txt").await.text(), "ok");
    p.shutdown().await;
}

#[tokio::test]
async fn a_file_truncated_while_it_streams_ends_the_response_short() {
    const SIZE: usize = 50 << 20;
    let dir = Dir::new("truncated");
    let file = dir.put("big.bin", vec![b'v'; SIZE]);
    let p = serve(&dir.0, "").await;
    let mut stream = tokio::net::TcpStream::connect(p.addr()).await.unwrap();
    let request = "GET /s/big.bin HTTP/1.1\r\nHost: files.test\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let head_end = loop {
        if let Some(i) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before the head");
        seen.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&seen[..head_end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains(&format!("content-length: {SIZE}\r\n")),
        "{head}"
    );
    let mut body = seen.len() - head_end;
    while body < 4096 {
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed early");
        body += n;
    }
    let handle = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    handle.set_len(1024).unwrap();
    let ended = tokio::time::timeout(PATIENCE, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => body += n,
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the connection stayed open after {body} bytes"
    );
    assert!(
        body < SIZE,
        "a complete-looking body of {body} bytes from a truncated file"
    );
    p.shutdown().await;
}
