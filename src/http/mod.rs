//! Bottom layer: HTTP vocabulary every other module may use, and nothing
//! here imports from the rest of the crate.
//!
//! - `body`: the request body sent upstream, `BoxError`, `BodyTooLarge`.
//! - `headers`: hop-by-hop fields, `Via`, `Forwarded` (RFC 9110 §7.6).
//! - `validate`: the request grammar (framing, Host, request target).

pub mod body;
pub mod headers;
pub mod validate;
