//! The cache settings a configuration reload may change while entries stay:
//! each is an atomic read with `Relaxed` ordering on the hit path (a request
//! that races a reload sees the old or the new value, both valid), so no
//! lock and no shared counter is touched per request. The capacity is not
//! here: moka cannot resize a built cache.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::time::Duration;

use super::policy::Heuristics;
use crate::config::{CacheConfig, SetCookie};

#[derive(Debug)]
pub struct Tunables {
    enabled: AtomicBool,
    /// `f64::to_bits` of the heuristic fraction (RFC 9111 §4.2.2).
    heuristic_fraction: AtomicU64,
    heuristic_max_ms: AtomicU64,
    max_object_size: AtomicU64,
    /// Default stale windows in seconds (RFC 5861), when a response names none.
    default_swr: AtomicU64,
    default_sie: AtomicU64,
    /// `[cache] stale_if_unreachable` in seconds.
    stale_if_unreachable: AtomicU64,
    /// `[cache] set_cookie` as its position in `SET_COOKIE`.
    set_cookie: AtomicU8,
    /// `[cache] slice_size` in bytes; 0: range storage off.
    slice_size: AtomicU64,
}

const SET_COOKIE: [SetCookie; 3] = [SetCookie::Explicit, SetCookie::Pass, SetCookie::Store];

impl Tunables {
    pub fn new(config: &CacheConfig) -> Tunables {
        let tunables = Tunables {
            enabled: AtomicBool::new(false),
            heuristic_fraction: AtomicU64::new(0),
            heuristic_max_ms: AtomicU64::new(0),
            max_object_size: AtomicU64::new(0),
            default_swr: AtomicU64::new(0),
            default_sie: AtomicU64::new(0),
            set_cookie: AtomicU8::new(0),
            stale_if_unreachable: AtomicU64::new(0),
            slice_size: AtomicU64::new(0),
        };
        tunables.set(config);
        tunables
    }

    /// Takes every value from `config` (a reload).
    pub fn set(&self, config: &CacheConfig) {
        self.enabled.store(config.enabled, Relaxed);
        self.heuristic_fraction
            .store(config.heuristic_fraction.to_bits(), Relaxed);
        let max_ms = u64::try_from(config.heuristic_max.get().as_millis()).unwrap_or(u64::MAX);
        self.heuristic_max_ms.store(max_ms, Relaxed);
        self.max_object_size
            .store(config.max_object_size.bytes(), Relaxed);
        self.default_swr
            .store(config.stale_while_revalidate.get().as_secs(), Relaxed);
        self.default_sie
            .store(config.stale_if_error.get().as_secs(), Relaxed);
        self.stale_if_unreachable
            .store(config.stale_if_unreachable.get().as_secs(), Relaxed);
        let position = SET_COOKIE.iter().position(|s| *s == config.set_cookie);
        self.set_cookie.store(position.unwrap_or(0) as u8, Relaxed);
        self.slice_size.store(config.slice_size.bytes(), Relaxed);
    }

    pub fn slice_size(&self) -> u64 {
        self.slice_size.load(Relaxed)
    }

    pub fn stale_if_unreachable(&self) -> u64 {
        self.stale_if_unreachable.load(Relaxed)
    }

    pub fn set_cookie(&self) -> SetCookie {
        SET_COOKIE[usize::from(self.set_cookie.load(Relaxed)) % SET_COOKIE.len()]
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Relaxed)
    }

    pub fn heuristics(&self) -> Heuristics {
        Heuristics {
            fraction: f64::from_bits(self.heuristic_fraction.load(Relaxed)),
            max: Duration::from_millis(self.heuristic_max_ms.load(Relaxed)),
        }
    }

    pub fn max_object_size(&self) -> u64 {
        self.max_object_size.load(Relaxed)
    }

    pub fn default_swr(&self) -> u64 {
        self.default_swr.load(Relaxed)
    }

    pub fn default_sie(&self) -> u64 {
        self.default_sie.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_changes_every_value() {
        let mut config = CacheConfig::default();
        let tunables = Tunables::new(&config);
        config.enabled = !config.enabled;
        config.heuristic_fraction = 0.25;
        config.heuristic_max = crate::config::Dur(Duration::from_secs(7));
        config.max_object_size = crate::config::Size(1234);
        config.stale_while_revalidate = crate::config::Dur(Duration::from_secs(5));
        config.stale_if_error = crate::config::Dur(Duration::from_secs(6));
        config.set_cookie = SetCookie::Store;
        config.slice_size = crate::config::Size(4096);
        tunables.set(&config);
        assert_eq!(tunables.slice_size(), 4096);
        assert_eq!(tunables.set_cookie(), SetCookie::Store);
        assert_eq!(tunables.enabled(), config.enabled);
        assert_eq!(
            tunables.heuristics(),
            Heuristics {
                fraction: 0.25,
                max: Duration::from_secs(7)
            }
        );
        assert_eq!(tunables.max_object_size(), 1234);
        assert_eq!((tunables.default_swr(), tunables.default_sie()), (5, 6));
    }
}
