//! Wake-ups that a connection's parts send each other while we are polling
//! them, folded into one more round of the same poll.
//!
//! Driving hyper's client connection in the request's own task (`conn.rs`)
//! means its parts wake that task all the time: the connection hands the
//! response head over a oneshot and body chunks over a channel, and the body
//! asks the connection for more. Each such wake happens while we are already
//! polling both ends, yet the runtime would poll the whole task (hyper's
//! server connection, the request's state machine) once more for it. Here the
//! parts get a waker of their own: a wake that arrives during our poll only
//! marks the round as worth repeating; one that arrives later (the socket
//! became readable) wakes the task as usual.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// Rounds before giving the runtime its turn back (a part that wakes itself
/// for ever must not keep the worker).
const ROUNDS: usize = 8;

pub struct Fold {
    shared: Arc<Shared>,
    waker: Waker,
}

struct Shared {
    /// The task's own waker, from its latest poll.
    task: Mutex<Option<Waker>>,
    polling: AtomicBool,
    woken: AtomicBool,
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // SeqCst on both sides: either the poller sees `woken` after it
        // clears `polling`, or this sees `polling` cleared and wakes the task.
        self.woken.store(true, SeqCst);
        if !self.polling.load(SeqCst) {
            let task = self.task.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(task) = task.as_ref() {
                task.wake_by_ref();
            }
        }
    }
}

impl Fold {
    pub fn new() -> Fold {
        let shared = Arc::new(Shared {
            task: Mutex::new(None),
            polling: AtomicBool::new(false),
            woken: AtomicBool::new(false),
        });
        let waker = Waker::from(shared.clone());
        Fold { shared, waker }
    }

    /// Runs `f` (which may wake the connection, e.g. by queueing a request
    /// on it) without waking the task: the caller polls next anyway.
    pub fn quietly<R>(&self, f: impl FnOnce() -> R) -> R {
        self.shared.polling.store(true, SeqCst);
        let result = f();
        self.shared.polling.store(false, SeqCst);
        result
    }

    /// Runs `poll` with the folding waker until it is ready, or until a
    /// round passes with no wake from inside it.
    ///
    /// A wake folded into the round that turned out ready is dropped: it
    /// asked for a poll of the connection, and whoever holds the connection
    /// polls it again before waiting on it (`Conn::ready`, `Conn::send`,
    /// `OriginBody::poll_frame`, the pool's checkout).
    pub fn poll<R>(
        &self,
        cx: &mut Context<'_>,
        mut poll: impl FnMut(&mut Context<'_>) -> Poll<R>,
    ) -> Poll<R> {
        {
            let mut task = self.shared.task.lock().unwrap_or_else(|p| p.into_inner());
            match task.as_ref() {
                Some(known) if known.will_wake(cx.waker()) => {}
                _ => *task = Some(cx.waker().clone()),
            }
        }
        let mut inner = Context::from_waker(&self.waker);
        for _ in 0..ROUNDS {
            self.shared.woken.store(false, SeqCst);
            self.shared.polling.store(true, SeqCst);
            let result = poll(&mut inner);
            self.shared.polling.store(false, SeqCst);
            if result.is_ready() {
                return result;
            }
            if !self.shared.woken.load(SeqCst) {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    fn task() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (count.clone(), Waker::from(count))
    }

    #[test]
    fn a_wake_during_the_poll_is_another_round_not_a_task_wake() {
        let (count, waker) = task();
        let mut cx = Context::from_waker(&waker);
        let fold = Fold::new();
        let mut rounds = 0;
        // Like a driver that hands a response over a oneshot it wakes.
        let polled = fold.poll(&mut cx, |inner| {
            rounds += 1;
            if rounds == 1 {
                inner.waker().wake_by_ref();
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        });
        assert!(polled.is_ready());
        assert_eq!(rounds, 2);
        assert_eq!(count.0.load(SeqCst), 0);
    }

    #[test]
    fn a_wake_after_the_poll_wakes_the_task() {
        let (count, waker) = task();
        let mut cx = Context::from_waker(&waker);
        let fold = Fold::new();
        let mut registered = None;
        let polled: Poll<()> = fold.poll(&mut cx, |inner| {
            registered = Some(inner.waker().clone());
            Poll::Pending
        });
        assert!(polled.is_pending());
        assert_eq!(count.0.load(SeqCst), 0);
        // The socket became readable later.
        registered.unwrap().wake();
        assert_eq!(count.0.load(SeqCst), 1);
    }

    #[test]
    fn a_part_that_always_wakes_itself_gives_the_worker_back() {
        let (count, waker) = task();
        let mut cx = Context::from_waker(&waker);
        let fold = Fold::new();
        let polled: Poll<()> = fold.poll(&mut cx, |inner| {
            inner.waker().wake_by_ref();
            Poll::Pending
        });
        assert!(polled.is_pending());
        assert_eq!(count.0.load(SeqCst), 1, "the task is polled again later");
    }

    #[test]
    fn a_wake_queued_quietly_is_not_a_task_wake() {
        let (count, waker) = task();
        let fold = Fold::new();
        let _ = fold.poll(&mut Context::from_waker(&waker), |_| Poll::<()>::Pending);
        let inner = fold.waker.clone();
        fold.quietly(|| inner.wake_by_ref());
        assert_eq!(count.0.load(SeqCst), 0);
    }
}
