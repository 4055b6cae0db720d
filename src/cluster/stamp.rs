//! Lamport clocks and the stamps that totally order operations.

use super::NodeId;

/// An operation's place in the total order: Lamport time, then node id.
/// Stamps are unique because each node stamps at most one operation per tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Stamp {
    pub ts: u64,
    pub node: NodeId,
}

impl Stamp {
    /// The cas unique of the value an operation writes: derived from the
    /// stamp, so every replica gives the same unique for the same write.
    pub fn cas_unique(self) -> u64 {
        (self.ts << 16) | u64::from(self.node & 0xffff)
    }

    /// The stamp time a cas unique was derived from.
    pub fn ts_of_unique(cas: u64) -> u64 {
        cas >> 16
    }

    /// The stamp whose [`Stamp::cas_unique`] is `cas`.
    pub fn of_unique(cas: u64) -> Stamp {
        Stamp {
            ts: Stamp::ts_of_unique(cas),
            node: (cas & 0xffff) as NodeId,
        }
    }
}

/// A Lamport clock. Receiving only raises it to what was seen; stamping
/// moves it one past, so anything stamped after a message is ordered after
/// everything that message reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LamportClock(u64);

impl LamportClock {
    pub fn now(self) -> u64 {
        self.0
    }

    /// The next time to stamp an operation with.
    pub fn tick(&mut self) -> u64 {
        self.0 += 1;
        self.0
    }

    pub fn observe(&mut self, ts: u64) {
        self.0 = self.0.max(ts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_order_by_time_then_node() {
        let a = Stamp { ts: 5, node: 2 };
        let b = Stamp { ts: 6, node: 0 };
        let c = Stamp { ts: 5, node: 3 };
        assert!(a < b && a < c && c < b);
        assert_ne!(a.cas_unique(), c.cas_unique());
    }

    #[test]
    fn clock_ticks_past_what_it_saw() {
        let mut clock = LamportClock::default();
        clock.observe(10);
        assert_eq!(clock.tick(), 11);
        clock.observe(3);
        assert_eq!(clock.now(), 11);
    }
}
