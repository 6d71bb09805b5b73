//! From a request path to a file under the document root, safely. The
//! classifier has already normalised the path (RFC 3986 §5.2.4: no `.` or
//! `..` segments survive it, encoded slashes and NUL were refused); here the
//! rest of the percent-encoding is decoded once, and each segment is checked
//! again, because a file name is bytes and the checks are cheap:
//!
//! - NUL: 400; `..`: 403; a backslash (a separator elsewhere): 403;
//! - a segment starting with `.` (dotfiles, `.git`): hidden, 404;
//! - the joined path is resolved (symlinks followed) and must stay under
//!   the root's own resolved path: 403 otherwise;
//! - only regular files are opened, never a FIFO or a device (403), and
//!   with `O_NONBLOCK`, then checked again on the open handle, so a file
//!   swapped for a FIFO between the two cannot block a worker.

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Where a path leads.
pub enum Resolved {
    File(PathBuf, Metadata),
    /// A directory, requested with its trailing slash.
    Dir(PathBuf),
    /// A directory requested without it: 301 to the slashed path.
    AddSlash,
    Refused(Refusal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    BadRequest(&'static str),
    Forbidden(&'static str),
    NotFound,
}

const O_NONBLOCK: i32 = 0o4000;

/// Decodes `%XX` once; `None` when an escape is malformed.
pub fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The file or directory `rel` (the path after the route's prefix, still
/// percent-encoded) names under `root` (already canonical); `slashed`: the
/// request's path ends with `/`. Blocking.
pub fn resolve(root: &Path, rel: &str, slashed: bool) -> Resolved {
    let Some(decoded) = percent_decode(rel) else {
        return Resolved::Refused(Refusal::BadRequest(
            "malformed percent-encoding in the path",
        ));
    };
    if decoded.contains(&0) {
        return Resolved::Refused(Refusal::BadRequest("NUL in the path"));
    }
    let mut path = root.to_path_buf();
    for segment in decoded.split(|b| *b == b'/') {
        match segment {
            b"" | b"." => continue,
            b".." => {
                return Resolved::Refused(Refusal::Forbidden("the path leaves the document root"))
            }
            s if s.contains(&b'\\') => {
                return Resolved::Refused(Refusal::Forbidden("backslash in the path"))
            }
            s if s.starts_with(b".") => return Resolved::Refused(Refusal::NotFound),
            s => path.push(std::ffi::OsStr::from_bytes(s)),
        }
    }
    let real = match std::fs::canonicalize(&path) {
        Ok(real) => real,
        Err(e) => return Resolved::Refused(refusal_of(&e)),
    };
    if !real.starts_with(root) {
        return Resolved::Refused(Refusal::Forbidden("a link leads out of the document root"));
    }
    let meta = match std::fs::metadata(&real) {
        Ok(meta) => meta,
        Err(e) => return Resolved::Refused(refusal_of(&e)),
    };
    if meta.is_dir() {
        if !slashed {
            return Resolved::AddSlash;
        }
        return Resolved::Dir(real);
    }
    if !meta.is_file() {
        return Resolved::Refused(Refusal::Forbidden("not a regular file"));
    }
    if slashed {
        // `page.html/` is not the page (its relative links would resolve
        // elsewhere): not found, as nginx and Apache answer.
        return Resolved::Refused(Refusal::NotFound);
    }
    Resolved::File(real, meta)
}

/// A regular file under `root` named `name` in `dir`, if there is one (for
/// index files and precompressed siblings).
pub fn regular_in(root: &Path, dir: &Path, name: &std::ffi::OsStr) -> Option<(PathBuf, Metadata)> {
    let real = std::fs::canonicalize(dir.join(name)).ok()?;
    if !real.starts_with(root) {
        return None;
    }
    let meta = std::fs::metadata(&real).ok()?;
    meta.is_file().then_some((real, meta))
}

/// Opens `path` for reading without ever blocking on it, and checks that
/// what was opened is the regular file `meta` described.
pub fn open(path: &Path, meta: &Metadata) -> Result<File, Refusal> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NONBLOCK)
        .open(path)
        .map_err(|e| refusal_of(&e))?;
    let now = file.metadata().map_err(|e| refusal_of(&e))?;
    if !now.is_file() || now.ino() != meta.ino() || now.dev() != meta.dev() {
        return Err(Refusal::Forbidden("the file changed while it was opened"));
    }
    Ok(file)
}

fn refusal_of(e: &io::Error) -> Refusal {
    match e.kind() {
        io::ErrorKind::PermissionDenied => Refusal::Forbidden("permission denied"),
        // Not found, a file used as a directory (ENOTDIR), a name too long.
        _ => Refusal::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_once() {
        assert_eq!(percent_decode("a%2541").unwrap(), b"a%41");
        assert_eq!(percent_decode("%e2%82%ac").unwrap(), "€".as_bytes());
        assert!(percent_decode("%g1").is_none());
        assert!(percent_decode("%4").is_none());
    }
}
