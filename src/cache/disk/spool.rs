//! A response written to disk while its body streams to the client: for
//! bodies too large for memory (over `[cache] max_object_size`), which
//! never exist whole in memory.
//!
//! The request's task only copies the body into 1 MiB blocks and queues
//! each full block for the writer threads (`Job::Block`); it never waits
//! for the disk. When the writers fall behind (more than `BUDGET` bytes
//! queued across all spools, or a full queue) the spool is abandoned and
//! counted as dropped, as a whole write would be. A writer puts each block
//! at its place in a temporary file, after the room kept for the header;
//! the writer that finishes the last block of a sealed spool writes the
//! header and renames the file into place. A spool that is abandoned, or
//! whose body did not arrive whole, leaves nothing behind.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};

use super::format::{self, BLOCK};
use super::{DiskTier, Job};
use crate::cache::record;
use crate::cache::store::Entry;

/// Block bytes queued for the writers across all spools; past it, a
/// spool is dropped rather than hold more of the client's stream in
/// memory.
pub const BUDGET: u64 = 64 << 20;

/// The writer's side of one spooled response.
pub struct Spool {
    key: String,
    /// The response without its body.
    entry: Entry,
    /// Its encoded record head.
    head: Bytes,
    keep_until: SystemTime,
    /// Where the body starts in the file.
    body_at: u64,
    tmp: PathBuf,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Created by the first block written.
    file: Option<Arc<File>>,
    crcs: Vec<u32>,
    /// Blocks queued or being written.
    outstanding: usize,
    /// The body's length, once it ended whole.
    sealed: Option<u64>,
    /// Abandoned, or a write failed: nothing is kept.
    failed: bool,
    /// A writer is committing it (once): renamed into place unless that
    /// failed.
    claimed: bool,
}

