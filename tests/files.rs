//! Serving files from a route's `root` (and `[[redirect]]` rules) through
//! the proxy: the safe mapping under the document root, directories,
//! validators, conditional and range requests, precompressed siblings,
//! access control, and bad input. Each test writes its own directory.

mod support;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use viaduct::Running;

/// A fresh directory for one test, removed when the test ends.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("viaduct-files-{pid}-{name}"));
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

    /// A directory holding the files of `spec`: `path=content; ...`.
    fn with(name: &str, spec: &str) -> Dir {
        let dir = Dir::new(name);
        for (path, content) in spec.split("; ").filter_map(|f| f.split_once('=')) {
            dir.put(path, content);
        }
        dir
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Six lines: a [[route]] or [[redirect]] after it starts on line 7.
const BASE: &str = "[server]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\naccess = \"off\"\n";

fn config(toml: &str) -> Result<viaduct::Config, String> {
    viaduct::Config::from_toml(&format!("{BASE}{toml}"), "files.toml").map_err(|e| e.to_string())
}

/// A proxy configured with `toml` after the test listeners.
async fn proxy(toml: &str) -> Running {
    start(config(toml).unwrap()).await
}

/// A `[[route]]` serving `root` under `prefix`, with `extra` keys.
fn root_route(prefix: &str, root: &Path, extra: &str) -> String {
    let root = root.display();
    format!("[[route]]\nhost = \"*\"\npath_prefix = \"{prefix}\"\nroot = \"{root}\"\n{extra}\n")
}

/// A proxy serving `root` under `/s/`.
async fn serve(root: &Path, extra: &str) -> Running {
    proxy(&root_route("/s/", root, extra)).await
}

fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(path);
    if !headers.iter().any(|(name, _)| *name == "host") {
        builder = builder.header("host", "files.test");
    }
    // An empty value sends no field: tables of cases can leave one out.
    for (name, value) in headers.iter().filter(|(_, v)| !v.is_empty()) {
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

async fn status(p: &Running, path: &str) -> u16 {
    at(p, path).await.status.as_u16()
}

/// Asserts the status and the body (as text) of `got`.
#[track_caller]
fn is(got: &Got, status: u16, body: &str, case: &str) {
    let got = (got.status.as_u16(), got.text());
    assert_eq!(got, (status, body.to_string()), "{case}");
}

/// The line an error names (`files.toml:LINE: ...`).
fn line_of(error: &str) -> usize {
    assert!(error.starts_with("files.toml:"), "{error}");
    let line = error.split(':').nth(1).and_then(|l| l.parse().ok());
    line.unwrap_or_else(|| panic!("no line: {error}"))
}

#[tokio::test]
async fn a_route_has_upstream_or_root_and_redirects_have_redirect_statuses() {
    let up = "upstream = \"http://127.0.0.1:1\"";
    let both = config(&format!("[[route]]\nhost = \"*\"\n{up}\nroot = \"/tmp\"\n")).unwrap_err();
    assert!((7..=10).contains(&line_of(&both)), "{both}");
    let neither = config("[[route]]\nhost = \"*\"\npath_prefix = \"/\"\n").unwrap_err();
    assert!((7..=9).contains(&line_of(&neither)), "{neither}");
    // The second route is the bad one: the line is its own.
    let second =
        format!("[[route]]\nhost = \"*\"\n{up}\n[[route]]\nhost = \"b\"\n{up}\nroot = \"/tmp\"\n");
    let e = config(&second).unwrap_err();
    assert!((10..=13).contains(&line_of(&e)), "{e}");
    for root in ["relative/dir", "/no/such/viaduct/dir"] {
        let e = config(&format!("[[route]]\nhost = \"*\"\nroot = \"{root}\"\n")).unwrap_err();
        assert!(e.contains("root") && line_of(&e) >= 7, "{e}");
    }
    let redirect =
        |status: u16| format!("[[redirect]]\nfrom = \"/a\"\nto = \"/b\"\nstatus = {status}\n");
    for bad in [200, 300, 304, 404] {
        let e = config(&redirect(bad)).unwrap_err();
        let line = line_of(&e);
        assert!(e.contains("status") && (7..=10).contains(&line), "{e}");
    }
    for good in [301, 302, 303, 307, 308] {
        assert!(config(&redirect(good)).is_ok(), "{good}");
    }
}

#[tokio::test]
async fn a_redirect_from_ending_in_a_non_ascii_character_is_checked_without_a_panic() {
    // `from` is searched for a `*` before its last byte: a last character
    // of several bytes must not be cut in the middle.
    let text = "[[redirect]]\nfrom = \"/café\"\nto = \"/cafe\"\nstatus = 301\n";
    let loaded = std::panic::catch_unwind(|| config(text).is_ok());
    assert!(loaded.is_ok(), "from_toml panicked on {text:?}");
}

#[tokio::test]
async fn files_get_their_type_validators_cache_control_cache_status_and_metrics() {
    let dir = Dir::new("types");
    let files: [(&str, &str, &[u8]); 5] = [
        ("index.html", "text/html; charset=utf-8", b"<h1>home</h1>"),
        ("style.css", "text/css; charset=utf-8", b"body{}"),
        ("img.png", "image/png", b"\x89PNG\r\n\x1a\n"),
        ("README", "application/octet-stream", b"plain"),
        ("app.wasm", "application/wasm", b"\0asm"),
    ];
    for (name, _, body) in files {
        dir.put(name, body);
    }
    let extra = "cache_control = \"public, max-age=3600\"\ntypes = { wasm = \"application/wasm\" }";
    let p = serve(&dir.0, extra).await;
    for (name, ty, body) in files {
        let got = at(&p, &format!("/s/{name}")).await;
        assert_eq!((got.status.as_u16(), &got.body[..]), (200, body), "{name}");
        assert_eq!(got.header("content-type"), Some(ty), "{name}");
        assert_eq!(got.header("cache-control"), Some("public, max-age=3600"));
        assert_eq!(got.header("accept-ranges"), Some("bytes"));
        let len = body.len().to_string();
        assert_eq!(got.header("content-length"), Some(len.as_str()));
        let etag = got.header("etag").expect("ETag");
        let quoted = etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"');
        assert!(quoted, "a strong ETag: {etag}");
        let modified = got.header("last-modified").expect("Last-Modified");
        assert!(httpdate::parse_http_date(modified).is_ok(), "{modified}");
        let cache_status = got.header("cache-status").expect("Cache-Status");
        assert!(cache_status.ends_with("; detail=file"), "{cache_status}");
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let (total, file) = ("viaduct_requests_total", [("mode", "file")]);
    while value(&scrape(p.admin_addr()).await, total, &file) < 5.0 {
        let waited = tokio::time::Instant::now() > deadline;
        assert!(!waited, "mode=\"file\" not counted");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn head_has_the_get_head_without_a_body_and_other_methods_get_405() {
    let dir = Dir::new("head");
    dir.put("style.css", "body{color:red}");
    dir.put("big.bin", pattern(200_000));
    dir.put("d/x.txt", "x");
    let p = serve(&dir.0, "listing = true").await;
    for path in ["/s/style.css", "/s/big.bin", "/s/d/"] {
        let full = at(&p, path).await;
        let head = ask(&p, "HEAD", path, &[]).await;
        assert_eq!(head.status, 200, "{path}");
        assert!(head.body.is_empty() && !full.body.is_empty(), "{path}");
        let names = "content-type content-length etag last-modified accept-ranges";
        for name in names.split(' ') {
            assert_eq!(head.header(name), full.header(name), "{path} {name}");
        }
    }
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        for path in ["/s/style.css", "/s/missing", "/s/d/"] {
            let got = ask(&p, method, path, &[]).await;
            assert_eq!(got.status, 405, "{method} {path}");
            assert_eq!(got.header("allow"), Some("GET, HEAD"), "{method} {path}");
        }
    }
}

#[tokio::test]
async fn conditional_requests_answer_304_and_412() {
    let dir = Dir::new("conditional");
    dir.put("page.html", "<p>v1</p>");
    // Above the size kept in memory: read from the disk every time.
    dir.put("big.bin", pattern(100_000));
    let p = serve(&dir.0, "").await;
    for path in ["/s/page.html", "/s/big.bin"] {
        let first = at(&p, path).await;
        let etag = first.header("etag").unwrap().to_string();
        let modified = first.header("last-modified").unwrap().to_string();
        let (weak, listed) = (format!("W/{etag}"), format!("\"other\", {etag}"));
        let long_ago = "Sun, 06 Nov 1994 08:49:37 GMT";
        let both = [("if-none-match", "\"x\""), ("if-modified-since", &modified)];
        let cases: &[(&[(&str, &str)], u16)] = &[
            (&[("if-none-match", &etag)], 304),
            (&[("if-none-match", &weak)], 304),
            (&[("if-none-match", &listed)], 304),
            (&[("if-none-match", "*")], 304),
            (&[("if-none-match", "\"other\"")], 200),
            (&[("if-modified-since", &modified)], 304),
            (&[("if-modified-since", long_ago)], 200),
            // If-None-Match decides when both are sent (RFC 9110 §13.1.3).
            (&both, 200),
            (&[("if-match", "\"other\"")], 412),
            (&[("if-match", &weak)], 412),
            (&[("if-match", &etag)], 200),
            (&[("if-unmodified-since", long_ago)], 412),
            (&[("if-unmodified-since", &modified)], 200),
        ];
        for (headers, want) in cases {
            let got = ask(&p, "GET", path, headers).await;
            assert_eq!(got.status, *want, "{path} {headers:?}");
            match want {
                200 => assert!(got.body == first.body, "{path} {headers:?}"),
                304 => {
                    assert!(got.body.is_empty(), "{path} {headers:?}");
                    let tag = got.header("etag");
                    assert_eq!(tag, Some(etag.as_str()), "{path} {headers:?}");
                }
                _ => assert!(got.body != first.body, "{path} {headers:?}"),
            }
        }
        let head = ask(&p, "HEAD", path, &[("if-none-match", &etag)]).await;
        assert_eq!(head.status, 304, "{path}");
    }
}

#[tokio::test]
async fn ranges_answer_206_or_416_and_if_range_decides() {
    let dir = Dir::new("ranges");
    let small = Bytes::from_static(b"0123456789abcdef");
    let big = pattern(100_000);
    dir.put("digits.txt", &small);
    dir.put("big.bin", &big);
    let p = serve(&dir.0, "").await;
    for (path, file) in [("/s/digits.txt", small), ("/s/big.bin", big)] {
        let len = file.len();
        let etag = at(&p, path).await.header("etag").unwrap().to_string();
        for (range, from, to) in [
            ("bytes=2-5".to_string(), 2, 5),
            ("bytes=10-".to_string(), 10, len - 1),
            ("bytes=-3".to_string(), len - 3, len - 1),
            (format!("bytes={}-{}", len - 2, len + 50), len - 2, len - 1),
        ] {
            let got = ask(&p, "GET", path, &[("range", &range)]).await;
            assert_eq!(got.status, 206, "{path} {range}");
            assert!(got.body == file.slice(from..=to), "{path} {range}");
            let content_range = format!("bytes {from}-{to}/{len}");
            assert_eq!(got.header("content-range"), Some(content_range.as_str()));
            let length = (to - from + 1).to_string();
            assert_eq!(got.header("content-length"), Some(length.as_str()));
        }
        let past = format!("bytes={len}-{}", len + 9);
        let got = ask(&p, "GET", path, &[("range", &past)]).await;
        assert_eq!(got.status, 416, "{path}");
        let star = format!("bytes */{len}");
        assert_eq!(got.header("content-range"), Some(star.as_str()), "{path}");
        let same = [("range", "bytes=0-3"), ("if-range", etag.as_str())];
        let got = ask(&p, "GET", path, &same).await;
        assert_eq!(got.status, 206, "{path}");
        assert!(got.body == file.slice(0..4), "{path}");
        let other = [("range", "bytes=0-3"), ("if-range", "\"not-the-tag\"")];
        let got = ask(&p, "GET", path, &other).await;
        assert_eq!(got.status, 200, "{path}");
        assert!(got.body == file, "{path}: not the whole file");
        assert_eq!(got.header("content-range"), None);
    }
}

#[tokio::test]
async fn precompressed_siblings_follow_accept_encoding_with_vary() {
    let files = "style.css=plain css; style.css.br=brotli bytes; style.css.gz=gzip bytes; \
        only.js=plain js; only.js.gz=gzip js; alone.txt=alone";
    let dir = Dir::with("precompressed", files);
    let p = serve(&dir.0, "").await;
    // Twice over: the second round is answered from the files kept in memory.
    for _ in 0..2 {
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
            let got = ask(&p, "GET", path, &[("accept-encoding", accept)]).await;
            let case = format!("{path} {accept:?}");
            is(&got, 200, body, &case);
            assert_eq!(got.header("content-encoding"), coding, "{case}");
            assert_eq!(got.header("vary"), Some("Accept-Encoding"), "{case}");
            let ty = got.header("content-type").unwrap();
            let plain = !ty.contains("gzip") && !ty.contains("brotli");
            assert!(plain, "{case}: {ty}");
        }
    }
    let both = [("accept-encoding", "br, gzip")];
    let alone = ask(&p, "GET", "/s/alone.txt", &both).await;
    is(&alone, 200, "alone", "no sibling");
    let coding = alone.header("content-encoding");
    assert_eq!((alone.header("vary"), coding), (None, None));
}

#[tokio::test]
async fn a_large_file_streams_whole_and_byte_exact() {
    let dir = Dir::new("large");
    let bytes = pattern(3 << 20);
    dir.put("big.bin", &bytes);
    let p = serve(&dir.0, "").await;
    let got = at(&p, "/s/big.bin").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-length"), Some("3145728"));
    assert!(got.body == bytes, "the body differs from the file");
    let tail = ask(&p, "GET", "/s/big.bin", &[("range", "bytes=1000000-")]).await;
    assert_eq!(tail.status, 206);
    let same = tail.body == bytes.slice(1_000_000..);
    assert!(same, "the range differs from the file");
}

#[tokio::test]
async fn directories_redirect_to_their_slash_then_serve_an_index_or_403() {
    let files = "with/index.html=the index; bare/file.txt=a file; \
        custom/home.txt=custom index; custom/index.html=not this one";
    let dir = Dir::with("dirs", files);
    let mut toml = root_route("/s/", &dir.0, "");
    toml += &root_route("/c/", &dir.0, "index = [\"missing.html\", \"home.txt\"]");
    let p = proxy(&toml).await;
    let got = at(&p, "/s/with?a=1&b=2").await;
    assert_eq!(got.status, 301);
    assert_eq!(got.header("location"), Some("/s/with/?a=1&b=2"));
    assert_eq!(at(&p, "/s/with").await.header("location"), Some("/s/with/"));
    let got = at(&p, "/s/with/").await;
    is(&got, 200, "the index", "index.html");
    assert_eq!(got.header("content-type"), Some("text/html; charset=utf-8"));
    let got = at(&p, "/c/custom/").await;
    is(&got, 200, "custom index", "index = [...]");
    assert_eq!(status(&p, "/s/bare/").await, 403);
    assert_eq!(status(&p, "/s/").await, 403);
    assert_eq!(status(&p, "/s/nothing-here").await, 404);
    assert_eq!(status(&p, "/s/nothing/deeper.txt").await, 404);
    assert_eq!(status(&p, "/s/bare/file.txt/x").await, 404);
}

#[tokio::test]
async fn a_file_named_with_a_trailing_slash_is_not_found() {
    // A slash says "directory" (its index or listing); a regular file is
    // not one (nginx and Apache answer 404: ENOTDIR). Served, `page.html/`
    // is a second URL for the page, where its relative links lead elsewhere.
    let dir = Dir::with(
        "file-slash",
        "page.html=<link rel=stylesheet href=\"x.css\">",
    );
    let p = serve(&dir.0, "").await;
    assert_eq!(status(&p, "/s/page.html").await, 200);
    let got = at(&p, "/s/page.html/").await;
    assert_eq!(got.status, 404, "{}", got.text());
}

#[tokio::test]
async fn listings_are_html_or_json_and_leave_hidden_entries_out() {
    let files = "d/b.txt=abc; d/a <&>.txt=x; d/sub/inner.txt=inner; d/.hidden=secret";
    let dir = Dir::with("listing", files);
    let p = serve(&dir.0, "listing = true").await;
    let html = at(&p, "/s/d/").await;
    assert_eq!(html.status, 200);
    let ty = html.header("content-type");
    assert_eq!(ty, Some("text/html; charset=utf-8"));
    let page = html.text();
    assert!(page.contains("b.txt") && page.contains("sub/"), "{page}");
    let escaped = page.contains("a &lt;&amp;&gt;.txt") && !page.contains("<&>");
    assert!(escaped, "{page}");
    assert!(!page.contains(".hidden"), "{page}");
    let json = ask(&p, "GET", "/s/d/", &[("accept", "application/json")]).await;
    assert_eq!(json.status, 200);
    assert_eq!(json.header("content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&json.body).unwrap();
    assert_eq!(v["path"], "/s/d/");
    let entries = v["entries"].as_array().unwrap();
    let names: Vec<_> = entries.iter().map(|e| e["name"].as_str()).collect();
    let want = ["sub", "a <&>.txt", "b.txt"].map(Some);
    assert_eq!(names, want, "{v}");
    assert_eq!(entries[0]["type"], "directory");
    assert_eq!(entries[2]["type"], "file");
    assert_eq!(entries[2]["size"], 3);
    let when = entries[2]["modified"].as_str().unwrap();
    assert!(httpdate::parse_http_date(when).is_ok(), "{when}");
}

#[tokio::test]
async fn the_path_is_normalised_then_decoded_exactly_once() {
    let files = "a b.txt=space; a%41.txt=percent; aA.txt=decoded twice; é.txt=utf-8";
    let inner = Dir::with("decode-inner", files);
    let outer = Dir::with("decode-outer", "x=outer x");
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
        is(&at(&p, path).await, 200, body, path);
    }
    for path in "/s/a%2Fb.txt /s/%2e%2e%2Fx /s/a%00b.txt /s/a%zz.txt".split(' ') {
        assert_eq!(status(&p, path).await, 400, "{path}");
    }
}

#[tokio::test]
async fn hidden_segments_and_missing_files_are_not_found() {
    let files = ".secret=secret; .git/config=secret; d/.env=secret; d/ok.txt=ok";
    let dir = Dir::with("hidden", files);
    let p = serve(&dir.0, "listing = true").await;
    assert_eq!(at(&p, "/s/d/ok.txt").await.text(), "ok");
    let hidden = "/s/.secret /s/.git/config /s/.git/ /s/.git /s/d/.env";
    let encoded = "/s/%2Esecret /s/%2egit/config /s/missing.txt /s/d/missing/";
    for path in hidden.split(' ').chain(encoded.split(' ')) {
        let got = at(&p, path).await;
        assert_eq!(got.status, 404, "{path}");
        assert!(!got.text().contains("secret"), "{path}");
    }
}

#[tokio::test]
async fn links_out_of_the_root_are_forbidden_and_links_inside_are_followed() {
    let files = "outside.txt=outside secret; outside-dir/f.txt=outside secret; \
        root/page.txt=inside page; root/app.js=plain js";
    let dir = Dir::with("links", files);
    symlink(dir.path("outside.txt"), dir.path("root/out")).unwrap();
    symlink("../outside-dir", dir.path("root/outdir")).unwrap();
    symlink("page.txt", dir.path("root/in")).unwrap();
    symlink(dir.path("outside.txt"), dir.path("root/app.js.gz")).unwrap();
    std::fs::create_dir(dir.path("root/d")).unwrap();
    symlink(dir.path("outside.txt"), dir.path("root/d/index.html")).unwrap();
    // The root named through a link of its own is still that root.
    symlink(dir.path("root"), dir.path("alias")).unwrap();
    let p = serve(&dir.path("alias"), "").await;
    for path in ["/s/out", "/s/outdir/f.txt", "/s/outdir/"] {
        let got = at(&p, path).await;
        assert_eq!(got.status, 403, "{path}");
        let text = got.text();
        let why = text.contains("a link leads out of the document root");
        assert!(why, "{path}: {text}");
    }
    is(&at(&p, "/s/in").await, 200, "inside page", "a link inside");
    // An index file or a precompressed sibling that leads out is not one.
    assert_eq!(status(&p, "/s/d/").await, 403);
    let js = ask(&p, "GET", "/s/app.js", &[("accept-encoding", "gzip")]).await;
    is(&js, 200, "plain js", "a sibling out of the root");
    assert_eq!(js.header("content-encoding"), None);
}

#[tokio::test]
async fn a_fifo_is_refused_without_blocking() {
    let dir = Dir::with("fifo", "ok.txt=ok");
    let fifo = dir.path("pipe");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo");
    let p = serve(&dir.0, "").await;
    // `fetch` gives up after PATIENCE: a blocked open fails the test.
    for _ in 0..3 {
        let got = at(&p, "/s/pipe").await;
        assert_eq!(got.status, 403);
        assert!(got.text().contains("not a regular file"), "{}", got.text());
    }
    assert_eq!(at(&p, "/s/ok.txt").await.text(), "ok");
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
    assert_eq!(got.status, 403);
    assert!(!got.text().contains("locked"));
}

#[tokio::test]
async fn redirect_rules_apply_before_routing_and_keep_the_query() {
    // `host`: the key's line, or nothing (any host).
    let rule = |host: &str, from: &str, to: &str, status: u16| {
        format!("[[redirect]]\n{host}from = \"{from}\"\nto = \"{to}\"\nstatus = {status}\n")
    };
    // No route at all: nothing but the rules answers.
    let mut toml = rule("", "/old/*", "/new/*", 301);
    toml += &rule("host = \"a.test\"\n", "/exact", "https://b.test/there", 302);
    toml += &rule("host = \"*\"\n", "/see", "/other", 303);
    toml += &rule("host = \"*\"\n", "/temp/*", "/elsewhere", 307);
    toml += &rule("", "/perm", "/moved", 308);
    let p = proxy(&toml).await;
    for (host, path, status, location) in [
        ("files.test", "/old/a/b?x=1&y=2", 301, "/new/a/b?x=1&y=2"),
        ("files.test", "/old/", 301, "/new/"),
        ("a.test", "/exact", 302, "https://b.test/there"),
        ("a.test", "/exact?q", 302, "https://b.test/there?q"),
        ("files.test", "/see", 303, "/other"),
        ("files.test", "/temp/x/y?z", 307, "/elsewhere?z"),
        ("files.test", "/perm", 308, "/moved"),
    ] {
        let got = ask(&p, "GET", path, &[("host", host)]).await;
        assert_eq!(got.status, status, "{host}{path}");
        assert_eq!(got.header("location"), Some(location), "{host}{path}");
        let cache_status = got.header("cache-status").unwrap_or("");
        let local = cache_status.ends_with("; detail=redirect");
        assert!(local, "{cache_status}");
    }
    // Exact rules match only their path, host rules only their host.
    for (host, path) in [
        ("a.test", "/exact/more"),
        ("a.test", "/exactly"),
        ("c.test", "/exact"),
        ("files.test", "/perm/x"),
        ("files.test", "/older"),
    ] {
        let got = ask(&p, "GET", path, &[("host", host)]).await;
        assert_eq!(got.header("location"), None, "{host}{path}");
        assert!(!got.status.is_redirection(), "{host}{path}: {}", got.status);
    }
}

#[tokio::test]
async fn allow_and_basic_auth_admit_clients_before_any_file_is_looked_at() {
    use base64::Engine;
    let dir = Dir::with("access", "f.txt=guarded");
    let hash = bcrypt::hash("pw", 4).unwrap();
    let users = format!("basic_auth = {{ realm = \"r\", users = {{ alice = \"{hash}\" }} }}");
    let mut toml = root_route("/far/", &dir.0, "allow = [\"10.0.0.0/8\"]");
    toml += &root_route("/near/", &dir.0, "allow = [\"127.0.0.0/8\"]");
    toml += &root_route("/auth/", &dir.0, &users);
    let p = proxy(&toml).await;
    for path in ["/far/f.txt", "/far/missing"] {
        let got = at(&p, path).await;
        assert_eq!(got.status, 403, "{path}");
        assert!(!got.text().contains("guarded"));
    }
    assert_eq!(at(&p, "/near/f.txt").await.text(), "guarded");
    let basic = |creds: &str| {
        let encoded = base64::engine::general_purpose::STANDARD.encode(creds);
        format!("Basic {encoded}")
    };
    let (wrong, right) = (basic("alice:nope"), basic("alice:pw"));
    let bob = basic("bob:pw");
    for (path, creds) in [
        ("/auth/f.txt", ""),
        ("/auth/missing", ""),
        ("/auth/f.txt", &wrong),
        ("/auth/f.txt", &bob),
        ("/auth/f.txt", "Basic !!!"),
    ] {
        let got = ask(&p, "GET", path, &[("authorization", creds)]).await;
        assert_eq!(got.status, 401, "{path} {creds:?}");
        let challenge = got.header("www-authenticate");
        assert_eq!(challenge, Some("Basic realm=\"r\", charset=\"UTF-8\""));
        assert!(!got.text().contains("guarded"));
    }
    let got = ask(&p, "GET", "/auth/f.txt", &[("authorization", &right)]).await;
    is(&got, 200, "guarded", "alice:pw");
}

#[tokio::test]
async fn a_huge_path_gets_a_4xx_and_the_proxy_keeps_serving() {
    let dir = Dir::with("huge", "ok.txt=ok");
    let p = serve(&dir.0, "").await;
    let request = format!("GET /s/{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100_000));
    let reply = raw(p.addr(), request.as_bytes()).await;
    let start = &reply[..reply.len().min(200)];
    assert!(reply.starts_with("HTTP/1.1 4"), "{start}");
    assert_eq!(at(&p, "/s/ok.txt").await.text(), "ok");
}

/// The next bytes into `buf`: 0 at EOF or on an error.
async fn more(stream: &mut tokio::net::TcpStream, buf: &mut [u8]) -> usize {
    let read = tokio::time::timeout(PATIENCE, stream.read(buf)).await;
    read.expect("bytes within patience").unwrap_or(0)
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
    let (mut first, mut buf, mut total) = (Vec::new(), vec![0u8; 64 * 1024], 0);
    while total < 32 * 1024 {
        let n = more(&mut stream, &mut buf).await;
        assert!(n > 0, "closed after {total} bytes, before the file was cut");
        first.extend_from_slice(&buf[..n.min(4096)]);
        total += n;
    }
    let head = String::from_utf8_lossy(&first).to_ascii_lowercase();
    let head_len = head.find("\r\n\r\n").expect("the head in the first bytes") + 4;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains(&format!("content-length: {SIZE}\r\n")));
    let handle = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    handle.set_len(1024).unwrap();
    // A connection left open after the cut fails in `more` after PATIENCE.
    loop {
        match more(&mut stream, &mut buf).await {
            0 => break,
            n => total += n,
        }
    }
    let body = total - head_len;
    assert!(body < SIZE, "{body} bytes: a whole body from a cut file");
}

#[tokio::test]
async fn a_prefix_redirect_never_sends_the_client_to_another_host() {
    // Browsers read `//host/...` and `/\host/...` in Location as another
    // host: the rest of the path must not turn a local target into one.
    let p = proxy("[[redirect]]\nfrom = \"/blog/*\"\nto = \"/*\"\nstatus = 301\n").await;
    let got = at(&p, "/blog/post?id=1").await;
    assert_eq!(got.header("location"), Some("/post?id=1"));
    for path in ["/blog//evil.example/x", "/blog/\\evil.example/x"] {
        let got = at(&p, path).await;
        let location = got.header("location").unwrap_or("");
        let off_site = location.starts_with("//") || location.starts_with("/\\");
        assert!(!off_site, "{path} -> {} {location}", got.status);
    }
}
