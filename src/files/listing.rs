//! A directory listing, when a route asks for one (`listing = true`) and
//! the directory has no index file: HTML, or JSON when the client's
//! `Accept` prefers it. Hidden entries (dotfiles) are left out; names are
//! escaped in HTML and percent-encoded in links.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use http::HeaderMap;

/// At most this many entries are listed (a listing is not a file dump).
const MAX_ENTRIES: usize = 10_000;

pub struct Entry {
    name: String,
    dir: bool,
    size: u64,
    modified: i64,
}

/// The entries of `dir`, directories first, then by name. Blocking.
pub fn read(dir: &Path) -> std::io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for item in std::fs::read_dir(dir)?.take(MAX_ENTRIES) {
        let Ok(item) = item else { continue };
        let name = item.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let Ok(meta) = item.metadata() else { continue };
        entries.push(Entry {
            dir: meta.is_dir(),
            size: meta.len(),
            modified: meta.mtime(),
            name,
        });
    }
    entries.sort_by(|a, b| b.dir.cmp(&a.dir).then_with(|| a.name.cmp(&b.name)));
    Ok(entries)
}

/// Whether the client asked for JSON rather than HTML.
pub fn wants_json(request: &HeaderMap) -> bool {
    let accept = request
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let json = accept.find("application/json");
    let html = accept.find("text/html");
    match (json, html) {
        (Some(j), Some(h)) => j < h,
        (Some(_), None) => true,
        _ => false,
    }
}

pub fn json(path: &str, entries: &[Entry]) -> String {
    let items: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            serde_json::json!({
                "name": e.name,
                "type": if e.dir { "directory" } else { "file" },
                "size": e.size,
                "modified": httpdate::fmt_http_date(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(e.modified.max(0) as u64)
                ),
            })
        })
        .collect();
    serde_json::json!({ "path": path, "entries": items }).to_string()
}

pub fn html(path: &str, entries: &[Entry]) -> String {
    let title = escape(path);
    let mut out = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Index of {title}</title></head>\n<body><h1>Index of {title}</h1>\n<ul>\n<li><a href=\"../\">../</a></li>\n"
    );
    for e in entries {
        let slash = if e.dir { "/" } else { "" };
        out.push_str(&format!(
            "<li><a href=\"{}{slash}\">{}{slash}</a> {}</li>\n",
            encode(&e.name),
            escape(&e.name),
            if e.dir {
                String::new()
            } else {
                format!("({} bytes)", e.size)
            }
        ));
    }
    out.push_str("</ul>\n</body></html>\n");
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A path segment for a link: everything but unreserved bytes encoded.
fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_and_encoded() {
        let entries = [Entry {
            name: "<b>&\"x y".into(),
            dir: false,
            size: 3,
            modified: 0,
        }];
        let page = html("/d/", &entries);
        assert!(page.contains("href=\"%3Cb%3E%26%22x%20y\""), "{page}");
        assert!(page.contains("&lt;b&gt;&amp;&quot;x y"), "{page}");
        assert!(!page.contains("<b>"));
    }
}
