//! The rise/fall rule of active health checks (upstream groups and cache
//! peers): `fall` failures in a row take a server out, `rise` passes in a
//! row bring it back.

#[derive(Default)]
pub struct Streak {
    passes: u32,
    failures: u32,
}

impl Streak {
    /// Records one check of a server now `down` (or up); `Some(up)` when
    /// its state should change to `up`.
    pub fn record(&mut self, ok: bool, down: bool, rise: u32, fall: u32) -> Option<bool> {
        if ok {
            self.passes += 1;
            self.failures = 0;
            (down && self.passes >= rise).then_some(true)
        } else {
            self.failures += 1;
            self.passes = 0;
            (!down && self.failures >= fall).then_some(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall_count_in_a_row() {
        let mut s = Streak::default();
        assert_eq!(s.record(false, false, 2, 2), None);
        assert_eq!(s.record(true, false, 2, 2), None);
        assert_eq!(s.record(false, false, 2, 2), None);
        assert_eq!(s.record(false, false, 2, 2), Some(false));
        assert_eq!(s.record(true, true, 2, 2), None);
        assert_eq!(s.record(true, true, 2, 2), Some(true));
    }
}
