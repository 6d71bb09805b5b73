//! A parent proxy or cache peer that could not be reached is passed over
//! for a while (passive marking: the next request that needs it after that
//! tries it again).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a parent or peer that could not be reached is passed over.
pub const DOWN_FOR: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct PassedOver {
    until: Mutex<Option<Instant>>,
}

impl PassedOver {
    pub fn is_up(&self, now: Instant) -> bool {
        self.until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none_or(|until| now >= until)
    }

    /// Reached (`true`): up; not reached: passed over for `DOWN_FOR`.
    pub fn mark(&self, reached: bool) {
        *self.until.lock().unwrap_or_else(|p| p.into_inner()) =
            (!reached).then(|| Instant::now() + DOWN_FOR);
    }
}
