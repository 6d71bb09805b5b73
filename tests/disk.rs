//! The disk tier (`[cache.disk]`) on real files: what was stored is served
//! from disk after a graceful restart and after a SIGKILL, a damaged record
//! is never served, a large record streams with bounded memory, a full or
//! read-only disk changes nothing for clients, purges reach the disk, and
//! bad settings are refused with their line.

mod support;
// Responses too large for memory.
#[path = "disk/large.rs"]
mod large;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use viaduct::Running;

/// How long background work (queued writes, the start-up walk) may take
/// before a test fails; never asserted on otherwise.
const WAIT: Duration = Duration::from_secs(10);

/// The streaming test measures this process's memory, where every proxy
/// of this file runs: it runs alone (write), the others together (read).
static PROCESS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// `pattern(n)` repeats every 251 bytes: byte `i` is `PERIOD[i % 251]`.
const PERIOD: usize = 251;

/// A fresh directory for one test, removed when the test ends.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("viaduct-disk-{pid}-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }

    /// The tier's directory (`[cache.disk] path`).
    fn cache(&self) -> PathBuf {
        self.path("cache")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every URL gets its own body, fresh for an hour, with an ETag, tagged
/// `t-<first path segment>`; `/vary/...` varies on Accept-Encoding and says
/// which coding it was for; `/bin/.../<n>` is `pattern(n)`.
async fn origin() -> Origin {
    Origin::start(|seen| {
        let path = seen.target.as_str();
        let segment = path.split('/').nth(1).unwrap_or("");
        let mut resp = http::Response::builder()
            .header("cache-control", "max-age=3600")
            .header("etag", "\"v1\"")
            .header("surrogate-key", format!("t-{segment}"));
        let body = match segment {
            "bin" => pattern(path.rsplit('/').next().unwrap().parse().unwrap()),
            "vary" => {
                let coding = seen
                    .headers
                    .get("accept-encoding")
                    .map_or("none", |v| v.to_str().unwrap());
                resp = resp.header("vary", "accept-encoding");
                Bytes::from(format!("body of {path} for {coding}"))
            }
            _ => Bytes::from(format!("body of {path}")),
        };
        resp.body(TestBody::full(body)).unwrap()
    })
    .await
}

/// A proxy's configuration: `site.test` on `origin`, the disk tier in
/// `cache`, the admin listener on `admin`, `memory` and `disk` added to
/// `[cache]` and `[cache.disk]`.
fn node_toml(origin: SocketAddr, cache: &Path, admin: &str, memory: &str, disk: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nshutdown_timeout = \"5s\"\n\
         [admin]\nlisten = \"{admin}\"\n[log]\naccess = \"off\"\n\
         [cache]\n{memory}\n[cache.disk]\npath = \"{}\"\n{disk}\n\
         [[route]]\nhost = \"site.test\"\nupstream = \"http://{origin}\"\n",
        cache.display()
    )
}

/// A proxy in this process on that configuration.
async fn node(origin: &Origin, cache: &Path, memory: &str, disk: &str) -> Running {
    let text = node_toml(origin.addr, cache, "127.0.0.1:0", memory, disk);
    start(viaduct::Config::from_toml(&text, "disk.toml").unwrap()).await
}

/// `node`, once the start-up walk is done: until then a write can lose
/// its temporary file to the walk's clean-up of `v1/tmp` (a race in
/// src/cache/disk/mod.rs `walk`, seen under load), so fills wait for it.
async fn node_ready(origin: &Origin, cache: &Path, memory: &str, disk: &str) -> Running {
    let proxy = node(origin, cache, memory, disk).await;
    walked(proxy.admin_addr()).await;
    proxy
}

fn status_of(got: &Got) -> String {
    got.header("cache-status").unwrap_or("").to_string()
}

fn is_disk_hit(got: &Got) -> bool {
    status_of(got).contains("; hit;") && status_of(got).contains("detail=disk")
}

/// GET `path` on `proxy`: a disk hit with `body`.
async fn disk_hit(proxy: SocketAddr, path: &str, body: &[u8]) {
    let got = fetch(proxy, at(path)).await;
    assert_eq!(got.status, StatusCode::OK, "{path}");
    assert!(is_disk_hit(&got), "{path}: {}", status_of(&got));
    assert!(got.body == body, "{path}: another body");
}

/// GET `path` on `proxy`: fetched from the origin again, with `body`.
async fn from_origin(proxy: SocketAddr, path: &str, body: &[u8]) {
    let got = fetch(proxy, at(path)).await;
    assert_eq!(got.status, StatusCode::OK, "{path}");
    assert!(
        status_of(&got).contains("fwd=uri-miss"),
        "{path}: {}",
        status_of(&got)
    );
    assert!(got.body == body, "{path}: another body");
}

fn body_of(path: &str) -> Vec<u8> {
    format!("body of {path}").into_bytes()
}

/// The sum of the samples of `name` with `labels` on `admin`.
async fn metric(admin: SocketAddr, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(&scrape(admin).await, name, labels)
}

