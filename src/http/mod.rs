//! Bottom layer: HTTP vocabulary every other module may use, and nothing
//! here imports from the rest of the crate.
//!
//! - `host`: the `Host` field and URI authorities (RFC 9112 §3.2, RFC 3986).
//! - `target`: normalising an origin-form path before routing (RFC 3986 §6).

pub mod host;
pub mod target;
