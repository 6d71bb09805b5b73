//! What a route asks of the cache beyond RFC 9111's defaults: chosen per
//! reverse route from `[cache]` and the route's own keys, and fixed for
//! forward traffic. The pipeline carries one `Arc<CacheRules>` per request.

use std::sync::{Arc, LazyLock};

use http::HeaderName;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CacheRules {
    /// Targeted cache-control fields (RFC 9213) this cache obeys, in order
    /// of precedence; empty: only Cache-Control and Expires count.
    pub targeted_fields: Box<[HeaderName]>,
}

impl CacheRules {
    /// Forward-proxy traffic: targeted fields speak to the origin's CDN, not
    /// to a proxy its visitors chose, so none is read.
    pub fn forward() -> Arc<CacheRules> {
        static FORWARD: LazyLock<Arc<CacheRules>> =
            LazyLock::new(|| Arc::new(CacheRules::default()));
        FORWARD.clone()
    }
}
