//! What a run tells stderr while it goes: a line when each cell is done
//! (always; it is the log of a long run), and, when asked for or when
//! stderr is a terminal, a progress line for the cell under way: redrawn
//! in place on a terminal, one line a second otherwise.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often a progress line is written where it cannot be redrawn.
const LOG_EVERY: Duration = Duration::from_secs(1);

pub(crate) struct Progress {
    enabled: bool,
    terminal: bool,
    drawn: bool,
    /// When the last line was written, and the replies completed then.
    last: Option<(Instant, u64)>,
}

impl Progress {
    pub fn new(enabled: bool) -> Progress {
        Progress {
            enabled,
            terminal: std::io::stderr().is_terminal(),
            drawn: false,
            last: None,
        }
    }

    /// The cell `what` is `elapsed` into its `total`, with `completed`
    /// replies and `errors` so far.
    pub fn update(
        &mut self,
        what: &str,
        elapsed: Duration,
        total: Duration,
        completed: u64,
        errors: u64,
    ) {
        let now = Instant::now();
        let logged_lately = self.last.is_some_and(|(then, _)| now - then < LOG_EVERY);
        if !self.enabled || (!self.terminal && logged_lately) {
            return;
        }
        // Throughput since the last line: the first line of a cell has none yet.
        let rate = match self.last {
            Some((then, before)) if now > then => format!(
                "{:.0} ops/s",
                completed.saturating_sub(before) as f64 / (now - then).as_secs_f64()
            ),
            _ => "- ops/s".into(),
        };
        self.last = Some((now, completed));
        let line = format!(
            "{what}: {:.1}/{:.1} s  {rate:>12}  errors {errors}",
            elapsed.as_secs_f64(),
            total.as_secs_f64()
        );
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(err, "\r\x1b[K{line}");
            self.drawn = true;
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    /// A cell is done: its line replaces the progress line.
    pub fn cell_done(&mut self, line: &str) {
        let mut err = std::io::stderr().lock();
        if self.drawn {
            let _ = write!(err, "\r\x1b[K");
            self.drawn = false;
        }
        self.last = None;
        let _ = writeln!(err, "{line}");
    }
}
