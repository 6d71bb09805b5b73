//! A large variant's body, streamed from its file one checked block at a
//! time.

use std::sync::Arc;

use bytes::Bytes;

use super::format::{self, Fail, Wait};
use super::DiskTier;
use crate::cache::store::Entry;
use crate::http::body::BoxError;

/// A large variant on disk: its header and open file.
pub struct Streamed {
    pub(super) header: format::Header,
    pub(super) file: Arc<std::fs::File>,
    pub(super) key: String,
    pub(super) tier: Arc<DiskTier>,
}

impl Streamed {
    /// The response without its body.
    pub fn entry(&self) -> &Entry {
        &self.header.entry
    }

    pub fn body_len(&self) -> u64 {
        self.header.body_len
    }

    /// Bytes `start..=end` of the body, read and checked one block at a
    /// time (at most two blocks ahead of the client); a block that fails
    /// its check ends the body with an error, and the record is removed.
    pub fn stream(
        self: &Arc<Self>,
        start: u64,
        end: u64,
    ) -> tokio::sync::mpsc::Receiver<Result<Bytes, BoxError>> {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            for i in start / format::BLOCK..=end / format::BLOCK {
                let block = match me.header.block(&me.file, i, Wait::Yes) {
                    Ok(block) => block,
                    // Not with Wait::Yes; ends the body rather than panic.
                    Err(Fail::Blocked) => {
                        let _ = tx.blocking_send(Err("disk read refused".into()));
                        return;
                    }
                    Err(Fail::Bad(bad)) => {
                        me.tier.damaged(&me.key, &me.header, bad);
                        let _ = tx.blocking_send(Err(bad.to_string().into()));
                        return;
                    }
                };
                let at = i * format::BLOCK;
                let from = start.saturating_sub(at) as usize;
                let to = ((end + 1 - at) as usize).min(block.len());
                if tx.blocking_send(Ok(block.slice(from..to))).is_err() {
                    return;
                }
            }
        });
        rx
    }
}
