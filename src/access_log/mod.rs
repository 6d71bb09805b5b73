//! The access log: one line per request, formatted on the thread that finishes
//! the request into that thread's batch, and written by a dedicated thread one
//! batch at a time (`batch.rs`), so request handling never waits on a disk or a
//! slow terminal. The same end-of-request bookkeeping records the metrics
//! (`Completion`).
//!
//! Formats (`[log] format`, see `format.rs`): `combined`, `json`, `squid`.

mod batch;
mod format;
mod text;

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderValue, Method, Uri, Version};

use crate::cache::CacheStatus;
use crate::config::AccessFormat;
use crate::metrics::{Metrics, Mode};
use batch::{Lines, Output};
use format::Record;

/// Ends every request: records its metrics and, unless the log is `off`, its
/// access line. One `Arc` per request covers both.
pub struct AccessLog {
    shared: Arc<Shared>,
}

struct Shared {
    metrics: Arc<Metrics>,
    /// `None` when `off`: no thread, no buffers, no formatting.
    log: Option<(Lines, AccessFormat)>,
}

impl AccessLog {
    /// Opens `"stdout"`, `"stderr"`, `"off"`, or a file path (appended), and
    /// starts the writer. Lines it drops are counted in `metrics`.
    pub fn open(dest: &str, format: AccessFormat, metrics: Arc<Metrics>) -> io::Result<AccessLog> {
        let out = match dest {
            "off" => None,
            "stdout" => Some(Output::Stdout),
            "stderr" => Some(Output::Stderr),
            path => Some(Output::File(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| io::Error::new(e.kind(), format!("access log {path}: {e}")))?,
            )),
        };
        let log = match out {
            Some(out) => {
                // One slot per runtime worker, plus one for any other thread.
                let threads = tokio::runtime::Handle::try_current()
                    .map_or(1, |rt| rt.metrics().num_workers())
                    + 1;
                let lines = Lines::start(out, threads, metrics.access_log_dropped.clone())?;
                Some((lines, format))
            }
            None => None,
        };
        Ok(AccessLog {
            shared: Arc::new(Shared { metrics, log }),
        })
    }

    /// Starts the bookkeeping for one request. The line is written and the
    /// metrics recorded when the returned value is dropped (after the response
    /// body ends or is abandoned).
    pub fn begin<B>(&self, req: &http::Request<B>, client: IpAddr) -> Completion {
        let request = self
            .shared
            .log
            .as_ref()
            .map(|_| (RequestInfo::of(req, client), SystemTime::now()));
        Completion {
            started: Instant::now(),
            bytes: 0,
            complete: false,
            outcome: Outcome::default(),
            shared: self.shared.clone(),
            request,
        }
    }

    /// Writes every line of the requests finished so far and flushes. Waits a
    /// bounded time for a writer stuck on its output; false if it gave up.
    pub async fn flush(&self) -> bool {
        match &self.shared.log {
            Some((lines, _)) => lines.flush().await,
            None => true,
        }
    }
}

/// What the log needs from the request, captured before the request is consumed.
pub struct RequestInfo {
    pub client: IpAddr,
    pub method: Method,
    pub target: Uri,
    pub version: Version,
    pub referer: Option<HeaderValue>,
    pub user_agent: Option<HeaderValue>,
}

impl RequestInfo {
    pub fn of<B>(req: &http::Request<B>, client: IpAddr) -> RequestInfo {
        let h = req.headers();
        RequestInfo {
            client,
            method: req.method().clone(),
            target: req.uri().clone(),
            version: req.version(),
            referer: h.get(http::header::REFERER).cloned(),
            user_agent: h.get(http::header::USER_AGENT).cloned(),
        }
    }
}

/// How a request was answered.
#[derive(Clone)]
pub struct Outcome {
    pub status: u16,
    pub upstream_status: Option<u16>,
    /// Time until the response head was ready, for forwarded requests.
    pub upstream_time: Option<Duration>,
    pub cache: CacheStatus,
    pub cache_header: Option<HeaderValue>,
    pub mode: Mode,
    pub route: Option<Arc<str>>,
    /// The cache key, when the log shows it (JSON).
    pub cache_key: Option<Arc<str>>,
    /// The origin the request went to (`host:port`), when it went to one.
    pub upstream: Option<Arc<str>>,
    pub content_type: Option<HeaderValue>,
}

