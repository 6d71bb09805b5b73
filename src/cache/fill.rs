//! Filling the store from a response body while it streams to the client.
//! The entry is inserted only when the whole body arrived and matched its
//! declared length; a client that leaves, an origin that stops early, or a
//! body past `max_object_size` leaves nothing behind.

use std::sync::Arc;

use bytes::Bytes;

use super::key::Secondary;
use super::policy::StoredResponse;
use super::store::Entry;
use super::Cache;

pub struct Fill {
    cache: Arc<Cache>,
    key: String,
    head: StoredResponse,
    secondary: Secondary,
    chunks: Vec<Bytes>,
    received: u64,
    /// Content-Length, when the origin declared one.
    expected: Option<u64>,
}

impl Fill {
    pub fn new(
        cache: Arc<Cache>,
        key: String,
        head: StoredResponse,
        secondary: Secondary,
        expected: Option<u64>,
    ) -> Fill {
        Fill {
            cache,
            key,
            head,
            secondary,
            chunks: Vec::new(),
            received: 0,
            expected,
        }
    }

    /// Takes a chunk; false when the body outgrew what may be stored (the
    /// caller then drops the fill and keeps streaming).
    pub fn push(&mut self, data: &Bytes) -> bool {
        self.received += data.len() as u64;
        if self.received > self.cache.max_object_size
            || self.expected.is_some_and(|e| self.received > e)
        {
            return false;
        }
        self.chunks.push(data.clone());
        true
    }

    /// The body ended normally: store it if it is whole.
    pub fn finish(self) {
        if self.expected.is_some_and(|e| e != self.received) {
            tracing::debug!(key = %self.key, "body length differs from Content-Length; not stored");
            return;
        }
        // One allocation for the header values and body: hyper's chunks are
        // slices of larger read buffers that must not be kept alive.
        let entry = Entry::compact(self.head, &self.chunks, self.secondary);
        self.cache.store.insert(&self.key, Arc::new(entry));
    }
}
