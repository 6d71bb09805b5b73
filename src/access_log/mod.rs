//! The access log: one line per request, written by a dedicated thread so that
//! request handling never blocks on a disk or a slow terminal. The same
//! end-of-request bookkeeping records the metrics (`Completion`).
//!
//! Formats (`[log] format`, see `format.rs`): `combined`, `json`, `squid`.

mod format;

use std::io::{self, Write};
use std::net::IpAddr;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderValue, Method, Uri, Version};

use crate::cache::CacheStatus;
use crate::config::AccessFormat;
use crate::metrics::{Metrics, Mode};

/// Where access lines go; `off` keeps a disabled log that records nothing.
pub struct AccessLog {
    tx: Option<mpsc::Sender<Record>>,
}

impl AccessLog {
    /// Opens `"stdout"`, `"stderr"`, `"off"`, or a file path (appended).
    pub fn open(dest: &str, format: AccessFormat) -> io::Result<AccessLog> {
        let out: Box<dyn Write + Send> = match dest {
            "off" => return Ok(AccessLog { tx: None }),
            "stdout" => Box::new(io::stdout()),
            "stderr" => Box::new(io::stderr()),
            path => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| io::Error::new(e.kind(), format!("access log {path}: {e}")))?,
            ),
        };
        let (tx, rx) = mpsc::channel::<Record>();
        std::thread::Builder::new()
            .name("viaduct-access-log".into())
            .spawn(move || write_lines(rx, out, format))?;
        Ok(AccessLog { tx: Some(tx) })
    }

    /// Starts the bookkeeping for one request. The line is written and the
    /// metrics recorded when the returned value is dropped (after the response
    /// body ends or is abandoned).
    pub fn begin<B>(
        &self,
        req: &http::Request<B>,
        client: IpAddr,
        metrics: Arc<Metrics>,
    ) -> Completion {
        let log = self.tx.as_ref().map(|tx| {
            (
                tx.clone(),
                Box::new(RequestInfo::of(req, client)),
                SystemTime::now(),
            )
        });
        Completion {
            started: Instant::now(),
            bytes: 0,
            complete: false,
            outcome: Outcome::default(),
            metrics,
            log,
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
            upstream: None,
            content_type: None,
        }
    }
}

pub struct Record {
    pub request: Box<RequestInfo>,
    pub wall: SystemTime,
    pub outcome: Outcome,
    pub bytes: u64,
    pub seconds: f64,
    pub complete: bool,
}

/// Travels with the response body; records metrics and writes the access
/// line when dropped.
pub struct Completion {
    started: Instant,
    bytes: u64,
    complete: bool,
    outcome: Outcome,
    metrics: Arc<Metrics>,
    log: Option<(mpsc::Sender<Record>, Box<RequestInfo>, SystemTime)>,
}

impl Completion {
    pub fn set_outcome(&mut self, outcome: Outcome) {
        self.outcome = outcome;
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
        self.metrics
            .record(o.mode, o.route.as_deref(), &o.cache, self.bytes, took);
        if let Some((tx, request, wall)) = self.log.take() {
            let _ = tx.send(Record {
                request,
                wall,
                outcome: std::mem::take(&mut self.outcome),
                bytes: self.bytes,
                seconds: took.as_secs_f64(),
                complete: self.complete,
            });
        }
    }
}

fn write_lines(rx: mpsc::Receiver<Record>, out: Box<dyn Write + Send>, format: AccessFormat) {
    let mut out = io::BufWriter::new(out);
    let mut line = String::with_capacity(256);
    while let Ok(record) = rx.recv() {
        let mut next = Some(record);
        while let Some(record) = next {
            line.clear();
            format::write(format, &record, &mut line);
            if out.write_all(line.as_bytes()).is_err() {
                return;
            }
            next = rx.try_recv().ok();
        }
        // Flush once the queue is empty: batches under load, prompt when quiet.
        let _ = out.flush();
    }
}
