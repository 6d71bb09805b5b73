//! Forgetting what a desynchronised origin connection filled.

use std::sync::Arc;

use crate::cache::Cache;

/// When an origin connection turns out to have sent a response nobody asked
/// for, the answers it gave before may each have been one request behind:
/// the cache forgets every entry filled over that connection (recent ones,
/// see `upstream::socket`), so a desynchronised origin cannot leave poisoned
/// hits behind. Returns the sender the upstream pools report them on.
pub(super) fn forget_suspects(cache: Arc<Cache>) -> crate::upstream::Suspects {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<String>>();
    tokio::spawn(async move {
        while let Some(keys) = rx.recv().await {
            // Every tier: memory, disk and the shared one.
            let removed = keys.iter().filter(|k| cache.invalidate(k)).count();
            tracing::warn!(
                removed,
                "an origin sent an unsolicited response; entries filled over that connection were removed"
            );
            // A fill whose body ended just as the desync was found may store
            // a moment after the removal above: look again shortly.
            let cache = cache.clone();
            tokio::spawn(async move {
                for wait in [50, 500] {
                    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                    for key in &keys {
                        cache.invalidate(key);
                    }
                }
            });
        }
    });
    tx
}
