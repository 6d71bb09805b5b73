//! The request grammar checks, in one place: everything viaduct decides
//! about a client's request head before it routes, looks up or forwards it.
//! Pure functions over bytes and `http` types, so the tests and the fuzz
//! targets (`fuzz/`) drive them directly.
//!
//! - `framing`: how a head frames its body (Content-Length, chunked), and
//!   the Content-Length with Transfer-Encoding smuggling shape (RFC 9112 §6,
//!   §11.2).
//! - `host`: the `Host` field and URI authorities (RFC 9112 §3.2, RFC 3986
//!   §3.2), host normalisation.
//! - `target`: normalising an origin-form path before routing: dot segments,
//!   percent-encoding (RFC 3986 §6).

pub mod framing;
pub mod host;
pub mod target;
