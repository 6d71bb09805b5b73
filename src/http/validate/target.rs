//! The path of an origin-form request target, normalised before anything
//! routes, keys or forwards by it (RFC 3986 §6.2.2).
//!
//! Without this, `/pub/../secret` matches a `/pub/` route and reaches that
//! origin verbatim, where it means `/secret`. So, in this order:
//! 1. percent-encodings of unreserved characters are decoded (`%2e` is `.`,
//!    §2.3) and the hex of every other encoding is upper-cased (§6.2.2.1);
//! 2. dot segments are removed (§5.2.4).
//!
//! An encoded slash or backslash (`%2F`, `%5C`, or a raw `\`) is refused:
//! origins disagree about whether it separates segments, so a route's prefix
//! could mean one thing here and another there. `allow_encoded_slash` keeps
//! them (encoded) for sites that need them, but still refuses a segment whose
//! pieces between them are `.` or `..` (`..%2F`). An encoded NUL is refused.

use std::borrow::Cow;

use super::host::unreserved;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetError {
    /// `%` not followed by two hex digits.
    BadEncoding,
    /// `%2F`, `%5C` or `\` while they are not allowed.
    EncodedSlash,
    /// `.` or `..` between encoded slashes (allowed mode).
    HiddenDotSegment,
    /// `%00`.
    Nul,
    /// Neither `/...` nor `*`.
    NotOriginForm,
}

impl TargetError {
    pub fn reason(self) -> &'static str {
        match self {
            TargetError::BadEncoding => "malformed percent-encoding in the path",
            TargetError::EncodedSlash => "encoded slash or backslash in the path",
            TargetError::HiddenDotSegment => "dot segment between encoded slashes",
            TargetError::Nul => "encoded NUL in the path",
            TargetError::NotOriginForm => "request target must start with /",
        }
    }
}

/// The normalised form of `path` (no query); borrowed when already normal,
/// which is what almost every request is.
pub fn normalize_path(path: &str, allow_encoded_slash: bool) -> Result<Cow<'_, str>, TargetError> {
    if !path.starts_with('/') {
        return Err(TargetError::NotOriginForm);
    }
    let bytes = path.as_bytes();
    let needs_decoding = bytes.iter().any(|b| matches!(b, b'%' | b'\\'));
    if !needs_decoding && !has_dot_segment(path) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = if needs_decoding {
        let decoded = decode_unreserved(bytes, allow_encoded_slash)?;
        if allow_encoded_slash {
            check_pieces(&decoded)?;
        }
        Cow::Owned(decoded)
    } else {
        Cow::Borrowed(path)
    };
    if !has_dot_segment(&decoded) {
        return Ok(decoded);
    }
    Ok(Cow::Owned(remove_dot_segments(&decoded)))
}

/// A `.` or `..` segment anywhere in an absolute path.
fn has_dot_segment(path: &str) -> bool {
    // Most paths have no dot at all: one byte scan decides.
    if !path.as_bytes().contains(&b'.') {
        return false;
    }
    path.split('/')
        .skip(1)
        .any(|segment| segment == "." || segment == "..")
}

