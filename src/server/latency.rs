//! Request latency per command kind, for the `/metrics` endpoint: fixed
//! histograms the reactor fills without a lock or an allocation.
//!
//! ```text
//!  parse ─► reply slot reserved with (kind, parse Instant) ─► ... ─► slot filled ─► observe(kind, elapsed)
//!  parse ─► answered at once (admin, `mn`, a parse error) ─────────────────────────► observe(kind, elapsed)
//! ```
//!
//! A request's latency runs from when the node parsed it to when its reply
//! took its place in the connection's reply queue (it leaves with the
//! connection's next write). One observation is a clock read, a few
//! comparisons against the bucket bounds and two additions.

use std::time::{Duration, Instant};

use crate::protocol::binary::Reply;
use crate::protocol::Command;

/// What kind of request a latency is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    /// `get gets gat gats`.
    Get,
    /// `set add replace append prepend cas`.
    Set,
    Delete,
    IncrDecr,
    Touch,
    /// `mg ms md ma mn`.
    Meta,
    /// `flush_all`, the commands the node answers itself (`stats`,
    /// `version`, ...) and requests refused by the parser.
    Other,
}

impl CommandKind {
    pub const ALL: [CommandKind; 7] = [
        CommandKind::Get,
        CommandKind::Set,
        CommandKind::Delete,
        CommandKind::IncrDecr,
        CommandKind::Touch,
        CommandKind::Meta,
        CommandKind::Other,
    ];

    /// The value of the `command` label.
    pub fn label(self) -> &'static str {
        match self {
            CommandKind::Get => "get",
            CommandKind::Set => "set",
            CommandKind::Delete => "delete",
            CommandKind::IncrDecr => "incr_decr",
            CommandKind::Touch => "touch",
            CommandKind::Meta => "meta",
            CommandKind::Other => "other",
        }
    }

    pub fn of(command: &Command) -> CommandKind {
        match command {
            Command::Get(_) => CommandKind::Get,
            Command::Storage(_) | Command::TooLarge { .. } => CommandKind::Set,
            Command::Delete { .. } => CommandKind::Delete,
            Command::Arith(_) => CommandKind::IncrDecr,
            Command::Touch { .. } => CommandKind::Touch,
            Command::Meta(_) => CommandKind::Meta,
            Command::FlushAll { .. } => CommandKind::Other,
        }
    }

    /// A binary request counts as the text command it stands for (`gat`
    /// as a `get`, as in the text protocol).
    pub fn of_binary(reply: Reply) -> CommandKind {
        match reply {
            Reply::Item { value: true } => CommandKind::Get,
            Reply::Item { value: false } => CommandKind::Touch,
            Reply::Stored { .. } => CommandKind::Set,
            Reply::Deleted => CommandKind::Delete,
            Reply::Counter => CommandKind::IncrDecr,
            Reply::Flushed | Reply::Version | Reply::Stats { .. } | Reply::Empty => {
                CommandKind::Other
            }
        }
    }
}

/// A request whose reply is owed: what it was and when it was parsed.
#[derive(Debug, Clone, Copy)]
pub struct Asked {
    pub kind: CommandKind,
    pub at: Instant,
}

/// Upper bounds of the buckets, in nanoseconds: 50 µs to 2.5 s (the
/// default `backend_timeout_ms` is 1 s), then `+Inf`.
pub const BOUNDS_NS: [u64; 15] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
];

/// One command kind's latencies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last is over every bound.
    pub buckets: [u64; BOUNDS_NS.len() + 1],
    pub sum_nanos: u64,
}

impl Histogram {
    pub fn observe(&mut self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_NS
            .iter()
            .position(|&bound| nanos <= bound)
            .unwrap_or(BOUNDS_NS.len());
        self.buckets[bucket] += 1;
        self.sum_nanos = self.sum_nanos.wrapping_add(nanos);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// Every command kind's histogram.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    by_kind: [Histogram; CommandKind::ALL.len()],
}

impl Latencies {
    /// Counts a request of `asked.kind` parsed at `asked.at` and answered now.
    pub fn observe(&mut self, asked: Asked) {
        self.by_kind[asked.kind as usize].observe(asked.at.elapsed());
    }

    pub fn of(&self, kind: CommandKind) -> &Histogram {
        &self.by_kind[kind as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_latency_lands_in_the_first_bucket_whose_bound_holds_it() {
        let mut h = Histogram::default();
        h.observe(Duration::from_nanos(50_000));
        h.observe(Duration::from_nanos(50_001));
        h.observe(Duration::from_secs(3));
        h.observe(Duration::ZERO);
        assert_eq!(h.buckets[0], 2);
        assert_eq!(h.buckets[1], 1);
        assert_eq!(h.buckets[BOUNDS_NS.len()], 1);
        assert_eq!(h.count(), 4);
        assert_eq!(h.sum_nanos, 3_000_100_001);
    }

    #[test]
    fn kinds_index_their_own_histogram() {
        let mut latencies = Latencies::default();
        let at = Instant::now();
        latencies.observe(Asked {
            kind: CommandKind::Touch,
            at,
        });
        for kind in CommandKind::ALL {
            let expected = u64::from(kind == CommandKind::Touch);
            assert_eq!(latencies.of(kind).count(), expected, "{kind:?}");
        }
        let labels: Vec<&str> = CommandKind::ALL.iter().map(|k| k.label()).collect();
        assert_eq!(
            labels,
            [
                "get",
                "set",
                "delete",
                "incr_decr",
                "touch",
                "meta",
                "other"
            ]
        );
    }
}
