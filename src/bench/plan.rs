//! What a run does, from the flags `mckv bench` and `cargo bench --bench
//! load` share: the cells (connections x idle connections x get/set mix x
//! pipelining depth x rate), and the keys, values, keys per get, durations
//! and timeout every cell uses.
//! Checked once here, so the rest never sees a zero or a NaN.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

/// The load flags. Lists are comma-separated; every combination of them is
/// one cell, run against each server in turn.
#[derive(clap::Args, Clone, Debug)]
pub struct LoadArgs {
    /// Connections, a list (e.g. 1,16,50).
    #[arg(long, value_delimiter = ',', default_value = "50")]
    pub conns: Vec<usize>,
    /// Percent of requests that are gets (the rest are sets), a list.
    #[arg(long, value_delimiter = ',', default_value = "90")]
    pub mix: Vec<u32>,
    /// Requests kept in flight per connection (pipelining), a list.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub depth: Vec<usize>,
    /// Requests per second over all of a cell's connections, a list. Given:
    /// an open loop, each request sent when due (at most --depth in flight
    /// per connection) and its latency counted from when it was due, so a
    /// stalled server shows in the latency. Not given: a closed loop, each
    /// reply replaced by a new request at once.
    #[arg(long, value_delimiter = ',')]
    pub rate: Vec<u64>,
    /// Seconds measured per cell.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Seconds of load before each cell's measured window.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Distinct keys, all stored before the load starts (so a miss is an error).
    #[arg(long, default_value_t = 10_000)]
    pub keys: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Keys each get names (a multi-get of consecutive keys, answered with
    /// every value); memcached protocol only.
    #[arg(long, default_value_t = 1)]
    pub keys_per_get: usize,
    /// Connections opened before each cell besides --conns, a list: each
    /// makes one get and then stays open, idle, while the cell runs; the
    /// server's memory is read before and after they open (bytes per idle
    /// connection in the details). Raise `ulimit -n` and the server's
    /// connection limit to match (memcached -c, mckv max_connections).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub idle_conns: Vec<usize>,
    /// Generator threads, each driving its share of the connections.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Milliseconds a connect or a reply may take before it counts as an error.
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
    /// Also write one row per server, cell and sample interval to this CSV file.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Also draw throughput over time and latency percentiles to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Show a progress line on stderr even when it is not a terminal.
    #[arg(long)]
    pub progress: bool,
}

/// One combination of the load flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cell {
    pub conns: usize,
    /// Connections held open and idle while the cell runs.
    pub idle: usize,
    pub get_percent: u32,
    pub depth: usize,
    /// Requests per second over all connections (open loop); `None`: closed loop.
    pub rate: Option<u64>,
}

impl Cell {
    /// The name in the table, aligned in columns.
    pub fn name(&self) -> String {
        let mut name = format!(
            "{:>3} conn  {:>2}/{:<2}  depth {:>2}",
            self.conns,
            self.get_percent,
            100 - self.get_percent,
            self.depth
        );
        if let Some(rate) = self.rate {
            name.push_str(&format!("  @{rate}/s"));
        }
        if self.idle > 0 {
            name.push_str(&format!("  +{} idle", self.idle));
        }
        name
    }

