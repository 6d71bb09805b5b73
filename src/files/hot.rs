//! Files up to 1 MiB kept in memory for a second (nginx's
//! `open_file_cache`, with the content too): a hot file is then answered
//! without a trip to the blocking pool or a copy out of the page cache,
//! while a changed or removed file is seen within `FRESH_FOR`. Preconditions
//! and ranges are still evaluated per request. The open handle is kept
//! too: plain HTTP/1.x connections send kept files of 64 KiB and more from
//! it by `sendfile` (`server/zero_copy.rs`), the others from the copy in
//! memory. (docs/benchmarks.md, issue 18: a 1 MiB file streamed from disk
//! ran at 0.72x nginx, kept in memory at 0.83x, by sendfile at 1.24x.)

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method};

use super::respond::{self, Representation};
use super::FileResponse;

/// Files up to this size are kept.
pub const MAX_BYTES: u64 = 1024 * 1024;
/// How long a kept file is served before the disk is looked at again.
const FRESH_FOR: Duration = Duration::from_secs(1);
/// Memory for kept files, per route.
const CAPACITY: u64 = 64 << 20;

pub struct HotFile {
    /// Content-Type, Cache-Control, Vary, Content-Encoding, validators.
    pub headers: HeaderMap,
    pub rep: Representation,
    pub body: Bytes,
    /// The file it was read from, for `sendfile` (what nginx's
    /// `open_file_cache` keeps).
    pub handle: Arc<std::fs::File>,
}

pub struct Hot {
    files: moka::sync::Cache<String, Arc<HotFile>>,
}

impl Default for Hot {
    fn default() -> Self {
        Hot {
            files: moka::sync::Cache::builder()
                .max_capacity(CAPACITY)
                .weigher(|k: &String, f: &Arc<HotFile>| (k.len() + f.body.len() + 256) as u32)
                .time_to_live(FRESH_FOR)
                .build(),
        }
    }
}

impl Hot {
    pub fn get(&self, key: &str) -> Option<Arc<HotFile>> {
        self.files.get(key)
    }

    pub fn put(&self, key: String, file: Arc<HotFile>) {
        self.files.insert(key, file);
    }
}

/// The answer from a kept file.
pub fn answer(
    file: &HotFile,
    method: &Method,
    request: &HeaderMap,
    zero_copy: bool,
) -> FileResponse {
    match respond::decide(method, request, file.headers.clone(), &file.rep) {
        Ok((headers, span)) => respond::send_bytes(
            &file.body,
            &file.handle,
            method,
            headers,
            &file.rep,
            span,
            zero_copy,
        ),
        Err(answer) => *answer,
    }
}