fn decode_unreserved(bytes: &[u8], allow_encoded_slash: bool) -> Result<String, TargetError> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    // Bytes, not chars: a non-ASCII character in the path (UTF-8 from a
    // `&str`) is copied byte for byte. Pushing each byte as a `char` turned
    // `é` into `Ã©` (found by the target fuzz target).
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let value = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| Some(hex(h[0])? << 4 | hex(h[1])?))
                    .ok_or(TargetError::BadEncoding)?;
                match value {
                    0 => return Err(TargetError::Nul),
                    b'/' | b'\\' if !allow_encoded_slash => return Err(TargetError::EncodedSlash),
                    v if unreserved(v) => out.push(v),
                    v => out.extend_from_slice(&[
                        b'%',
                        HEX[usize::from(v >> 4)],
                        HEX[usize::from(v & 15)],
                    ]),
                }
                i += 3;
            }
            b'\\' if !allow_encoded_slash => return Err(TargetError::EncodedSlash),
            // A raw backslash is not URI syntax; kept, it goes out encoded.
            b'\\' => {
                out.extend_from_slice(b"%5C");
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    // Only ASCII escapes were replaced (by ASCII), so the input's UTF-8 is whole.
    String::from_utf8(out).map_err(|_| TargetError::BadEncoding)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// With encoded slashes allowed, an origin that splits on them must not find
/// a `.` or `..` between them.
fn check_pieces(path: &str) -> Result<(), TargetError> {
    for segment in path.split('/') {
        if !(segment.contains("%2F") || segment.contains("%5C")) {
            continue;
        }
        let hidden = segment
            .split("%2F")
            .flat_map(|piece| piece.split("%5C"))
            .any(|piece| piece == "." || piece == "..");
        if hidden {
            return Err(TargetError::HiddenDotSegment);
        }
    }
    Ok(())
}

/// RFC 3986 §5.2.4 for an absolute path: `.` segments go, `..` removes the
/// segment before it (never above the root), and a path ending in either
/// keeps its trailing slash.
fn remove_dot_segments(path: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in path.split('/').skip(1) {
        trailing_slash = false;
        match segment {
            "." => trailing_slash = true,
            ".." => {
                kept.pop();
                trailing_slash = true;
            }
            s => kept.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_ascii_characters_are_kept_as_they_are() {
        // Found by fuzzing: decoding went byte by byte into chars.
        assert_eq!(
            normalize_path("/a/%7E/caf\u{e9}/./x", false).unwrap(),
            "/a/~/caf\u{e9}/x"
        );
    }

    fn norm(path: &str) -> Result<String, TargetError> {
        normalize_path(path, false).map(Cow::into_owned)
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for p in ["/", "/a/b.html", "/a//b", "/.well-known/x", "/a/..b/c."] {
            assert!(
                matches!(normalize_path(p, false), Ok(Cow::Borrowed(_))),
                "{p}"
            );
        }
    }

    #[test]
    fn rfc3986_examples() {
        // §5.4's dot-segment results, as absolute paths.
        let cases = [
            ("/a/b/c/./../../g", "/a/g"),
            ("/mid/content=5/../6", "/mid/6"),
            ("/a/b/c/.", "/a/b/c/"),
            ("/a/b/c/..", "/a/b/"),
            ("/..", "/"),
            ("/../../g", "/g"),
            ("/./g", "/g"),
            ("/g.", "/g."),
            ("/.g", "/.g"),
            ("/..g", "/..g"),
            ("/a//../b", "/a/b"),
            ("/pub/../secret", "/secret"),
        ];
        for (input, want) in cases {
            assert_eq!(norm(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn unreserved_encodings_are_decoded_before_dot_removal() {
        assert_eq!(norm("/pub/%2e%2e/secret").as_deref(), Ok("/secret"));
        assert_eq!(norm("/pub/%2E./secret").as_deref(), Ok("/secret"));
        assert_eq!(norm("/pub/.%2e").as_deref(), Ok("/"));
        assert_eq!(norm("/%7Euser/%41").as_deref(), Ok("/~user/A"));
        // Reserved and non-ASCII stay encoded, with upper-case hex.
        assert_eq!(norm("/a%3fb/caf%c3%a9").as_deref(), Ok("/a%3Fb/caf%C3%A9"));
        assert_eq!(norm("/a%20b").as_deref(), Ok("/a%20b"));
    }

    #[test]
    fn refusals() {
        assert_eq!(norm("/pub/..%2fsecret"), Err(TargetError::EncodedSlash));
        assert_eq!(norm("/pub/..%2Fsecret"), Err(TargetError::EncodedSlash));
        assert_eq!(norm("/pub/..%5csecret"), Err(TargetError::EncodedSlash));
        assert_eq!(norm("/pub/..\\secret"), Err(TargetError::EncodedSlash));
        assert_eq!(norm("/a%00b"), Err(TargetError::Nul));
        assert_eq!(norm("/a%zz"), Err(TargetError::BadEncoding));
        assert_eq!(norm("/a%4"), Err(TargetError::BadEncoding));
        assert_eq!(norm("*"), Err(TargetError::NotOriginForm));
        assert_eq!(norm("a/b"), Err(TargetError::NotOriginForm));
    }

    #[test]
    fn encoded_slashes_when_allowed() {
        let allow = |p| normalize_path(p, true).map(Cow::into_owned);
        assert_eq!(allow("/files/a%2fb").as_deref(), Ok("/files/a%2Fb"));
        assert_eq!(allow("/files/a\\b").as_deref(), Ok("/files/a%5Cb"));
        assert_eq!(
            allow("/pub/..%2fsecret"),
            Err(TargetError::HiddenDotSegment)
        );
        assert_eq!(
            allow("/pub/%2e%2e%2Fsecret"),
            Err(TargetError::HiddenDotSegment)
        );
        assert_eq!(allow("/pub/x%2F."), Err(TargetError::HiddenDotSegment));
        assert_eq!(allow("/pub/..\\x"), Err(TargetError::HiddenDotSegment));
        assert_eq!(allow("/a/../b%2Fc").as_deref(), Ok("/b%2Fc"));
    }
}
