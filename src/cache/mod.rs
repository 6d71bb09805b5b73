//! The HTTP cache (RFC 9111): a typed Cache-Control parser, a pure policy,
//! keys with Vary, a byte-weighed store, and the fill that tees a response
//! body into the store while it streams to the client.

pub mod control;
pub mod fill;
pub mod key;
pub mod policy;
pub mod status;
pub mod store;

use crate::config::CacheConfig;
use policy::Heuristics;
use store::Store;

pub use status::{CacheStatus, Fwd, Stored};

/// The cache as the pipeline uses it: the store and the settings that are not
/// part of the pure policy.
pub struct Cache {
    pub store: Store,
    pub enabled: bool,
    pub heuristics: Heuristics,
    pub max_object_size: u64,
}

impl Cache {
    pub fn new(config: &CacheConfig) -> Cache {
        Cache {
            store: Store::new(config.capacity.bytes(), config.max_variants),
            enabled: config.enabled,
            heuristics: Heuristics {
                fraction: config.heuristic_fraction,
                max: config.heuristic_max.get(),
            },
            max_object_size: config.max_object_size.bytes(),
        }
    }
}
