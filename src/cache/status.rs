//! What the cache did for one response: rendered as the RFC 9211
//! `Cache-Status` field, and as a short label for logs and metrics.

use std::fmt::Write as _;

use http::HeaderValue;

use super::policy::NotStored;

/// Why a request went forward (RFC 9211 §2.2 `fwd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fwd {
    /// The cache was configured or asked not to be used (ranges, cache off).
    Bypass,
    /// The method is not served from cache.
    Method,
    /// Nothing was stored for the URL.
    UriMiss,
    /// Something was stored for the URL, not for this request's Vary fields.
    VaryMiss,
    /// The stored response was stale (or must always be revalidated).
    Stale,
    /// The client asked for a fresh or validated response.
    Request,
    /// Part of the object was stored (some of its slices): the rest was
    /// fetched.
    Partial,
}

impl Fwd {
    fn as_str(self) -> &'static str {
        match self {
            Fwd::Bypass => "bypass",
            Fwd::Method => "method",
            Fwd::UriMiss => "uri-miss",
            Fwd::VaryMiss => "vary-miss",
            Fwd::Stale => "stale",
            Fwd::Request => "request",
            Fwd::Partial => "partial",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from cache; `ttl` is the freshness left (negative: stale,
    /// allowed by the client).
    Hit { ttl: i64 },
    /// Went to the origin.
    Forward {
        fwd: Fwd,
        /// The origin's status, when it answered.
        status: Option<u16>,
        outcome: Stored,
    },
    /// Answered from another request's fetch of the same URL (collapsed).
    Collapsed { fwd: Fwd, status: u16, ttl: i64 },
    /// A stale stored response served on purpose: while it is revalidated in
    /// the background, or because the origin failed (RFC 5861).
    StaleServed {
        ttl: i64,
        fwd_status: Option<u16>,
        reason: &'static str,
    },
    /// Answered by the proxy without cache or origin (errors, refusals).
    Local { detail: &'static str },
    /// Served from a tier below memory (`detail=shared`), now in memory too.
    TierHit { ttl: i64, tier: Tier },
}

/// The cache tiers below memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// `[cache.shared]`: Redis, shared by every node.
    Shared,
    /// `[cache.disk]`: this node's disk.
    Disk,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Shared => "shared",
            Tier::Disk => "disk",
        }
    }
}

/// What happened to the forwarded response in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Stored (or updated) with `ttl` seconds of freshness.
    Yes {
        ttl: i64,
    },
    No(NotStored),
    /// Nothing to store (errors before a response, unsafe methods).
    NotApplicable(&'static str),
}

impl CacheStatus {
    /// Every value `as_str` returns, in `label_index` order.
    pub const LABELS: [&'static str; 8] = [
        "hit",
        "stale",
        "collapsed",
        "revalidated",
        "refresh",
        "miss",
        "pass",
        "local",
    ];

    /// Position of `as_str()` in `LABELS` (for metric tables without lookups).
    pub fn label_index(&self) -> usize {
        let label = self.as_str();
        Self::LABELS
            .iter()
            .position(|l| *l == label)
            .unwrap_or(Self::LABELS.len() - 1)
    }

