//! Per-thread batches of access lines and the writer thread that empties them.
//!
//! A request's line is formatted on the thread that finishes the request and
//! appended to that thread's slot. A batch of ~32 KiB goes to the writer whole,
//! through a bounded queue; the writer also takes every non-empty slot every
//! 50 ms, so a quiet proxy's lines appear within ~100 ms. Nothing here blocks a
//! request: when the queue is full (a slow disk, a blocked pipe), the batch is
//! dropped and its lines counted.

use std::cell::{Cell, RefCell};
use std::io::{self, Write};
use std::mem;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::sharded::Counter;
use tokio::sync::oneshot;

/// A batch goes to the writer once it holds this many bytes.
const BATCH_BYTES: usize = 32 * 1024;
/// Room for the line that crosses `BATCH_BYTES`, so a batch rarely reallocates.
const BATCH_CAPACITY: usize = BATCH_BYTES + 4 * 1024;
/// Buffers that grew past this (huge lines) are freed, not reused.
const KEEP_CAPACITY: usize = 1024 * 1024;
/// The per-thread line buffer is freed past this.
const KEEP_LINE: usize = 64 * 1024;
/// Batches waiting for the writer; a batch that finds the queue full is dropped.
const QUEUE: usize = 64;
/// How often the writer takes the batches of quiet threads.
const SWEEP: Duration = Duration::from_millis(50);
/// How long a flush (shutdown, drop) waits for a writer that may be stuck.
const FLUSH_WAIT: Duration = Duration::from_secs(5);

/// Where lines go. Written unbuffered: one `write_all` per batch.
pub enum Output {
    Stdout,
    Stderr,
    File(std::fs::File),
}

impl Output {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Output::Stdout => io::stdout().lock().write_all(bytes),
            Output::Stderr => io::stderr().lock().write_all(bytes),
            Output::File(file) => file.write_all(bytes),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::Stdout => io::stdout().flush(),
            Output::Stderr => io::stderr().flush(),
            Output::File(file) => file.flush(),
        }
    }
}

#[derive(Default)]
struct Batch {
    buf: Vec<u8>,
    lines: u64,
}

/// One thread's batch. Its own cache lines: only that thread and, every 50 ms,
/// the writer lock it, so the lock is uncontended and no line is shared.
#[repr(align(128))]
#[derive(Default)]
struct Slot(Mutex<Batch>);

enum Msg {
    Batch(Batch),
    /// Look at the flush requests now.
    Wake,
}

/// What the request threads and the writer share.
struct Core {
    slots: Box<[Slot]>,
    /// Emptied buffers, returned by the writer.
    free: Mutex<Vec<Vec<u8>>>,
    flushes: Mutex<Vec<oneshot::Sender<()>>>,
    dropped: Counter,
}

/// The batching side of an open access log.
pub struct Lines {
    /// Keys this log's entry in each thread's slot table.
    id: u64,
    next_slot: AtomicUsize,
    core: Arc<Core>,
    /// `None` only while dropping, to close the queue.
    queue: Option<SyncSender<Msg>>,
    /// Disconnects when the writer has exited.
    done: Mutex<Receiver<()>>,
}

