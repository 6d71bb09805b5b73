//! Serving files from a route's `root` (seed ch. 5): the path mapped safely
//! under the document root (`resolve.rs`), index files and listings for
//! directories (`listing.rs`), the type by extension (`types.rs`),
//! validators, conditional requests, ranges and streamed bodies
//! (`respond.rs`), precompressed siblings (`file.br`, `file.gz`), and the
//! trailing-slash redirect. `[[redirect]]` rules live in `redirect.rs`.
//! Access control (`allow`, `basic_auth`) is the pipeline's admit step.
//!
//! Every file-system call runs on the blocking pool, one hop per request.

mod hot;
mod listing;
pub mod redirect;
mod resolve;
mod respond;
mod types;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};

use crate::config::RouteConfig;
use crate::http::body::BoxError;
use resolve::{Refusal, Resolved};
use respond::Representation;

/// A route's document root and how it is served.
pub struct Docroot {
    /// Canonical (symlinks resolved): every file served must be under it.
    root: PathBuf,
    index: Vec<OsString>,
    listing: bool,
    cache_control: Option<HeaderValue>,
    types: types::Types,
    hot: hot::Hot,
}

/// A file-serving answer, for the pipeline to send.
pub struct FileResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: FileBody,
}

pub enum FileBody {
    Empty,
    Full(Bytes),
    /// `len` bytes of `file` from `offset`, for the kernel to send
    /// (`sendfile`, plain HTTP/1.x connections only).
    File {
        file: Arc<std::fs::File>,
        offset: u64,
        len: u64,
    },
    /// Exactly `len` bytes, or an error that cuts the response.
    Stream {
        rx: tokio::sync::mpsc::Receiver<Result<Bytes, BoxError>>,
        len: u64,
    },
}

impl FileResponse {
    fn new(status: StatusCode, headers: HeaderMap, body: FileBody) -> FileResponse {
        FileResponse {
            status,
            headers,
            body,
        }
    }

    /// A short text answer (errors, refusals).
    fn error(status: StatusCode, text: &'static str) -> FileResponse {
        FileResponse::text(status, Bytes::from_static(text.as_bytes()))
    }

    fn refused(refusal: Refusal) -> FileResponse {
        match refusal {
            Refusal::NotFound => FileResponse::error(StatusCode::NOT_FOUND, "not found\n"),
            Refusal::Forbidden(why) => {
                FileResponse::text(StatusCode::FORBIDDEN, format!("forbidden: {why}\n"))
            }
            Refusal::BadRequest(why) => {
                FileResponse::text(StatusCode::BAD_REQUEST, format!("bad request: {why}\n"))
            }
        }
    }

    fn text(status: StatusCode, text: impl Into<Bytes>) -> FileResponse {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        FileResponse::new(status, headers, FileBody::Full(text.into()))
    }
}