    /// A bounded label for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            CacheStatus::Hit { ttl } if *ttl <= 0 => "stale",
            CacheStatus::Hit { .. } | CacheStatus::TierHit { .. } => "hit",
            CacheStatus::Forward {
                fwd: Fwd::Stale | Fwd::Request,
                status: Some(304),
                ..
            } => "revalidated",
            CacheStatus::Forward {
                fwd: Fwd::Stale | Fwd::Request,
                ..
            } => "refresh",
            CacheStatus::Forward {
                fwd: Fwd::UriMiss | Fwd::VaryMiss | Fwd::Partial,
                ..
            } => "miss",
            CacheStatus::Forward {
                fwd: Fwd::Method | Fwd::Bypass,
                ..
            } => "pass",
            CacheStatus::Collapsed { .. } => "collapsed",
            CacheStatus::StaleServed { .. } => "stale",
            CacheStatus::Local { .. } => "local",
        }
    }

    pub fn is_hit(&self) -> bool {
        matches!(self, CacheStatus::Hit { .. } | CacheStatus::TierHit { .. })
    }

    /// `viaduct; hit; ttl=42`, `viaduct; fwd=uri-miss; fwd-status=200; stored; ttl=60`, ...
    pub fn header_value(&self, cache_name: &str) -> HeaderValue {
        let mut s = String::with_capacity(64);
        s.push_str(cache_name);
        match self {
            CacheStatus::Hit { ttl } => {
                // The hit path: no formatting machinery.
                s.push_str("; hit; ttl=");
                s.push_str(itoa::Buffer::new().format(*ttl));
            }
            CacheStatus::Forward {
                fwd,
                status,
                outcome,
            } => {
                let _ = write!(s, "; fwd={}", fwd.as_str());
                if let Some(status) = status {
                    let _ = write!(s, "; fwd-status={status}");
                }
                match outcome {
                    Stored::Yes { ttl } => {
                        let _ = write!(s, "; stored; ttl={ttl}");
                    }
                    Stored::No(why) => {
                        let _ = write!(s, "; detail={}", why.as_str());
                    }
                    Stored::NotApplicable(detail) => {
                        if !detail.is_empty() {
                            let _ = write!(s, "; detail={detail}");
                        }
                    }
                }
            }
            CacheStatus::Collapsed { fwd, status, ttl } => {
                let _ = write!(
                    s,
                    "; fwd={}; fwd-status={status}; collapsed; ttl={ttl}",
                    fwd.as_str()
                );
            }
            CacheStatus::StaleServed {
                ttl,
                fwd_status,
                reason,
            } => {
                let _ = write!(s, "; hit; ttl={ttl}; fwd=stale");
                if let Some(status) = fwd_status {
                    let _ = write!(s, "; fwd-status={status}");
                }
                let _ = write!(s, "; detail={reason}");
            }
            CacheStatus::Local { detail } => {
                let _ = write!(s, "; detail={detail}");
            }
            CacheStatus::TierHit { ttl, tier } => {
                let _ = write!(s, "; hit; ttl={ttl}; detail={}", tier.as_str());
            }
        }
        // Hands the buffer over instead of copying it.
        HeaderValue::from_maybe_shared(bytes::Bytes::from(s))
            .unwrap_or_else(|_| HeaderValue::from_static("viaduct"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rfc9211_parameters() {
        assert_eq!(
            CacheStatus::Hit { ttl: 3588 }.header_value("viaduct"),
            "viaduct; hit; ttl=3588"
        );
        let miss = CacheStatus::Forward {
            fwd: Fwd::UriMiss,
            status: Some(200),
            outcome: Stored::Yes { ttl: 60 },
        };
        assert_eq!(
            miss.header_value("v"),
            "v; fwd=uri-miss; fwd-status=200; stored; ttl=60"
        );
        assert_eq!(miss.as_str(), "miss");
        let reval = CacheStatus::Forward {
            fwd: Fwd::Stale,
            status: Some(304),
            outcome: Stored::Yes { ttl: 10 },
        };
        assert_eq!(
            reval.header_value("v"),
            "v; fwd=stale; fwd-status=304; stored; ttl=10"
        );
        assert_eq!(reval.as_str(), "revalidated");
        let not = CacheStatus::Forward {
            fwd: Fwd::UriMiss,
            status: Some(200),
            outcome: Stored::No(NotStored::NoStore),
        };
        assert_eq!(
            not.header_value("v"),
            "v; fwd=uri-miss; fwd-status=200; detail=no-store"
        );
        let shared = CacheStatus::TierHit {
            ttl: 9,
            tier: Tier::Shared,
        };
        assert_eq!(shared.header_value("v"), "v; hit; ttl=9; detail=shared");
        assert!(shared.is_hit() && shared.as_str() == "hit");
        assert_eq!(
            CacheStatus::Local { detail: "no-route" }.header_value("v"),
            "v; detail=no-route"
        );
    }
}