thread_local! {
    /// (log id, slot index) for the logs this thread wrote to, direct-mapped by
    /// id: one process can run several proxies, each with its own log.
    static SLOT_OF: [Cell<(u64, usize)>; 4] = const { [const { Cell::new((0, 0)) }; 4] };
    /// The line being formatted, reused by every request on this thread.
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Lines {
    /// Starts the writer thread. `threads`: how many threads finish requests
    /// (one slot each; more threads share slots, which stays correct).
    pub fn start(out: Output, threads: usize, dropped: Counter) -> io::Result<Lines> {
        static IDS: AtomicU64 = AtomicU64::new(1);
        let core = Arc::new(Core {
            slots: (0..threads.clamp(1, 256))
                .map(|_| Slot::default())
                .collect(),
            free: Mutex::default(),
            flushes: Mutex::default(),
            dropped,
        });
        let (queue, rx) = mpsc::sync_channel(QUEUE);
        let (done_tx, done) = mpsc::channel();
        let writer = core.clone();
        std::thread::Builder::new()
            .name("viaduct-access-log".into())
            .spawn(move || writer.run(rx, out, done_tx))?;
        Ok(Lines {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            next_slot: AtomicUsize::new(0),
            core,
            queue: Some(queue),
            done: Mutex::new(done),
        })
    }

    /// Appends the line `format` writes (ending in `\n`) to this thread's batch.
    pub fn push(&self, format: impl FnOnce(&mut Vec<u8>)) {
        let slot = self.slot();
        let full = with_line(|line| {
            format(line);
            let mut batch = lock(&slot.0);
            if batch.buf.capacity() == 0 {
                batch.buf = self.core.spare();
            }
            batch.buf.extend_from_slice(line);
            batch.lines += 1;
            (batch.buf.len() >= BATCH_BYTES).then(|| {
                let fresh = self.core.spare();
                mem::replace(
                    &mut *batch,
                    Batch {
                        buf: fresh,
                        lines: 0,
                    },
                )
            })
        });
        if let Some(batch) = full {
            self.send(batch);
        }
    }

    fn slot(&self) -> &Slot {
        let slots = &self.core.slots;
        let index = SLOT_OF
            .try_with(|table| {
                let entry = &table[self.id as usize % table.len()];
                match entry.get() {
                    (id, index) if id == self.id => index,
                    _ => {
                        let index = self.next_slot.fetch_add(1, Ordering::Relaxed) % slots.len();
                        entry.set((self.id, index));
                        index
                    }
                }
            })
            .unwrap_or(0);
        &slots[index]
    }

    fn send(&self, batch: Batch) {
        let Some(queue) = &self.queue else { return };
        match queue.try_send(Msg::Batch(batch)) {
            Ok(()) => {}
            Err(TrySendError::Full(msg) | TrySendError::Disconnected(msg)) => {
                if let Msg::Batch(batch) = msg {
                    self.core.lose(batch);
                }
            }
        }
    }

    /// Has the writer write every line so far and flush. Returns false if the
    /// writer did not finish within `FLUSH_WAIT` (stuck on its output).
    pub async fn flush(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        lock(&self.core.flushes).push(tx);
        if let Some(queue) = &self.queue {
            // A full queue means the writer is awake and sees the request anyway.
            let _ = queue.try_send(Msg::Wake);
        }
        matches!(tokio::time::timeout(FLUSH_WAIT, rx).await, Ok(Ok(())))
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        // The writer sees the queue close, writes every slot, flushes and exits.
        self.queue = None;
        let _ = self
            .done
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .recv_timeout(FLUSH_WAIT);
    }
}

/// Runs `f` with this thread's line buffer, emptied.
fn with_line<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    let mut f = Some(f);
    let reused = LINE.try_with(|line| {
        let mut line = line.try_borrow_mut().ok()?;
        line.clear();
        let result = f.take()?(&mut line);
        if line.capacity() > KEEP_LINE {
            *line = Vec::new();
        }
        Some(result)
    });
    match (reused, f) {
        (Ok(Some(result)), _) => result,
        // Thread teardown: no thread-local left.
        (_, Some(f)) => f(&mut Vec::new()),
        (_, None) => unreachable!("the line was formatted"),
    }
}

impl Core {
    fn spare(&self) -> Vec<u8> {
        lock(&self.free)
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BATCH_CAPACITY))
    }

    fn recycle(&self, mut buf: Vec<u8>) {
        if buf.capacity() <= KEEP_CAPACITY {
            buf.clear();
            lock(&self.free).push(buf);
        }
    }

    /// Drops a batch's lines (rare: counted per batch).
    fn lose(&self, batch: Batch) {
        self.dropped.inc_by(batch.lines);
        self.recycle(batch.buf);
    }

    fn write(&self, out: &mut Output, batch: Batch) {
        if out.write_all(&batch.buf).is_err() {
            self.lose(batch);
        } else {
            self.recycle(batch.buf);
        }
    }

    /// Takes and writes every non-empty slot's batch.
    fn sweep(&self, out: &mut Output) {
        let mut spare = None;
        for slot in self.slots.iter() {
            let fresh = spare.take().unwrap_or_else(|| self.spare());
            let mut batch = lock(&slot.0);
            if batch.lines == 0 {
                spare = Some(fresh);
                continue;
            }
            let taken = mem::replace(
                &mut *batch,
                Batch {
                    buf: fresh,
                    lines: 0,
                },
            );
            drop(batch);
            self.write(out, taken);
        }
        if let Some(spare) = spare {
            self.recycle(spare);
        }
    }

    fn run(self: Arc<Core>, rx: Receiver<Msg>, mut out: Output, _done: mpsc::Sender<()>) {
        let mut next_sweep = Instant::now() + SWEEP;
        loop {
            let closed = match rx.recv_timeout(next_sweep.saturating_duration_since(Instant::now()))
            {
                Ok(Msg::Batch(batch)) => {
                    self.write(&mut out, batch);
                    false
                }
                Ok(Msg::Wake) | Err(RecvTimeoutError::Timeout) => false,
                Err(RecvTimeoutError::Disconnected) => true,
            };
            let flushes = mem::take(&mut *lock(&self.flushes));
            let flush = closed || !flushes.is_empty();
            if flush || Instant::now() >= next_sweep {
                // Queued batches are older than the slots': write them first so
                // each thread's lines stay in order.
                for _ in 0..QUEUE {
                    match rx.try_recv() {
                        Ok(Msg::Batch(batch)) => self.write(&mut out, batch),
                        Ok(Msg::Wake) => {}
                        Err(_) => break,
                    }
                }
                self.sweep(&mut out);
                next_sweep = Instant::now() + SWEEP;
            }
            if flush {
                let _ = out.flush();
                for done in flushes {
                    let _ = done.send(());
                }
            }
            if closed {
                return;
            }
        }
    }
}