/// Waits until `name` with `labels` is at least `n` (background work).
async fn reaches(admin: SocketAddr, name: &str, labels: &[(&str, &str)], n: f64) -> f64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let scrape = scrape(admin).await;
        let now = value(&scrape, name, labels);
        if now >= n {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{name}{labels:?} stayed at {now}, below {n}; {:?}",
            scrape
                .samples
                .iter()
                .filter(|s| s.metric.starts_with("viaduct_disk"))
                .map(|s| (&s.metric, &s.labels, &s.value))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn stored(admin: SocketAddr, n: usize) {
    let name = "viaduct_disk_writes_total";
    reaches(admin, name, &[("outcome", "stored")], n as f64).await;
}

async fn errors(admin: SocketAddr, kind: &str) -> f64 {
    metric(admin, "viaduct_disk_errors_total", &[("kind", kind)]).await
}

/// The `disk` part of the admin `/stats`.
async fn disk_stats(admin: SocketAddr) -> serde_json::Value {
    let got = fetch(admin, get(&format!("http://{admin}/stats"))).await;
    assert_eq!(got.status, StatusCode::OK);
    let stats: serde_json::Value = serde_json::from_str(&got.text()).unwrap();
    stats["disk"].clone()
}

/// Waits until the start-up walk has indexed every file (`/stats` and
/// the gauge say so).
async fn walked(admin: SocketAddr) {
    let deadline = Instant::now() + WAIT;
    loop {
        let disk = disk_stats(admin).await;
        let gauge = metric(admin, "viaduct_disk_recovering", &[]).await;
        if disk["recovering"] == false && gauge == 0.0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the walk never ended: {disk}, gauge {gauge}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An admin `POST /purge?<query>` on `admin`: its status and JSON answer.
async fn purge_answer(admin: SocketAddr, query: &str) -> (StatusCode, serde_json::Value) {
    let req = admin_request("POST", admin, &format!("/purge?{query}"), None);
    let got = fetch(admin, req).await;
    (got.status, serde_json::from_str(&got.text()).unwrap())
}

/// An admin `POST /purge?<query>` that must succeed: its JSON answer.
async fn purge(admin: SocketAddr, query: &str) -> serde_json::Value {
    let (status, answer) = purge_answer(admin, query).await;
    assert_eq!(status, StatusCode::OK, "{query}: {answer}");
    answer
}

/// The record files under `cache` (`v1/<hh>/<url hash>-<variant hash>`;
/// regular files only: opening a FIFO would wait).
fn records(cache: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    let Ok(dirs) = std::fs::read_dir(cache.join("v1")) else {
        return all;
    };
    for dir in dirs.flatten() {
        if dir.file_name() == "tmp" {
            continue;
        }
        for file in std::fs::read_dir(dir.path()).unwrap().flatten() {
            if file.file_type().is_ok_and(|t| t.is_file()) {
                all.push(file.path());
            }
        }
    }
    all
}

/// The cache key a record file holds (after "VDF1", crc, length: u16 +
/// bytes).
fn key_in(file: &Path) -> Option<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(file).ok()?;
    let mut fixed = [0u8; 14];
    f.read_exact(&mut fixed).ok()?;
    let mut key = vec![0u8; u16::from_be_bytes([fixed[12], fixed[13]]) as usize];
    f.read_exact(&mut key).ok()?;
    String::from_utf8(key).ok()
}

/// The record file of `http://site.test<path>`, if there is one (a key
/// is `<namespace> <scheme>://<authority><path>`).
fn record_of(cache: &Path, path: &str) -> Option<PathBuf> {
    let path_of = |key: &str| {
        let url = key.split_once(' ')?.1;
        let rest = url.split_once("://")?.1;
        Some(rest[rest.find('/')?..].to_string())
    };
    records(cache)
        .into_iter()
        .find(|f| key_in(f).and_then(|k| path_of(&k)).as_deref() == Some(path))
}

/// Drops `file` from the page cache (written back first), so that the
/// next read of it has to wait for the disk.
fn make_cold(file: &Path) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(file).unwrap();
    f.sync_all().unwrap();
    // SAFETY: a plain advice call on a descriptor open for the call.
    let done = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(done, 0, "posix_fadvise {}", file.display());
}

/// Reads the first page of `file` into the page cache, and only it (no
/// read-ahead): the header is there, the body is not.
fn warm_first_page(file: &Path) {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(file).unwrap();
    // SAFETY: a plain advice call on a descriptor open for the call.
    let done = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
    assert_eq!(done, 0);
    f.read_exact_at(&mut [0u8; 4096], 0).unwrap();
}

/// Inverts the byte `from_end` bytes before the end of `file` (the end of
/// a record is its body).
fn flip(file: &Path, from_end: usize) {
    let mut bytes = std::fs::read(file).unwrap();
    let at = bytes.len() - from_end;
    bytes[at] ^= 0xff;
    std::fs::write(file, bytes).unwrap();
}

/// A response read off a raw connection, its body compared with
/// `pattern` as it arrives and never held whole.
struct Streamed {
    status: u16,
    /// The head, lowercased.
    head: String,
    /// Content-Length.
    declared: u64,
    received: u64,
    /// Every byte received was the pattern's at its offset.
    exact: bool,
    /// The most this process held (VmRSS, KiB) seen while reading.
    peak_rss: u64,
}

/// Whether `bytes` are `pattern`'s bytes from offset `at` on.
fn is_pattern(bytes: &[u8], at: u64, period: &[u8]) -> bool {
    let mut pos = (at % PERIOD as u64) as usize;
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = (PERIOD - pos).min(rest.len());
        if rest[..n] != period[pos..pos + n] {
            return false;
        }
        rest = &rest[n..];
        pos = 0;
    }
    true
}

