//! What a generator thread counts: latencies (an HdrHistogram over the
//! measured window, and a coarser one per sample interval for the plot and
//! the CSV), completed requests, bytes, and errors by kind. Threads count
//! apart and are merged once the cell is over.

use std::io;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Latencies are recorded in nanoseconds, 1 ns to 100 s.
const MAX_NS: u64 = 100_000_000_000;

#[derive(Default, Clone, Copy)]
pub struct Errors {
    /// A reply other than the one expected (`SERVER_ERROR`s included).
    pub wrong: u64,
    /// A `get` of a stored key that found nothing.
    pub miss: u64,
    /// Requests whose reply did not come within the timeout.
    pub timeout: u64,
    /// Failed connects, closed connections, unparsable replies, and the
    /// requests lost with them.
    pub io: u64,
}

impl Errors {
    pub fn total(&self) -> u64 {
        self.wrong + self.miss + self.timeout + self.io
    }

    fn add(&mut self, o: &Errors) {
        self.wrong += o.wrong;
        self.miss += o.miss;
        self.timeout += o.timeout;
        self.io += o.io;
    }
}

/// One sample interval of the measured window.
#[derive(Clone)]
pub struct Sample {
    /// Right replies completed in the interval.
    pub ok: u64,
    pub errors: u64,
    /// Their latencies, to two significant digits: enough for a plot, and
    /// small enough to keep one per interval.
    pub hist: Histogram<u64>,
}

impl Sample {
    fn new() -> Sample {
        Sample {
            ok: 0,
            errors: 0,
            hist: Histogram::new_with_bounds(1, MAX_NS, 2).expect("histogram bounds"),
        }
    }
}

pub struct Stats {
    /// Latencies of the right replies completed in the measured window.
    pub hist: Histogram<u64>,
    /// Right replies completed in the measured window.
    pub measured: u64,
    /// Replies completed over the whole cell (warm-up included).
    pub completed: u64,
    /// Over the whole cell, warm-up included.
    pub errors: Errors,
    pub bytes_out: u64,
    pub bytes_in: u64,
    /// What the first io error was (a count alone would hide, say, a
    /// server answering in a way that cannot be framed).
    pub first_io_error: Option<String>,
    /// The measured window, one sample per `sample` interval.
    pub timeline: Vec<Sample>,
    pub sample: Duration,
}

impl Stats {
    /// Counters for a measured window of `window`, sampled every `sample`.
    pub fn new(window: Duration, sample: Duration) -> Stats {
        let samples = window.as_nanos().div_ceil(sample.as_nanos()).max(1) as usize;
        Stats {
            // Three significant digits for the table's percentiles.
            hist: Histogram::new_with_bounds(1, MAX_NS, 3).expect("histogram bounds"),
            measured: 0,
            completed: 0,
            errors: Errors::default(),
            bytes_out: 0,
            bytes_in: 0,
            first_io_error: None,
            timeline: vec![Sample::new(); samples],
            sample,
        }
    }

    /// The sample of the interval `since_measure` into the measured window.
    fn sample_at(&mut self, since_measure: Duration) -> &mut Sample {
        let i = (since_measure.as_nanos() / self.sample.as_nanos()) as usize;
        let last = self.timeline.len() - 1;
        &mut self.timeline[i.min(last)]
    }

    /// A right reply, `latency` after its request was due, completed
    /// `since_measure` into the measured window (`None`: in the warm-up).
    pub fn record_ok(&mut self, latency: Duration, since_measure: Option<Duration>) {
        self.completed += 1;
        let Some(at) = since_measure else { return };
        let ns = (latency.as_nanos() as u64).max(1);
        self.measured += 1;
        self.hist.saturating_record(ns);
        let sample = self.sample_at(at);
        sample.ok += 1;
        sample.hist.saturating_record(ns);
    }

    /// A reply that is not the right one.
    pub fn record_wrong(&mut self, miss: bool, since_measure: Option<Duration>) {
        self.completed += 1;
        if miss {
            self.errors.miss += 1;
        } else {
            self.errors.wrong += 1;
        }
        self.count_in_sample(1, since_measure);
    }

    /// `lost` requests whose replies did not come in time.
    pub fn record_timeouts(&mut self, lost: u64, since_measure: Option<Duration>) {
        self.errors.timeout += lost;
        self.count_in_sample(lost, since_measure);
    }

    /// An io error: it cost the connection and the `lost` requests that
    /// were in flight on it.
    pub fn record_io_error(&mut self, e: &io::Error, lost: u64, since_measure: Option<Duration>) {
        self.errors.io += 1 + lost;
        self.first_io_error.get_or_insert_with(|| e.to_string());
        self.count_in_sample(1 + lost, since_measure);
    }

    fn count_in_sample(&mut self, errors: u64, since_measure: Option<Duration>) {
        if let Some(at) = since_measure {
            self.sample_at(at).errors += errors;
        }
    }

    pub fn merge(&mut self, o: &Stats) {
        self.hist.add(&o.hist).expect("same histogram bounds");
        self.measured += o.measured;
        self.completed += o.completed;
        self.errors.add(&o.errors);
        self.bytes_out += o.bytes_out;
        self.bytes_in += o.bytes_in;
        if self.first_io_error.is_none() {
            self.first_io_error.clone_from(&o.first_io_error);
        }
        for (mine, theirs) in self.timeline.iter_mut().zip(&o.timeline) {
            mine.ok += theirs.ok;
            mine.errors += theirs.errors;
            mine.hist.add(&theirs.hist).expect("same histogram bounds");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_land_in_the_sample_of_their_interval_and_merge_by_interval() {
        let ms = Duration::from_millis;
        let mut a = Stats::new(ms(1000), ms(250));
        assert_eq!(a.timeline.len(), 4);
        a.record_ok(ms(1), None);
        a.record_ok(ms(2), Some(ms(10)));
        a.record_ok(ms(3), Some(ms(999)));
        // Late by a poll's wake-up: counted in the last interval.
        a.record_ok(ms(4), Some(ms(1003)));
        let mut b = Stats::new(ms(1000), ms(250));
        b.record_wrong(true, Some(ms(260)));
        b.record_io_error(&io::Error::other("reset"), 2, Some(ms(260)));
        a.merge(&b);
        let ok: Vec<u64> = a.timeline.iter().map(|s| s.ok).collect();
        let errors: Vec<u64> = a.timeline.iter().map(|s| s.errors).collect();
        assert_eq!((ok, errors), (vec![1, 0, 0, 2], vec![0, 4, 0, 0]));
        assert_eq!((a.completed, a.measured, a.errors.total()), (5, 3, 4));
        assert_eq!(a.first_io_error.as_deref(), Some("reset"));
    }
}