impl Default for Outcome {
    fn default() -> Self {
        Outcome {
            status: 0,
            upstream_status: None,
            upstream_time: None,
            cache: CacheStatus::Local { detail: "" },
            cache_header: None,
            mode: Mode::Local,
            route: None,
            cache_key: None,
            upstream: None,
            content_type: None,
        }
    }
}

/// Travels with the response body; records metrics and writes the access
/// line when dropped.
pub struct Completion {
    started: Instant,
    bytes: u64,
    complete: bool,
    outcome: Outcome,
    shared: Arc<Shared>,
    /// Inline, not boxed: no allocation per request. `None` when the log is off.
    request: Option<(RequestInfo, SystemTime)>,
}

impl Completion {
    pub fn set_outcome(&mut self, outcome: Outcome) {
        self.outcome = outcome;
    }

    /// Whether the line shows the cache key (the JSON format does): only
    /// then does the pipeline keep a copy of the key.
    pub fn logs_key(&self) -> bool {
        self.request.is_some() && matches!(self.shared.log, Some((_, AccessFormat::Json)))
    }

    /// Whether an access line will be written (the log is not `off`).
    pub fn logging(&self) -> bool {
        self.request.is_some()
    }

    /// Time since the request started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn add_bytes(&mut self, n: u64) {
        self.bytes += n;
    }

    pub fn mark_complete(&mut self) {
        self.complete = true;
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        let took = self.started.elapsed();
        let o = &self.outcome;
        self.shared
            .metrics
            .record(o.mode, o.route.as_deref(), &o.cache, self.bytes, took);
        if let (Some((lines, format)), Some((request, wall))) = (&self.shared.log, &self.request) {
            let record = Record {
                request,
                wall: *wall,
                outcome: o,
                bytes: self.bytes,
                seconds: took.as_secs_f64(),
                complete: self.complete,
            };
            lines.push(|line| format::write(*format, &record, line));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Cache;
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    /// Counts this thread's allocations, to show the request path makes none.
    struct Counting;

    thread_local! {
        static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    }

    fn count() {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }

    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            count();
            unsafe { System.alloc(layout) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            count();
            unsafe { System.alloc_zeroed(layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, size: usize) -> *mut u8 {
            count();
            unsafe { System.realloc(ptr, layout, size) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;

    #[test]
    fn finishing_a_request_allocates_nothing_once_warm() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let config = crate::config::Config::builtin();
        let metrics = Arc::new(Metrics::new(
            &Cache::new(&config.cache),
            0,
            Vec::new(),
            Default::default(),
            Default::default(),
        ));
        let path = std::env::temp_dir().join(format!("viaduct-alloc-{}.log", std::process::id()));
        let req = http::Request::get("http://a.test/x?y=1")
            .header("user-agent", "agent/1")
            .header("referer", "http://r.test/")
            .body(())
            .unwrap();
        for format in [
            AccessFormat::Combined,
            AccessFormat::Json,
            AccessFormat::Squid,
        ] {
            let log = AccessLog::open(path.to_str().unwrap(), format, metrics.clone()).unwrap();
            let finished = |n| {
                (0..n)
                    .map(|_| {
                        let mut done = log.begin(&req, "127.0.0.1".parse().unwrap());
                        done.set_outcome(Outcome {
                            status: 200,
                            cache_header: Some(HeaderValue::from_static("viaduct; hit")),
                            route: Some("r".into()),
                            ..Outcome::default()
                        });
                        done.add_bytes(5);
                        done
                    })
                    .collect::<Vec<_>>()
            };
            // Warm up this thread's line buffer and slot, then have the writer
            // take the slot's batch: 50 lines then stay within one batch.
            drop(finished(3));
            assert!(rt.block_on(log.flush()));
            let batch = finished(50);
            let before = ALLOCATIONS.with(Cell::get);
            drop(batch);
            assert_eq!(ALLOCATIONS.with(Cell::get), before, "{format:?}");
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3 * 53);
        let _ = std::fs::remove_file(&path);
    }
}