/// GET `path` (with the `extra` header lines) on a raw connection: the
/// body is checked against `pattern` from offset `from`, read until
/// Content-Length or until the connection ends, whichever comes first.
async fn stream_get(addr: SocketAddr, path: &str, extra: &str, from: u64) -> Streamed {
    let period = pattern(PERIOD);
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: site.test\r\n{extra}\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut start = Vec::new();
    let head_end = loop {
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .expect("a head within patience")
            .unwrap();
        assert!(n > 0, "{path}: closed before the head");
        start.extend_from_slice(&buf[..n]);
        if let Some(i) = start.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&start[..head_end]).to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    let declared = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut got = Streamed {
        status,
        head,
        declared,
        received: 0,
        exact: true,
        peak_rss: rss_kib("VmRSS"),
    };
    let mut sampled_at = 0;
    let mut take = |got: &mut Streamed, bytes: &[u8]| {
        got.exact &= is_pattern(bytes, from + got.received, &period);
        got.received += bytes.len() as u64;
        if got.received - sampled_at >= 1 << 20 {
            sampled_at = got.received;
            got.peak_rss = got.peak_rss.max(rss_kib("VmRSS"));
        }
    };
    take(&mut got, &start[head_end..]);
    while got.received < got.declared {
        let read = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .expect("the body does not stall");
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => take(&mut got, &buf[..n]),
        }
    }
    got.peak_rss = got.peak_rss.max(rss_kib("VmRSS"));
    got
}

