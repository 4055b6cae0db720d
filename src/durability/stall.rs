//! Whether the log is stalled: records wait for the disk, and it has taken
//! none of them for [`STALL`]. A full disk refuses writes and says so; a
//! hung one (fsyncs or writes that do not return) says nothing, so the
//! reactor tells it from the log's positions, which stop moving (checked at
//! each heartbeat, store maintenance tick and log wake, so it is told up to
//! a tick late). The
//! positions also stand still while the writer writes a snapshot for more
//! than that (the log's records queue behind it), and a snapshot's first
//! part would wait as long. A slow disk whose log still moves is not
//! stalled.
//!
//! A strong cluster's node whose log is stalled or refused hands no
//! snapshot (a snapshot waits for its source's log: `cluster/total_order`),
//! so its flush says its log is stuck, and a view lists it after the
//! sources whose logs move. That order changes nothing else, so calling a
//! log stuck too early costs at most a snapshot from another node.

use std::time::{Duration, Instant};

/// How long a log with records waiting may take none of them before it is
/// stalled. A healthy disk's fsync takes milliseconds; one that takes a
/// second keeps a peer waiting that another source's disk would not.
pub const STALL: Duration = Duration::from_secs(1);

/// The log's progress as the reactor last saw it.
#[derive(Debug, Default)]
pub struct Stall {
    /// The positions written and fsynced, and since when they have not
    /// moved while records waited; `None` while nothing waits.
    waiting: Option<((u64, u64), Instant)>,
    /// What [`Stall::stalled`] said last.
    last: bool,
}

impl Stall {
    /// Whether the log is stalled at `now`: `behind` (records wait for the
    /// disk), and `positions` (written, fsynced) have not moved for
    /// [`STALL`].
    pub fn stalled(&mut self, behind: bool, positions: (u64, u64), now: Instant) -> bool {
        if !behind {
            self.waiting = None;
            self.last = false;
            return false;
        }
        self.last = match self.waiting {
            Some((seen, since)) if seen == positions => now.duration_since(since) >= STALL,
            _ => {
                self.waiting = Some((positions, now));
                false
            }
        };
        self.last
    }

    /// What [`Stall::stalled`] said last.
    pub fn is_stalled(&self) -> bool {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_that_takes_nothing_while_records_wait_is_stalled_after_a_while() {
        let start = Instant::now();
        let mut stall = Stall::default();
        assert!(!stall.stalled(true, (10, 5), start));
        assert!(!stall.stalled(true, (10, 5), start + STALL / 2));
        assert!(stall.stalled(true, (10, 5), start + STALL));
        // It moved: not stalled, and the wait starts over.
        assert!(!stall.stalled(true, (10, 8), start + STALL));
        assert!(!stall.stalled(true, (10, 8), start + STALL * 3 / 2));
        assert!(stall.stalled(true, (10, 8), start + STALL * 2));
    }

    #[test]
    fn a_log_with_nothing_waiting_is_never_stalled() {
        let start = Instant::now();
        let mut stall = Stall::default();
        assert!(!stall.stalled(false, (10, 10), start));
        assert!(!stall.stalled(false, (10, 10), start + STALL * 10));
        // Records wait from now on: the time before does not count.
        assert!(!stall.stalled(true, (10, 10), start + STALL * 10));
        assert!(!stall.stalled(true, (10, 10), start + STALL * 21 / 2));
        assert!(!stall.stalled(false, (12, 12), start + STALL * 11));
        assert!(!stall.stalled(true, (12, 12), start + STALL * 12));
    }
}
