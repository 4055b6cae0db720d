//! The reactor's timers: a min-heap of deadlines. The poll timeout is the time
//! left until the nearest one (redis `ae.c`'s rule).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

pub struct Timers<T: Ord> {
    heap: BinaryHeap<Reverse<(Instant, T)>>,
}

impl<T: Ord> Timers<T> {
    pub fn new() -> Timers<T> {
        Timers {
            heap: BinaryHeap::new(),
        }
    }

    pub fn schedule(&mut self, at: Instant, what: T) {
        self.heap.push(Reverse((at, what)));
    }

    /// How long the reactor may sleep: until the nearest deadline, or forever.
    pub fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        self.heap
            .peek()
            .map(|Reverse((at, _))| at.saturating_duration_since(now))
    }

    /// Removes and returns one timer whose deadline has come.
    pub fn pop_due(&mut self, now: Instant) -> Option<T> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse((_, what))| what),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_deadline_first() {
        let start = Instant::now();
        let mut timers = Timers::new();
        timers.schedule(start + Duration::from_millis(30), "late");
        timers.schedule(start + Duration::from_millis(10), "early");
        assert_eq!(timers.poll_timeout(start), Some(Duration::from_millis(10)));
        assert_eq!(timers.pop_due(start), None);
        assert_eq!(
            timers.pop_due(start + Duration::from_millis(40)),
            Some("early")
        );
        assert_eq!(
            timers.pop_due(start + Duration::from_millis(40)),
            Some("late")
        );
        assert_eq!(timers.poll_timeout(start), None);
    }
}