/// A field of /proc/self/status in KiB (VmRSS: now, VmHWM: the peak).
fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// The viaduct binary, killed (SIGKILL) when dropped.
struct Binary {
    child: std::process::Child,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl Binary {
    /// Starts the binary on the configuration file `config`, whose admin
    /// listener is `admin`.
    async fn start(config: &Path, admin: SocketAddr) -> Binary {
        let (child, addr) = run_binary(config, "viaduct listening").await;
        let binary = Binary { child, addr, admin };
        // The admin listener is logged just after.
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(admin).await.is_err() {
            assert!(Instant::now() < deadline, "no admin listener on {admin}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        binary
    }

    /// SIGKILL: nothing is flushed, nothing is cleaned up.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address free a moment ago (for the binary's admin listener,
/// which this test must know in advance).
fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Writes the binary's configuration file in `dir`: its admin listener.
fn binary_config(dir: &Dir, origin: &Origin, memory: &str) -> (PathBuf, SocketAddr) {
    let admin = free_addr();
    let text = node_toml(origin.addr, &dir.cache(), &admin.to_string(), memory, "");
    let path = dir.path("proxy.toml");
    std::fs::write(&path, text).unwrap();
    (path, admin)
}

#[tokio::test]
async fn a_graceful_restart_serves_what_was_stored_from_disk() {
    let _shared = PROCESS.read().await;
    let dir = Dir::new("restart");
    let origin = origin().await;
    let proxy = node_ready(&origin, &dir.cache(), "", "").await;
    let bin = pattern(300_000);
    let gzip = || with(at("/vary/x"), "accept-encoding", "gzip");
    let identity = || with(at("/vary/x"), "accept-encoding", "identity");

    let first = fetch(proxy.addr(), at("/one")).await;
    assert!(
        status_of(&first).contains("fwd=uri-miss"),
        "{}",
        status_of(&first)
    );
    assert_eq!(first.body, body_of("/one"));
    assert_eq!(fetch(proxy.addr(), at("/bin/300000")).await.body, bin);
    assert_eq!(
        fetch(proxy.addr(), gzip()).await.text(),
        "body of /vary/x for gzip"
    );
    assert_eq!(
        fetch(proxy.addr(), identity()).await.text(),
        "body of /vary/x for identity"
    );
    for path in ["/etag", "/head"] {
        fetch(proxy.addr(), at(path)).await;
    }
    // Each is in memory now (kept, so offered to the disk): a plain hit.
    let hit = fetch(proxy.addr(), at("/one")).await;
    assert!(status_of(&hit).contains("; hit;"), "{}", status_of(&hit));
    assert!(!status_of(&hit).contains("detail=disk"));
    // Whatever is still queued is written before the proxy stops.
    assert!(proxy.shutdown().await);
    assert_eq!(records(&dir.cache()).len(), 6, "one file per variant");
    // Not in the page cache either: each read waits for the disk.
    records(&dir.cache()).iter().for_each(|f| make_cold(f));

    let proxy = node(&origin, &dir.cache(), "", "").await;
    // Whether or not the walk is done, a URL without Vary is found.
    disk_hit(proxy.addr(), "/one", b"body of /one").await;
    walked(proxy.admin_addr()).await;
    disk_hit(proxy.addr(), "/bin/300000", &bin).await;
    let got = fetch(proxy.addr(), gzip()).await;
    assert!(is_disk_hit(&got), "{}", status_of(&got));
    assert_eq!(got.text(), "body of /vary/x for gzip");
    let got = fetch(proxy.addr(), identity()).await;
    assert!(is_disk_hit(&got), "{}", status_of(&got));
    assert_eq!(got.text(), "body of /vary/x for identity");
    // Preconditions and HEAD are answered from disk too.
    let got = fetch(proxy.addr(), with(at("/etag"), "if-none-match", "\"v1\"")).await;
    assert_eq!(got.status, StatusCode::NOT_MODIFIED);
    assert!(is_disk_hit(&got), "{}", status_of(&got));
    let mut head = at("/head");
    *head.method_mut() = http::Method::HEAD;
    let got = fetch(proxy.addr(), head).await;
    assert_eq!(got.status, StatusCode::OK);
    assert!(is_disk_hit(&got), "{}", status_of(&got));
    assert_eq!(got.header("content-length"), Some("13"));
    assert!(got.body.is_empty());

    // The second disk hit copies it into memory; the third is a memory hit.
    disk_hit(proxy.addr(), "/bin/300000", &bin).await;
    let got = fetch(proxy.addr(), at("/bin/300000")).await;
    assert!(status_of(&got).contains("; hit;"), "{}", status_of(&got));
    assert!(!status_of(&got).contains("detail=disk"));
    assert_eq!(got.body, bin);

    for path in ["/one", "/bin/300000", "/etag", "/head"] {
        assert_eq!(origin.count(path), 1, "{path}");
    }
    assert_eq!(origin.count("/vary/x"), 2);
    let admin = proxy.admin_addr();
    assert_eq!(metric(admin, "viaduct_disk_hits_total", &[]).await, 7.0);
    assert_eq!(
        metric(admin, "viaduct_disk_promotions_total", &[]).await,
        1.0
    );
    assert!(metric(admin, "viaduct_disk_recovered_total", &[]).await >= 5.0);
    let disk = disk_stats(admin).await;
    assert_eq!(disk["hits"], 7, "{disk}");
    assert_eq!(disk["entries"], 5, "{disk}");
    assert_eq!(disk["recovering"], false, "{disk}");
    assert_eq!(disk["errors"]["damaged"], 0, "{disk}");
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn after_a_sigkill_whole_records_are_served_and_torn_ones_are_not() {
    let _shared = PROCESS.read().await;
    let dir = Dir::new("sigkill");
    let origin = origin().await;
    let cache = dir.cache();
    let (config, admin) = binary_config(&dir, &origin, "");
    let proxy = Binary::start(&config, admin).await;
    walked(proxy.admin).await;
    let paths: Vec<String> = (0..5).map(|i| format!("/bin/{i}/20000")).collect();
    let body = pattern(20_000);
    for path in &paths {
        from_origin(proxy.addr, path, &body).await;
    }
    stored(proxy.admin, paths.len()).await;
    proxy.kill();

    // One record cut to half (its header whole, its body short), as if
    // the disk lost the end of it.
    let torn = record_of(&cache, &paths[0]).unwrap();
    let len = std::fs::metadata(&torn).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&torn)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    // The start of another under a valid name of its own.
    let whole = record_of(&cache, &paths[1]).unwrap();
    let name = whole.file_name().unwrap().to_str().unwrap();
    let planted = whole.with_file_name(format!("{}00000000000000ff", &name[..17]));
    std::fs::write(&planted, &std::fs::read(&whole).unwrap()[..40]).unwrap();
    // A write the kill interrupted.
    let tmp = cache.join("v1/tmp/4242-7.tmp");
    std::fs::write(&tmp, b"VDF1 half a record").unwrap();

    let (config, admin) = binary_config(&dir, &origin, "");
    let proxy = Binary::start(&config, admin).await;
    walked(proxy.admin).await;
    assert!(!tmp.exists(), "temporary files are removed at start");
    assert!(!planted.exists(), "a damaged record is removed at start");
    assert_eq!(errors(proxy.admin, "damaged").await, 1.0);
    assert!(metric(proxy.admin, "viaduct_disk_recovered_total", &[]).await >= 4.0);
    for path in &paths[1..] {
        disk_hit(proxy.addr, path, &body).await;
        assert_eq!(origin.count(path), 1, "{path}");
    }
    // The torn one fails its check when read: fetched again, counted.
    from_origin(proxy.addr, &paths[0], &body).await;
    assert_eq!(origin.count(&paths[0]), 2);
    assert_eq!(errors(proxy.admin, "damaged").await, 2.0);
}

#[tokio::test]
async fn a_flipped_byte_is_never_served() {
    let _shared = PROCESS.read().await;
    let dir = Dir::new("flip");
    let origin = origin().await;
    let cache = dir.cache();
    let (small, large) = ("/bin/100000", "/bin/3145728");
    let proxy = node_ready(&origin, &cache, "", "").await;
    for path in [small, large] {
        fetch(proxy.addr(), at(path)).await;
    }
    stored(proxy.admin_addr(), 2).await;
    assert!(proxy.shutdown().await);
    // Near the end of each file: in the body (the large one's last block).
    flip(&record_of(&cache, small).unwrap(), 10);
    flip(&record_of(&cache, large).unwrap(), 10);

    // Memory is empty: the disk is asked first.
    let proxy = node(&origin, &cache, "", "").await;
    walked(proxy.admin_addr()).await;
    from_origin(proxy.addr(), small, &pattern(100_000)).await;
    assert_eq!(origin.count(small), 2);
    assert_eq!(errors(proxy.admin_addr(), "damaged").await, 1.0);
    // Replaced by the fresh copy.
    stored(proxy.admin_addr(), 1).await;
    let file = std::fs::read(record_of(&cache, small).unwrap()).unwrap();
    assert!(file.ends_with(&pattern(100_000)[99_000..]), "rewritten");

    // A large record streams; the bad block ends the response short.
    let got = stream_get(proxy.addr(), large, "", 0).await;
    assert_eq!(got.status, 200);
    assert!(got.head.contains("detail=disk"), "{}", got.head);
    assert_eq!(got.declared, 3 << 20);
    assert!(
        got.received < got.declared,
        "a damaged body was sent whole: {} bytes",
        got.received
    );
    assert!(got.exact, "a damaged byte was sent");
    assert_eq!(errors(proxy.admin_addr(), "damaged").await, 2.0);
    let deadline = Instant::now() + WAIT;
    while record_of(&cache, large).is_some() {
        assert!(Instant::now() < deadline, "the damaged record stayed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    from_origin(proxy.addr(), large, &pattern(3 << 20)).await;
    assert_eq!(origin.count(large), 2);
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn a_large_disk_hit_streams_in_bounded_memory() {
    // Alone in the process: its memory is what is measured.
    let _alone = PROCESS.write().await;
    const LEN: u64 = 50 << 20;
    let dir = Dir::new("stream");
    let big = pattern(LEN as usize);
    let origin = Origin::start(move |_| {
        http::Response::builder()
            .header("cache-control", "max-age=3600")
            .body(TestBody::full(big.clone()))
            .unwrap()
    })
    .await;
    let memory = "capacity = \"128MiB\"\nmax_object_size = \"64MiB\"";
    // Filled by the binary, so that none of this process's memory was
    // ever used for a 50 MiB body that a buffering read could reuse.
    let (config, admin) = binary_config(&dir, &origin, memory);
    let filler = Binary::start(&config, admin).await;
    walked(filler.admin).await;
    let got = stream_get(filler.addr, "/big", "", 0).await;
    assert_eq!((got.status, got.declared, got.received), (200, LEN, LEN));
    assert!(got.exact);
    stored(filler.admin, 1).await;
    filler.kill();

    let proxy = node(&origin, &dir.cache(), memory, "").await;
    walked(proxy.admin_addr()).await;
    // The peak from here on (VmHWM), and samples while reading otherwise.
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let before = rss_kib("VmRSS");
    let got = stream_get(proxy.addr(), "/big", "", 0).await;
    let peak = if reset {
        got.peak_rss.max(rss_kib("VmHWM"))
    } else {
        got.peak_rss
    };
    assert_eq!(got.status, 200);
    assert!(got.head.contains("detail=disk"), "{}", got.head);
    assert_eq!((got.declared, got.received), (LEN, LEN));
    assert!(got.exact, "the body differs from the origin's");
    let grew = peak.saturating_sub(before);
    assert!(
        grew < 24 << 10,
        "streaming 50 MiB from disk took {grew} KiB more (from {before} KiB)"
    );

    // A range in the middle, across a block boundary (20 MiB).
    let (from, to) = (20_000_000u64, 20_999_999u64);
    let range = format!("range: bytes={from}-{to}\r\n");
    let got = stream_get(proxy.addr(), "/big", &range, from).await;
    assert_eq!(got.status, 206);
    assert!(got.head.contains("detail=disk"), "{}", got.head);
    assert!(
        got.head
            .contains(&format!("content-range: bytes {from}-{to}/{LEN}")),
        "{}",
        got.head
    );
    assert_eq!((got.declared, got.received), (1_000_000, 1_000_000));
    assert!(got.exact, "the range differs from the origin's bytes");
    assert_eq!(origin.count("/big"), 1);
    assert!(proxy.shutdown().await);
}

/// A tmpfs mounted for one test, unmounted when dropped (even when the
/// test fails).
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// None (and a message) where mounting is not allowed (not root).
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let done = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        if !done {
            eprintln!(
                "SKIPPED: could not mount a tmpfs at {} (this test needs root, as in CI)",
                at.display()
            );
            return None;
        }
        Some(Tmpfs(at.to_path_buf()))
    }

    fn read_only(&self) {
        let done = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(done.success(), "remount read-only");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

#[tokio::test]
async fn a_full_disk_changes_nothing_for_clients() {
    let _shared = PROCESS.read().await;
    let dir = Dir::new("full");
    let Some(_tmpfs) = Tmpfs::mount(&dir.cache(), "1m") else {
        return;
    };
    let origin = origin().await;
    let proxy = node_ready(&origin, &dir.cache(), "", "").await;
    let body = pattern(200_000);
    // 1.6 MB for a 1 MiB disk.
    for i in 0..8 {
        let path = format!("/bin/{i}/200000");
        from_origin(proxy.addr(), &path, &body).await;
        let hit = fetch(proxy.addr(), at(&path)).await;
        assert!(status_of(&hit).contains("; hit;"), "{}", status_of(&hit));
        assert_eq!(hit.body, body);
    }
    let admin = proxy.admin_addr();
    reaches(admin, "viaduct_disk_errors_total", &[("kind", "full")], 1.0).await;
    let failed = &[("outcome", "failed")];
    assert!(metric(admin, "viaduct_disk_writes_total", failed).await >= 1.0);
    assert!(metric(admin, "viaduct_disk_writes_total", &[("outcome", "stored")]).await >= 1.0);
    let disk = disk_stats(admin).await;
    assert!(disk["errors"]["full"].as_u64() >= Some(1), "{disk}");
    // A failed write leaves no temporary file behind.
    let tmp = std::fs::read_dir(dir.cache().join("v1/tmp")).unwrap();
    assert_eq!(tmp.count(), 0);
    // And the proxy goes on.
    from_origin(proxy.addr(), "/after", b"body of /after").await;
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn a_read_only_disk_is_read_and_not_written() {
    let _shared = PROCESS.read().await;
    let dir = Dir::new("readonly");
    let Some(tmpfs) = Tmpfs::mount(&dir.cache(), "4m") else {
        return;
    };
    let origin = origin().await;
    let body = pattern(20_000);
    let paths: Vec<String> = (0..3).map(|i| format!("/bin/{i}/20000")).collect();
    let proxy = node_ready(&origin, &dir.cache(), "", "").await;
    for path in &paths {
        from_origin(proxy.addr(), path, &body).await;
    }
    stored(proxy.admin_addr(), paths.len()).await;
    assert!(proxy.shutdown().await);
    tmpfs.read_only();

    let proxy = node(&origin, &dir.cache(), "", "").await;
    let admin = proxy.admin_addr();
    walked(admin).await;
    for path in &paths {
        disk_hit(proxy.addr(), path, &body).await;
        assert_eq!(origin.count(path), 1, "{path}");
    }
    from_origin(proxy.addr(), "/bin/new/20000", &body).await;
    let hit = fetch(proxy.addr(), at("/bin/new/20000")).await;
    assert!(status_of(&hit).contains("; hit;"), "{}", status_of(&hit));
    reaches(
        admin,
        "viaduct_disk_errors_total",
        &[("kind", "readonly")],
        1.0,
    )
    .await;
    let failed = &[("outcome", "failed")];
    assert_eq!(
        metric(admin, "viaduct_disk_writes_total", failed).await,
        1.0
    );
    assert!(record_of(&dir.cache(), "/bin/new/20000").is_none());
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn purges_and_unsafe_methods_reach_the_disk() {
    let _shared = PROCESS.read().await;
    let dir = Dir::new("purge");
    let origin = origin().await;
    let cache = dir.cache();
    let purged = [
        "/mem/url",
        "/p/url",
        "/soft/x",
        "/pre/a",
        "/pre/b",
        "/tagged/x",
        "/inv",
    ];
    let kept = ["/keep/1", "/keep/2", "/prefix"];
    let proxy = node_ready(&origin, &cache, "", "").await;
    for path in purged.iter().chain(&kept) {
        from_origin(proxy.addr(), path, &body_of(path)).await;
    }
    stored(proxy.admin_addr(), purged.len() + kept.len()).await;
    // In memory and on disk: a purge removes both.
    let answer = purge(proxy.admin_addr(), "url=http://site.test/mem/url").await;
    assert_eq!(answer["purged"], 1, "{answer}");
    assert!(record_of(&cache, "/mem/url").is_none());
    assert!(proxy.shutdown().await);

    // Only on disk now (memory starts empty).
    let proxy = node(&origin, &cache, "", "").await;
    let admin = proxy.admin_addr();
    walked(admin).await;
    let answer = purge(admin, "url=http://site.test/p/url").await;
    assert_eq!(answer["purged"], 1, "{answer}");
    // A soft purge cannot keep the disk copy: it would be served fresh.
    let answer = purge(admin, "url=http://site.test/soft/x&soft=1").await;
    assert_eq!(answer["purged"], 1, "{answer}");
    let answer = purge(admin, "prefix=http://site.test/pre/").await;
    assert_eq!(answer["purged"], 2, "{answer}");
    let answer = purge(admin, "tag=t-tagged").await;
    assert_eq!(answer["purged"], 1, "{answer}");
    // RFC 9111 §4.4: an unsafe method invalidates the stored response.
    let mut post = at("/inv");
    *post.method_mut() = http::Method::POST;
    assert_eq!(fetch(proxy.addr(), post).await.status, StatusCode::OK);
    for path in purged {
        assert!(record_of(&cache, path).is_none(), "{path} left on disk");
    }
    assert!(proxy.shutdown().await);

    let proxy = node(&origin, &cache, "", "").await;
    walked(proxy.admin_addr()).await;
    for path in kept {
        disk_hit(proxy.addr(), path, &body_of(path)).await;
        assert_eq!(origin.count(path), 1, "{path}");
    }
    for path in purged {
        from_origin(proxy.addr(), path, &body_of(path)).await;
    }
    for path in purged.iter().filter(|p| **p != "/inv") {
        assert_eq!(origin.count(path), 2, "{path}");
    }
    assert_eq!(origin.count("/inv"), 3, "GET, POST, GET again");
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn a_directory_that_cannot_be_made_leaves_the_tier_out() {
    let _shared = PROCESS.read().await;
    let dir = Dir::new("nodir");
    let file = dir.path("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let origin = origin().await;
    let proxy = node(&origin, &file.join("cache"), "", "").await;
    from_origin(proxy.addr(), "/x", b"body of /x").await;
    let hit = fetch(proxy.addr(), at("/x")).await;
    assert!(status_of(&hit).contains("; hit;"), "{}", status_of(&hit));
    assert_eq!(
        disk_stats(proxy.admin_addr()).await,
        serde_json::Value::Null
    );
    assert!(proxy.shutdown().await);
}

#[test]
fn disk_settings_are_checked_with_their_line() {
    let bad = [
        ("path = \"relative/dir\"", "must be absolute", 4),
        (
            "path = \"/var/cache/v\"\ncapacity = \"1MiB\"\nmax_object_size = \"2MiB\"",
            "larger than capacity",
            6,
        ),
        (
            "path = \"/var/cache/v\"\ncapacity = \"0\"",
            "more than 0",
            5,
        ),
        ("path = \"/var/cache/v\"\nsize = \"1GiB\"", "size", 5),
    ];
    for (body, expect, line) in bad {
        let text = format!("[server]\nlisten = [\"127.0.0.1:0\"]\n[cache.disk]\n{body}\n");
        let Err(err) = viaduct::Config::from_toml(&text, "p.toml") else {
            panic!("{body}: accepted");
        };
        let err = err.to_string();
        assert!(err.contains(expect), "{body}: {err}");
        assert!(err.starts_with(&format!("p.toml:{line}:")), "{body}: {err}");
    }
    let text = "[server]\nlisten = [\"127.0.0.1:0\"]\n[cache.disk]\npath = \"/var/cache/v\"\n";
    let config = viaduct::Config::from_toml(text, "p.toml").unwrap();
    let disk = config.cache.disk.unwrap();
    assert_eq!(disk.path, Path::new("/var/cache/v"));
    assert_eq!(disk.capacity, viaduct::config::Size(10 << 30));
    assert_eq!(disk.max_object_size, viaduct::config::Size(64 << 20));
}

/// A FIFO under a valid record name in the first directory the start-up
/// walk reads: opening it waits for a writer, so the walk is held there
/// until `release` (or the end of the test).
struct HeldWalk(PathBuf);

impl HeldWalk {
    fn plant(cache: &Path) -> HeldWalk {
        let fifo = cache.join("v1/00/0000000000000000-0000000000000000");
        let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success(), "mkfifo {}", fifo.display());
        HeldWalk(fifo)
    }

    /// Opens the FIFO for writing (without waiting) and closes it: the
    /// walk's open returns, its read finds nothing, and it goes on.
    fn try_release(&self) -> bool {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.0)
            .is_ok()
    }

    /// Lets the walk go on (it must be waiting at the FIFO).
    async fn release(self) {
        let deadline = Instant::now() + WAIT;
        while !self.try_release() {
            assert!(Instant::now() < deadline, "the walk never reached the FIFO");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for HeldWalk {
    fn drop(&mut self) {
        self.try_release();
    }
}

#[tokio::test]
async fn while_the_walk_runs_urls_are_found_by_name_and_purges_hold() {
    let _shared = PROCESS.read().await;
    let dir = Dir::new("walk");
    let origin = origin().await;
    let cache = dir.cache();
    let paths = ["/one", "/pre/a", "/tagged/x", "/url/x", "/keep/x"];
    let proxy = node_ready(&origin, &cache, "", "").await;
    for path in paths {
        from_origin(proxy.addr(), path, &body_of(path)).await;
    }
    stored(proxy.admin_addr(), paths.len()).await;
    assert!(proxy.shutdown().await);

    let held = HeldWalk::plant(&cache);
    let proxy = node(&origin, &cache, "", "").await;
    let admin = proxy.admin_addr();
    // Not indexed yet: found by its file name.
    disk_hit(proxy.addr(), "/one", b"body of /one").await;
    // Purges made now apply to what the walk finds later.
    purge(admin, "prefix=http://site.test/pre/").await;
    purge(admin, "tag=t-tagged").await;
    // The file goes at once, by name; the answer (today a 404, "purged":
    // 0, since the URL was not indexed yet) is not what this test is about.
    let (status, answer) = purge_answer(admin, "url=http://site.test/url/x").await;
    assert!(
        status == StatusCode::OK || status == StatusCode::NOT_FOUND,
        "{status} {answer}"
    );
    assert!(record_of(&cache, "/url/x").is_none(), "removed by name");
    assert_eq!(disk_stats(admin).await["recovering"], true, "held");
    assert_eq!(metric(admin, "viaduct_disk_recovering", &[]).await, 1.0);
    held.release().await;
    walked(admin).await;

    for path in ["/pre/a", "/tagged/x", "/url/x"] {
        assert!(record_of(&cache, path).is_none(), "{path} left on disk");
        from_origin(proxy.addr(), path, &body_of(path)).await;
        assert_eq!(origin.count(path), 2, "{path}");
    }
    disk_hit(proxy.addr(), "/keep/x", b"body of /keep/x").await;
    assert_eq!(origin.count("/keep/x"), 1);
    assert_eq!(origin.count("/one"), 1);
    // The FIFO was no record: removed, counted.
    assert_eq!(errors(admin, "damaged").await, 1.0);
    assert!(!cache
        .join("v1/00/0000000000000000-0000000000000000")
        .exists());
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn a_record_found_by_name_is_promoted_on_its_second_hit() {
    let _shared = PROCESS.read().await;
    let dir = Dir::new("promote");
    let origin = origin().await;
    let cache = dir.cache();
    let (path, body) = ("/bin/300000", pattern(300_000));
    let proxy = node_ready(&origin, &cache, "", "").await;
    from_origin(proxy.addr(), path, &body).await;
    stored(proxy.admin_addr(), 1).await;
    assert!(proxy.shutdown().await);
    // Found by name (the walk is held); its header in the page cache, its
    // body on the disk: the read without waiting stops at the body.
    let held = HeldWalk::plant(&cache);
    let file = record_of(&cache, path).unwrap();
    make_cold(&file);
    warm_first_page(&file);

    let proxy = node(&origin, &cache, "", "").await;
    disk_hit(proxy.addr(), path, &body).await;
    disk_hit(proxy.addr(), path, &body).await;
    let admin = proxy.admin_addr();
    assert_eq!(
        metric(admin, "viaduct_disk_promotions_total", &[]).await,
        1.0
    );
    let got = fetch(proxy.addr(), at(path)).await;
    assert!(
        !status_of(&got).contains("detail=disk"),
        "{}",
        status_of(&got)
    );
    assert_eq!(got.body, body);
    held.release().await;
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn objects_over_the_disk_limit_stay_in_memory() {
    let _shared = PROCESS.read().await;
    let dir = Dir::new("toolarge");
    let origin = origin().await;
    let proxy = node_ready(&origin, &dir.cache(), "", "max_object_size = \"16KiB\"").await;
    let (small, large) = ("/bin/s/16384", "/bin/l/16385");
    from_origin(proxy.addr(), small, &pattern(16384)).await;
    from_origin(proxy.addr(), large, &pattern(16385)).await;
    let hit = fetch(proxy.addr(), at(large)).await;
    assert!(status_of(&hit).contains("; hit;"), "{}", status_of(&hit));
    let admin = proxy.admin_addr();
    stored(admin, 1).await;
    let too_large = &[("outcome", "too-large")];
    assert_eq!(
        metric(admin, "viaduct_disk_writes_total", too_large).await,
        1.0
    );
    assert!(proxy.shutdown().await);
    assert!(record_of(&dir.cache(), large).is_none());

    let proxy = node(&origin, &dir.cache(), "", "max_object_size = \"16KiB\"").await;
    disk_hit(proxy.addr(), small, &pattern(16384)).await;
    from_origin(proxy.addr(), large, &pattern(16385)).await;
    assert!(proxy.shutdown().await);
}

/// An origin honouring `Range: bytes=a-b` on `pattern(n)` for
/// `/r/.../<n>`, but for `/r/whole/...` (where it sends the whole body).
async fn ranged_origin() -> Origin {
    Origin::start(|seen| {
        let len: usize = seen.target.rsplit('/').next().unwrap().parse().unwrap();
        let range = seen
            .headers
            .get("range")
            .filter(|_| !seen.target.starts_with("/r/whole/"))
            .and_then(|v| v.to_str().ok()?.strip_prefix("bytes="))
            .and_then(|spec| {
                let (a, b) = spec.split_once('-')?;
                let b = if b.is_empty() {
                    len - 1
                } else {
                    b.parse::<usize>().ok()?
                };
                Some((a.parse::<usize>().ok()?, b.min(len - 1)))
            });
        let mut resp = http::Response::builder()
            .header("cache-control", "max-age=3600")
            .header("etag", "\"r1\"")
            .header("accept-ranges", "bytes");
        let body = match range {
            Some((a, b)) => {
                resp = resp
                    .status(StatusCode::PARTIAL_CONTENT)
                    .header("content-range", format!("bytes {a}-{b}/{len}"));
                pattern(len).slice(a..=b)
            }
            None => pattern(len),
        };
        resp.body(TestBody::full(body)).unwrap()
    })
    .await
}

#[tokio::test]
async fn an_object_filled_by_ranges_is_kept_on_disk_too() {
    let _shared = PROCESS.read().await;
    let dir = Dir::new("ranges");
    let origin = ranged_origin().await;
    let proxy = node_ready(&origin, &dir.cache(), "", "").await;
    // One piece smaller than a slice, three slices combined, and the
    // whole body from an origin that ignores Range.
    let paths = ["/r/5000", "/r/2621440", "/r/whole/5000"];
    for path in paths {
        let len: usize = path.rsplit('/').next().unwrap().parse().unwrap();
        let range = format!("bytes=0-{}", len - 1);
        let got = fetch(proxy.addr(), with(at(path), "range", &range)).await;
        assert_eq!(got.status, StatusCode::PARTIAL_CONTENT, "{path}");
        let whole = fetch(proxy.addr(), at(path)).await;
        assert!(
            status_of(&whole).contains("; hit;"),
            "{}",
            status_of(&whole)
        );
        assert_eq!(whole.body, pattern(len), "{path}");
    }
    // In memory whole, so offered to the disk.
    assert!(proxy.shutdown().await);
    for path in paths {
        assert!(
            record_of(&dir.cache(), path).is_some(),
            "{path} not on disk"
        );
    }

    let proxy = node(&origin, &dir.cache(), "", "").await;
    for path in paths {
        let len: usize = path.rsplit('/').next().unwrap().parse().unwrap();
        let seen = origin.count(path);
        disk_hit(proxy.addr(), path, &pattern(len)).await;
        assert_eq!(origin.count(path), seen);
    }
    assert!(proxy.shutdown().await);
}
