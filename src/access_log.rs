//! The access log: one line per request, written by a dedicated thread so that
//! request handling never blocks on a disk or a slow terminal.
//!
//! Format `combined`: the Apache/nginx combined format followed by the total
//! duration in seconds and the upstream status (`-` when the origin was not asked):
//! `127.0.0.1 - - [24/Nov/2026:13:55:36 +0000] "GET http://a/ HTTP/1.1" 200 512 "-" "curl/8" 0.004 200`

use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::IpAddr;
use std::sync::mpsc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Method, Uri, Version};

use crate::server::InFlight;

/// Where access lines go; `off` keeps a disabled log that records nothing.
pub struct AccessLog {
    tx: Option<mpsc::Sender<Record>>,
}

impl AccessLog {
    /// Opens `"stdout"`, `"stderr"`, `"off"`, or a file path (appended).
    pub fn open(dest: &str) -> io::Result<AccessLog> {
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
            .spawn(move || write_lines(rx, out))?;
        Ok(AccessLog { tx: Some(tx) })
    }

    /// Starts the bookkeeping for one request. The line is written when the
    /// returned value is dropped (after the response body ends or is abandoned).
    pub fn begin(&self, request: RequestInfo, in_flight: InFlight) -> Completion {
        let record = self.tx.as_ref().map(|tx| {
            Box::new((
                tx.clone(),
                Record {
                    request,
                    wall: SystemTime::now(),
                    status: 0,
                    upstream_status: None,
                    bytes: 0,
                    seconds: 0.0,
                    complete: false,
                },
            ))
        });
        Completion {
            started: Instant::now(),
            record,
            _in_flight: in_flight,
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

struct Record {
    request: RequestInfo,
    wall: SystemTime,
    status: u16,
    upstream_status: Option<u16>,
    bytes: u64,
    seconds: f64,
    complete: bool,
}

/// Travels with the response body; writes the access line when dropped.
pub struct Completion {
    started: Instant,
    record: Option<Box<(mpsc::Sender<Record>, Record)>>,
    _in_flight: InFlight,
}

impl Completion {
    pub fn set_status(&mut self, status: u16, upstream_status: Option<u16>) {
        if let Some(r) = self.record.as_mut() {
            r.1.status = status;
            r.1.upstream_status = upstream_status;
        }
    }

    pub fn add_bytes(&mut self, n: u64) {
        if let Some(r) = self.record.as_mut() {
            r.1.bytes += n;
        }
    }

    pub fn mark_complete(&mut self) {
        if let Some(r) = self.record.as_mut() {
            r.1.complete = true;
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if let Some(boxed) = self.record.take() {
            let (tx, mut record) = *boxed;
            record.seconds = self.started.elapsed().as_secs_f64();
            let _ = tx.send(record);
        }
    }
}

fn write_lines(rx: mpsc::Receiver<Record>, out: Box<dyn Write + Send>) {
    let mut out = io::BufWriter::new(out);
    let mut line = String::with_capacity(256);
    while let Ok(record) = rx.recv() {
        let mut next = Some(record);
        while let Some(record) = next {
            line.clear();
            format_combined(&record, &mut line);
            if out.write_all(line.as_bytes()).is_err() {
                return;
            }
            next = rx.try_recv().ok();
        }
        // Flush once the queue is empty: batches under load, prompt when quiet.
        let _ = out.flush();
    }
}

fn format_combined(r: &Record, line: &mut String) {
    let q = &r.request;
    let _ = write!(line, "{} - - [", q.client);
    clf_time(r.wall, line);
    line.push_str("] \"");
    push_escaped(line, q.method.as_str().as_bytes());
    line.push(' ');
    push_escaped(line, q.target.to_string().as_bytes());
    let _ = write!(line, " {:?}\" {} {} \"", q.version, r.status, r.bytes);
    push_header(line, q.referer.as_ref());
    line.push_str("\" \"");
    push_header(line, q.user_agent.as_ref());
    let _ = write!(line, "\" {:.3} ", r.seconds);
    match r.upstream_status {
        Some(s) => {
            let _ = write!(line, "{s}");
        }
        None => line.push('-'),
    }
    if !r.complete {
        // The response body did not reach its end (client left, origin failed).
        line.push_str(" incomplete");
    }
    line.push('\n');
}

fn push_header(line: &mut String, value: Option<&HeaderValue>) {
    match value {
        Some(v) => push_escaped(line, v.as_bytes()),
        None => line.push('-'),
    }
}

/// Keeps one request on one line and quotes intact (no log injection).
fn push_escaped(line: &mut String, bytes: &[u8]) {
    for &b in bytes {
        match b {
            b'"' | b'\\' => {
                line.push('\\');
                line.push(b as char);
            }
            0x20..=0x7e => line.push(b as char),
            _ => {
                let _ = write!(line, "\\x{b:02x}");
            }
        }
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `10/Oct/2000:13:55:36 +0000` in UTC.
fn clf_time(t: SystemTime, line: &mut String) {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    let _ = write!(
        line,
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates_are_in_common_log_format() {
        let mut s = String::new();
        clf_time(UNIX_EPOCH + Duration::from_secs(971_186_136), &mut s);
        assert_eq!(s, "10/Oct/2000:13:55:36 +0000");
        s.clear();
        clf_time(UNIX_EPOCH + Duration::from_secs(1_709_164_800), &mut s);
        assert_eq!(s, "29/Feb/2024:00:00:00 +0000");
    }

    #[test]
    fn lines_escape_quotes_and_control_bytes() {
        let record = Record {
            request: RequestInfo {
                client: "127.0.0.1".parse().unwrap(),
                method: Method::GET,
                target: "http://a.test/x".parse().unwrap(),
                version: Version::HTTP_11,
                referer: None,
                user_agent: Some(HeaderValue::from_static("evil\" agent")),
            },
            wall: UNIX_EPOCH,
            status: 200,
            upstream_status: Some(200),
            bytes: 5,
            seconds: 0.0123,
            complete: true,
        };
        let mut line = String::new();
        format_combined(&record, &mut line);
        assert_eq!(
            line,
            "127.0.0.1 - - [01/Jan/1970:00:00:00 +0000] \"GET http://a.test/x HTTP/1.1\" 200 5 \"-\" \"evil\\\" agent\" 0.012 200\n"
        );
    }
}
