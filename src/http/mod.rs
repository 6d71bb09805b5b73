//! Bottom layer: HTTP vocabulary every other module may use, and nothing
//! here imports from the rest of the crate.
//!
//! - `body`: the request body sent upstream, `BoxError`, `BodyTooLarge`.
//! - `headers`: hop-by-hop fields, `Via`, `Forwarded` (RFC 9110 §7.6).
//! - `host`: the `Host` field and URI authorities (RFC 9112 §3.2, RFC 3986),
//!   host normalisation.
//! - `target`: normalising an origin-form path before routing (RFC 3986 §6).

pub mod body;
pub mod headers;
pub mod host;
pub mod target;