    /// The name in running text: single spaces.
    pub fn short_name(&self) -> String {
        self.name().split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

/// A checked run plan.
#[derive(Clone, Debug)]
pub struct Plan {
    pub cells: Vec<Cell>,
    pub duration: Duration,
    pub warmup: Duration,
    pub keys: usize,
    pub value_len: usize,
    pub keys_per_get: usize,
    pub threads: usize,
    pub timeout: Duration,
    /// The plot's and the CSV's resolution: a 40th of the measured window,
    /// within 100 ms and 1 s.
    pub sample: Duration,
    /// Whether a progress line is drawn on stderr.
    pub progress: bool,
}

/// Values past this many bytes in all (keys x value size) are refused: the
/// generator keeps every request and expected reply in memory.
const MAX_WORKLOAD_BYTES: usize = 1 << 30;

fn seconds(what: &str, s: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s).map_err(|_| format!("--{what} {s}: not a number of seconds"))
}

impl Plan {
    pub fn new(args: &LoadArgs) -> Result<Plan, String> {
        let positive = |what: &str, ok: bool| {
            ok.then_some(())
                .ok_or_else(|| format!("--{what} must be at least 1"))
        };
        positive("conns", !args.conns.is_empty() && !args.conns.contains(&0))?;
        positive("depth", !args.depth.is_empty() && !args.depth.contains(&0))?;
        positive("rate", !args.rate.contains(&0))?;
        positive("threads", args.threads > 0)?;
        positive("keys", args.keys > 0)?;
        positive("value-size", args.value_size > 0)?;
        positive("keys-per-get", args.keys_per_get > 0)?;
        if args.keys_per_get > args.keys {
            return Err("--keys-per-get is more than --keys".into());
        }
        if args.idle_conns.is_empty() {
            return Err("--idle-conns is a list of numbers (0: none)".into());
        }
        positive("timeout-ms", args.timeout_ms > 0)?;
        if args.mix.is_empty() || args.mix.iter().any(|&m| m > 100) {
            return Err("--mix is a list of percentages of gets (0-100)".into());
        }
        if args.keys.saturating_mul(args.value_size) > MAX_WORKLOAD_BYTES {
            return Err("--keys x --value-size is over 1 GiB".into());
        }
        let duration = seconds("duration", args.duration)?;
        if duration.is_zero() {
            return Err("--duration must be more than 0".into());
        }
        let rates: Vec<Option<u64>> = if args.rate.is_empty() {
            vec![None]
        } else {
            args.rate.iter().copied().map(Some).collect()
        };
        let mut cells = Vec::new();
        for &conns in &args.conns {
            for &idle in &args.idle_conns {
                for &get_percent in &args.mix {
                    for &depth in &args.depth {
                        for &rate in &rates {
                            cells.push(Cell {
                                conns,
                                idle,
                                get_percent,
                                depth,
                                rate,
                            });
                        }
                    }
                }
            }
        }
        Ok(Plan {
            cells,
            duration,
            warmup: seconds("warmup", args.warmup)?,
            keys: args.keys,
            value_len: args.value_size,
            keys_per_get: args.keys_per_get,
            threads: args.threads,
            timeout: Duration::from_millis(args.timeout_ms),
            sample: (duration / 40).clamp(Duration::from_millis(100), Duration::from_secs(1)),
            progress: args.progress || std::io::stderr().is_terminal(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        load: LoadArgs,
    }

    fn plan(args: &[&str]) -> Result<Plan, String> {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        Plan::new(&cli.load)
    }

    #[test]
    fn every_combination_of_the_lists_is_a_cell() {
        let p = plan(&["--conns", "1,50", "--mix", "90,50", "--rate", "1000,2000"]).unwrap();
        assert_eq!(p.cells.len(), 8);
        assert_eq!(
            p.cells[7],
            Cell {
                conns: 50,
                idle: 0,
                get_percent: 50,
                depth: 1,
                rate: Some(2000)
            }
        );
        assert_eq!(plan(&[]).unwrap().cells[0].rate, None);
    }

    #[test]
    fn the_sample_interval_follows_the_duration_within_bounds() {
        let sample = |d: &str| plan(&["--duration", d]).unwrap().sample;
        assert_eq!(sample("1"), Duration::from_millis(100));
        assert_eq!(sample("20"), Duration::from_millis(500));
        assert_eq!(sample("600"), Duration::from_secs(1));
    }

    #[test]
    fn zeros_and_impossible_values_are_refused() {
        for bad in [
            &["--conns", "0"][..],
            &["--depth", "1,0"],
            &["--rate", "0"],
            &["--mix", "101"],
            &["--duration", "0"],
            &["--warmup", "-1"],
            &["--duration", "NaN"],
            &["--keys", "10000000", "--value-size", "1000"],
            &["--keys-per-get", "0"],
            &["--keys", "10", "--keys-per-get", "11"],
        ] {
            assert!(plan(bad).is_err(), "{bad:?}");
        }
    }
}