impl Docroot {
    /// `None` when the route has no `root`; `Err` when the directory cannot
    /// be used (checked again at start: the file may have changed since
    /// the configuration was read).
    pub fn of(route: &RouteConfig) -> Result<Option<Arc<Docroot>>, String> {
        let Some(root) = &route.root else {
            return Ok(None);
        };
        let root =
            std::fs::canonicalize(root).map_err(|e| format!("root {}: {e}", root.display()))?;
        Ok(Some(Arc::new(Docroot {
            root,
            index: route.index.iter().map(OsString::from).collect(),
            listing: route.listing,
            cache_control: route
                .cache_control
                .as_deref()
                .and_then(|v| HeaderValue::from_str(v).ok()),
            types: types::Types::new(&route.types),
            hot: hot::Hot::default(),
        })))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Answers `method` for `path` (normalised, without the query), whose
    /// part after the route's prefix is `rel`. `zero_copy`: the body may
    /// be [`FileBody::File`], for the kernel to send.
    pub async fn serve(
        self: &Arc<Self>,
        method: &Method,
        request: &HeaderMap,
        path: &str,
        rel: &str,
        query: Option<&str>,
        zero_copy: bool,
    ) -> FileResponse {
        if method != Method::GET && method != Method::HEAD {
            let mut r = FileResponse::text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method not allowed: {method} (files answer GET and HEAD)\n"),
            );
            r.headers
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        if let Some(file) = self.hot.get(&hot_key(rel, request)) {
            return hot::answer(&file, method, request, zero_copy);
        }
        let me = self.clone();
        let (method, request) = (method.clone(), request.clone());
        let (path, rel, query) = (path.to_string(), rel.to_string(), query.map(str::to_string));
        tokio::task::spawn_blocking(move || {
            me.answer(&method, &request, &path, &rel, query.as_deref(), zero_copy)
        })
        .await
        .unwrap_or_else(|_| {
            FileResponse::error(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
        })
    }

    /// The blocking half of `serve`.
    fn answer(
        &self,
        method: &Method,
        request: &HeaderMap,
        path: &str,
        rel: &str,
        query: Option<&str>,
        zero_copy: bool,
    ) -> FileResponse {
        let key = hot_key(rel, request);
        match resolve::resolve(&self.root, rel, path.ends_with('/')) {
            Resolved::Refused(refusal) => FileResponse::refused(refusal),
            Resolved::AddSlash => {
                // RFC 9110 §15.4.2: the directory's URL ends with a slash.
                let mut location = format!("{path}/");
                if let Some(query) = query {
                    location.push('?');
                    location.push_str(query);
                }
                let mut r = FileResponse::text(
                    StatusCode::MOVED_PERMANENTLY,
                    format!("moved to {location}\n"),
                );
                if let Ok(value) = HeaderValue::from_str(&location) {
                    r.headers.insert(header::LOCATION, value);
                }
                r
            }
            Resolved::Dir(dir) => {
                for name in &self.index {
                    if let Some((file, meta)) = resolve::regular_in(&self.root, &dir, name) {
                        return self.file(method, request, &file, meta, key, zero_copy);
                    }
                }
                if !self.listing {
                    return FileResponse::error(
                        StatusCode::FORBIDDEN,
                        "forbidden: directory without an index\n",
                    );
                }
                self.listing(method, request, path, &dir)
            }
            Resolved::File(file, meta) => self.file(method, request, &file, meta, key, zero_copy),
        }
    }

    fn listing(
        &self,
        method: &Method,
        request: &HeaderMap,
        path: &str,
        dir: &Path,
    ) -> FileResponse {
        let Ok(entries) = listing::read(dir) else {
            return FileResponse::error(
                StatusCode::FORBIDDEN,
                "forbidden: the directory cannot be read\n",
            );
        };
        let (text, ty) = if listing::wants_json(request) {
            (listing::json(path, &entries), "application/json")
        } else {
            (listing::html(path, &entries), "text/html; charset=utf-8")
        };
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ty));
        headers.insert(header::VARY, HeaderValue::from_static("Accept"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
        let body = if method == Method::HEAD {
            FileBody::Empty
        } else {
            FileBody::Full(Bytes::from(text))
        };
        FileResponse::new(StatusCode::OK, headers, body)
    }

    /// A regular file: the precompressed sibling the client accepts, if
    /// there is one, else the file itself.
    fn file(
        &self,
        method: &Method,
        request: &HeaderMap,
        file: &Path,
        meta: std::fs::Metadata,
        key: String,
        zero_copy: bool,
    ) -> FileResponse {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, self.types.of(file));
        if let Some(cc) = &self.cache_control {
            headers.insert(header::CACHE_CONTROL, cc.clone());
        }
        let (path, meta) = match self.precompressed(request, file, &mut headers) {
            Some(found) => found,
            None => (file.to_path_buf(), meta),
        };
        let rep = Representation::of(&meta);
        respond::validators(&mut headers, &rep);
        if rep.len <= hot::MAX_BYTES {
            // Read whole and kept: the next requests skip the disk.
            let mut handle = match resolve::open(&path, &meta) {
                Ok(handle) => handle,
                Err(refusal) => return FileResponse::refused(refusal),
            };
            let Some(body) = respond::read_whole(&mut handle, rep.len) else {
                return respond::changed();
            };
            let kept = Arc::new(hot::HotFile {
                headers,
                rep,
                body,
                handle: Arc::new(handle),
            });
            self.hot.put(key, kept.clone());
            return hot::answer(&kept, method, request, zero_copy);
        }
        let (headers, span) = match respond::decide(method, request, headers, &rep) {
            Ok(decided) => decided,
            Err(answer) => return *answer,
        };
        match resolve::open(&path, &meta) {
            Ok(handle) => respond::send(handle, method, headers, &rep, span, zero_copy),
            Err(refusal) => FileResponse::refused(refusal),
        }
    }

    /// `file.br` or `file.gz` when the client accepts that coding (br
    /// first) and the sibling is a regular file under the root; sets
    /// Content-Encoding, and Vary whenever a sibling exists.
    fn precompressed(
        &self,
        request: &HeaderMap,
        file: &Path,
        headers: &mut HeaderMap,
    ) -> Option<(PathBuf, std::fs::Metadata)> {
        let dir = file.parent()?;
        let name = file.file_name()?;
        let mut sibling_exists = false;
        let mut chosen = None;
        for (coding, ext) in [("br", ".br"), ("gzip", ".gz")] {
            let mut sibling = name.to_os_string();
            sibling.push(ext);
            let Some(found) = resolve::regular_in(&self.root, dir, &sibling) else {
                continue;
            };
            sibling_exists = true;
            if chosen.is_none() && accepts(request, coding) {
                chosen = Some((coding, found));
            }
        }
        if sibling_exists {
            headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        }
        let (coding, found) = chosen?;
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding));
        Some(found)
    }
}

/// A kept file's key: the coding choice is part of it (a kept file is one
/// variant).
fn hot_key(rel: &str, request: &HeaderMap) -> String {
    format!(
        "{rel}\0{}{}",
        u8::from(accepts(request, "br")),
        u8::from(accepts(request, "gzip"))
    )
}

/// Whether `Accept-Encoding` accepts `coding` (named, or `*`, with q > 0).
fn accepts(request: &HeaderMap, coding: &str) -> bool {
    let mut named = None;
    let mut star = None;
    for value in request.get_all(header::ACCEPT_ENCODING) {
        let Ok(text) = value.to_str() else { continue };
        for item in text.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim();
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if name.eq_ignore_ascii_case(coding) {
                named = Some(q > 0.0);
            } else if name == "*" {
                star = Some(q > 0.0);
            }
        }
    }
    named.or(star).unwrap_or(false)
}
