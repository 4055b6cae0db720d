//! "ops/s since the last call": each `mckv status` keeps what it sampled in
//! a small state file per config file, and the next call divides the ops a
//! node counted since by the time since. Where there is no earlier sample
//! of the same run of the node (the first call, a restart, `stats reset`),
//! the rate is the node's average since it started, marked `~`. The
//! requests `mckv status` itself sends are left out of both.
//!
//! The file is `$XDG_STATE_HOME/mckv/status-<hash>`, else
//! `~/.local/state/mckv/status-<hash>`, the hash being the CRC-32 of the
//! config file's absolute path; one line per node that answered:
//! `<node> <pid> <uptime_s> <at_ms> <ops>`.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use super::probe::Sample;
use crate::cluster::NodeId;

/// Requests of this tool a node counted between two samples: the last
/// call's `show` and this call's `stats` (a node counts a `stats` in the
/// reply it gives to it).
const OWN_REQUESTS_SINCE_LAST_CALL: u64 = 2;
/// Requests of this tool in a node's count at its first sample: this
/// call's `stats`.
const OWN_REQUESTS_IN_FIRST_SAMPLE: u64 = 1;

/// A node's requests per second, of clients other than this tool.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    SinceLastCall(f64),
    /// Averaged over its uptime: no earlier sample of this run of it.
    SinceStart(f64),
    /// Started less than a second ago, and no earlier sample.
    Unknown,
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::SinceLastCall(rate) => write!(f, "{rate:.1}"),
            Rate::SinceStart(rate) => write!(f, "~{rate:.1}"),
            Rate::Unknown => f.write_str("-"),
        }
    }
}

/// What the last call kept of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Kept {
    pid: u64,
    uptime_s: u64,
    at_ms: u64,
    ops: u64,
}

/// The samples of the last call, by the node's id in the config.
#[derive(Debug, Default)]
pub struct Previous(HashMap<NodeId, Kept>);

/// The state file for the config at `config`, where a home or state
/// directory is known.
pub fn state_file(config: &Path) -> Option<PathBuf> {
    let nonempty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let dir = match nonempty("XDG_STATE_HOME") {
        Some(state) => PathBuf::from(state),
        None => PathBuf::from(nonempty("HOME")?).join(".local/state"),
    };
    let absolute = std::fs::canonicalize(config).unwrap_or_else(|_| config.to_path_buf());
    let hash = crc32fast::hash(absolute.as_os_str().as_encoded_bytes());
    Some(dir.join("mckv").join(format!("status-{hash:08x}")))
}

impl Previous {
    /// The samples kept at `path`; none when there is no file (the first
    /// call) or it cannot be read.
    pub fn load(path: &Path) -> Previous {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        Previous(text.lines().filter_map(parse_line).collect())
    }

    /// `node`'s rate now that it answered `now`.
    pub fn rate(&self, node: NodeId, now: &Sample) -> Rate {
        let same_run = |kept: &&Kept| {
            kept.pid == now.pid
                && kept.uptime_s <= now.uptime_s
                && kept.ops <= now.ops
                && kept.at_ms <= now.at_ms
        };
        match self.0.get(&node).filter(same_run) {
            Some(kept) => {
                // Two calls in one millisecond count as one millisecond apart.
                let seconds = (now.at_ms - kept.at_ms).max(1) as f64 / 1000.0;
                let ops = now
                    .ops
                    .saturating_sub(kept.ops + OWN_REQUESTS_SINCE_LAST_CALL);
                Rate::SinceLastCall(ops as f64 / seconds)
            }
            None if now.uptime_s > 0 => {
                let ops = now.ops.saturating_sub(OWN_REQUESTS_IN_FIRST_SAMPLE);
                Rate::SinceStart(ops as f64 / now.uptime_s as f64)
            }
            None => Rate::Unknown,
        }
    }
}

fn parse_line(line: &str) -> Option<(NodeId, Kept)> {
    let numbers: Vec<u64> = line
        .split(' ')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    match numbers[..] {
        [node, pid, uptime_s, at_ms, ops] => Some((
            NodeId::try_from(node).ok()?,
            Kept {
                pid,
                uptime_s,
                at_ms,
                ops,
            },
        )),
        _ => None,
    }
}

/// Keeps `samples` (by node id in the config) at `path` for the next call;
/// written aside and renamed, so a call never reads half a file.
pub fn save(path: &Path, samples: &[(NodeId, &Sample)]) -> io::Result<()> {
    let mut text = String::new();
    for (node, s) in samples {
        text.push_str(&format!(
            "{node} {} {} {} {}\n",
            s.pid, s.uptime_s, s.at_ms, s.ops
        ));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let aside = path.with_extension(format!("{}.tmp", std::process::id()));
    std::fs::write(&aside, text)?;
    std::fs::rename(&aside, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(pid: u64, uptime_s: u64, at_ms: u64, ops: u64) -> Sample {
        Sample {
            id: 0,
            pid,
            uptime_s,
            at_ms,
            mode: "linearizable".into(),
            role: "member".into(),
            epoch: 1,
            view: vec![0],
            clock: 1,
            queue: 0,
            ops,
            lag_ms: Some(0),
            sees_up: Vec::new(),
        }
    }

    fn previous(kept: &Sample) -> Previous {
        let line = format!(
            "0 {} {} {} {}",
            kept.pid, kept.uptime_s, kept.at_ms, kept.ops
        );
        Previous(parse_line(&line).into_iter().collect())
    }

    #[test]
    fn the_rate_is_since_the_last_call_for_the_same_run_of_the_node() {
        let before = previous(&sample(7, 10, 1_000, 100));
        let after = sample(7, 12, 3_000, 302);
        assert_eq!(before.rate(0, &after), Rate::SinceLastCall(100.0));
        let only_this_tool = sample(7, 12, 3_000, 102);
        assert_eq!(before.rate(0, &only_this_tool), Rate::SinceLastCall(0.0));
        assert_eq!(Rate::SinceLastCall(100.0).to_string(), "100.0");
    }

    #[test]
    fn a_first_call_a_restart_or_a_reset_counter_averages_since_the_start() {
        let first = Previous::default();
        assert_eq!(
            first.rate(0, &sample(7, 10, 1_000, 51)),
            Rate::SinceStart(5.0)
        );
        let before = previous(&sample(7, 10, 1_000, 100));
        let restarted = sample(8, 20, 30_000, 401);
        assert_eq!(before.rate(0, &restarted), Rate::SinceStart(20.0));
        let reset = sample(7, 20, 30_000, 41);
        assert_eq!(before.rate(0, &reset), Rate::SinceStart(2.0));
        assert_eq!(Rate::SinceStart(2.0).to_string(), "~2.0");
        assert_eq!(first.rate(0, &sample(7, 0, 1, 3)), Rate::Unknown);
    }

    #[test]
    fn a_damaged_line_is_skipped() {
        assert_eq!(parse_line("0 1 2 3"), None);
        assert_eq!(parse_line("0 1 2 3 x"), None);
        assert!(parse_line("2 1 2 3 4").is_some());
    }
}
