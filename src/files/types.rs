//! The `Content-Type` of a file: the route's `types` first, then the
//! extension table of `mime_guess`, then `application/octet-stream`; text
//! gets `charset=utf-8`.

use std::collections::BTreeMap;
use std::path::Path;

use http::HeaderValue;

pub struct Types {
    overrides: BTreeMap<String, HeaderValue>,
}

impl Types {
    pub fn new(overrides: &BTreeMap<String, String>) -> Types {
        Types {
            overrides: overrides
                .iter()
                .filter_map(|(ext, ty)| {
                    Some((ext.to_ascii_lowercase(), HeaderValue::from_str(ty).ok()?))
                })
                .collect(),
        }
    }

    pub fn of(&self, path: &Path) -> HeaderValue {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        if let Some(ty) = self.overrides.get(&ext) {
            return ty.clone();
        }
        let Some(mime) = mime_guess::from_ext(&ext).first() else {
            return HeaderValue::from_static("application/octet-stream");
        };
        let essence = mime.essence_str();
        let text = mime.type_() == mime_guess::mime::TEXT
            || matches!(
                essence,
                "application/javascript" | "application/json" | "application/xml" | "image/svg+xml"
            );
        let value = if text {
            format!("{essence}; charset=utf-8")
        } else {
            essence.to_string()
        };
        HeaderValue::from_str(&value)
            .unwrap_or(HeaderValue::from_static("application/octet-stream"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_extension_with_charset_for_text() {
        let mut o = BTreeMap::new();
        o.insert("wasm".to_string(), "application/wasm".to_string());
        o.insert("TXT".to_string(), "text/x-mine".to_string());
        let t = Types::new(&o);
        assert_eq!(t.of(Path::new("a/b.html")), "text/html; charset=utf-8");
        assert_eq!(t.of(Path::new("a.CSS")), "text/css; charset=utf-8");
        assert_eq!(t.of(Path::new("a.js")), "text/javascript; charset=utf-8");
        assert_eq!(t.of(Path::new("a.png")), "image/png");
        assert_eq!(t.of(Path::new("a.wasm")), "application/wasm");
        assert_eq!(t.of(Path::new("a.txt")), "text/x-mine");
        assert_eq!(t.of(Path::new("README")), "application/octet-stream");
    }
}