impl Spool {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The temporary file, created by the first write.
    fn file(&self, state: &mut State) -> std::io::Result<Arc<File>> {
        if let Some(file) = &state.file {
            return Ok(file.clone());
        }
        let file = Arc::new(File::create(&self.tmp)?);
        state.file = Some(file.clone());
        Ok(file)
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let state = self.lock();
        let renamed = state.claimed && !state.failed;
        if state.file.is_some() && !renamed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// The request's side: collects the body into blocks and queues them.
pub struct DiskFill {
    tier: Arc<DiskTier>,
    spool: Arc<Spool>,
    block: BytesMut,
    /// Blocks queued so far.
    next: u64,
    received: u64,
    expected: Option<u64>,
}

impl DiskTier {
    /// Starts writing the response `entry` (its head; the body follows by
    /// `DiskFill::push`) under `key`, usable until `keep_until`. `None`
    /// (counted) when its declared length is over the tier's
    /// `max_object_size` or it would be of no use.
    pub fn spool(
        self: &Arc<Self>,
        key: &str,
        entry: Entry,
        keep_until: SystemTime,
        expected: Option<u64>,
    ) -> Option<DiskFill> {
        if expected.is_some_and(|len| len > self.max_object_size) {
            self.stats.write("too-large");
            return None;
        }
        if keep_until <= SystemTime::now() {
            self.stats.write("expired");
            return None;
        }
        let head = record::encode_head(&entry);
        let body_at = format::header_room(key, &head, expected.unwrap_or(self.max_object_size));
        let spool = Spool {
            key: key.to_string(),
            entry,
            head,
            keep_until,
            body_at,
            tmp: self.temporary_name(),
            state: Mutex::default(),
        };
        Some(DiskFill {
            tier: self.clone(),
            spool: Arc::new(spool),
            block: BytesMut::new(),
            next: 0,
            received: 0,
            expected,
        })
    }

    /// A writer: puts block `index` in place; the writer of a sealed
    /// spool's last block commits it.
    pub(super) fn write_block(&self, spool: &Arc<Spool>, index: u64, data: &Bytes) {
        let written = self.put_block(spool, index, data);
        let commit = {
            let mut state = spool.lock();
            state.outstanding -= 1;
            match written {
                Ok(Some(crc)) => {
                    let i = index as usize;
                    if state.crcs.len() <= i {
                        state.crcs.resize(i + 1, 0);
                    }
                    state.crcs[i] = crc;
                }
                Ok(None) => {}
                Err(e) => {
                    if !state.failed {
                        self.write_failed(&e);
                    }
                    state.failed = true;
                }
            }
            state.outstanding == 0 && state.sealed.is_some() && !state.failed
        };
        self.spooled.fetch_sub(data.len() as u64, Ordering::AcqRel);
        if commit {
            self.commit(spool);
        }
    }

    /// Writes the block unless the spool failed; its CRC.
    fn put_block(&self, spool: &Spool, index: u64, data: &Bytes) -> std::io::Result<Option<u32>> {
        let file = {
            let mut state = spool.lock();
            if state.failed {
                return Ok(None);
            }
            spool.file(&mut state)?
        };
        file.write_all_at(data, spool.body_at + index * BLOCK)?;
        Ok(Some(crc32fast::hash(data)))
    }

    /// Writes the header of a spool whose every block is written, renames
    /// the file into place and indexes it.
    pub(super) fn commit(&self, spool: &Arc<Spool>) {
        let (file, crcs, len) = {
            let mut state = spool.lock();
            let ready = !state.failed && !state.claimed && state.outstanding == 0;
            let Some(len) = state.sealed.filter(|_| ready) else {
                return;
            };
            state.claimed = true;
            // (An empty body has no block that made the file.)
            match spool.file(&mut state) {
                Ok(file) => (file, std::mem::take(&mut state.crcs), len),
                Err(e) => {
                    state.failed = true;
                    drop(state);
                    return self.write_failed(&e);
                }
            }
        };
        let header = format::encode_header(
            &spool.key,
            &spool.head,
            spool.keep_until,
            len,
            &crcs,
            spool.body_at,
        );
        let name = format::name_of(&spool.key, &spool.entry);
        let path = super::index::path_of(&self.root, name);
        let placed = file
            .write_all_at(&header, 0)
            .and_then(|()| std::fs::rename(&spool.tmp, &path));
        match placed {
            Ok(()) => {
                let size = spool.body_at + len;
                self.indexed(&spool.key, &spool.entry, name, size, spool.keep_until);
                self.stats.write("stored");
            }
            Err(e) => {
                spool.lock().failed = true;
                self.write_failed(&e);
            }
        }
    }
}

impl DiskFill {
    /// Takes the next body bytes; false when the spool is given up (past
    /// the tier's `max_object_size` or the declared length, or the writers
    /// are behind): the caller drops it.
    pub fn push(&mut self, data: &[u8]) -> bool {
        self.received += data.len() as u64;
        if self.received > self.tier.max_object_size {
            self.tier.stats.write("too-large");
            return false;
        }
        if self.expected.is_some_and(|e| self.received > e) {
            return false;
        }
        let mut rest = data;
        while !rest.is_empty() {
            if self.block.capacity() == 0 {
                let left = self.expected.map_or(BLOCK, |e| e - self.next * BLOCK);
                self.block.reserve(BLOCK.min(left) as usize);
            }
            let room = BLOCK as usize - self.block.len();
            let (now, later) = rest.split_at(room.min(rest.len()));
            self.block.extend_from_slice(now);
            rest = later;
            // The block that completes a declared length is the last.
            let last = rest.is_empty() && self.expected == Some(self.received);
            if self.block.len() as u64 == BLOCK && !self.queue_block(last) {
                return false;
            }
        }
        true
    }

    /// The body ended; it is kept if it is whole (its declared length).
    pub fn finish(mut self) {
        if self.expected.is_some_and(|e| e != self.received) {
            return;
        }
        if self.spool.lock().sealed.is_some() {
            // Its last block went as such.
            return;
        }
        if self.block.is_empty() {
            self.spool.lock().sealed = Some(self.received);
            // A body without a declared length that ended with a full
            // block (or an empty one): every block may be written
            // already, so a job of its own commits it.
            self.tier.queue(Job::Commit(self.spool.clone()));
        } else {
            self.queue_block(true);
        }
    }

    /// Queues the filled block (the last one when `last`); false when the
    /// spool is given up.
    fn queue_block(&mut self, last: bool) -> bool {
        let data = self.block.split().freeze();
        let len = data.len() as u64;
        let tier = &self.tier;
        if tier.spooled.fetch_add(len, Ordering::AcqRel) + len > BUDGET {
            tier.spooled.fetch_sub(len, Ordering::AcqRel);
            tier.stats.write("dropped");
            return false;
        }
        {
            let mut state = self.spool.lock();
            state.outstanding += 1;
            if last {
                state.sealed = Some(self.received);
            }
        }
        let job = Job::Block {
            spool: self.spool.clone(),
            index: self.next,
            data,
        };
        self.next += 1;
        if !tier.queue(job) {
            let mut state = self.spool.lock();
            state.outstanding -= 1;
            state.failed = true;
            tier.spooled.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        true
    }
}

impl Drop for DiskFill {
    fn drop(&mut self) {
        // Cut short (the client left, the origin broke off, too large):
        // the writers skip what is still queued, and the file goes with
        // the spool.
        let mut state = self.spool.lock();
        if state.sealed.is_none() {
            state.failed = true;
        }
    }
}
