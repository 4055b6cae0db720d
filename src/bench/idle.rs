//! Idle connections: opened before a cell's load and held open, unused,
//! while it runs, each having made one get (so the server has served it
//! and holds whatever a served, waiting connection costs it); and what they
//! cost the server in memory, from its resident set before and after.
//!
//! ```text
//!  RSS before ─► open in batches: connect, get, reply ─► RSS after ─► cell runs ─► close all
//! ```
//!
//! The bench raises its own open-files limit to the hard limit first
//! ([`raise_open_files_limit`]), as memcached does for `-c`; a server the
//! bench starts inherits it.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::framing::{Expect, Outcome};
use super::workload::{blocking_connect, read_reply, Workload};

/// Connections opened (and requests sent) before their replies are read:
/// few enough that the server's listen backlog never overflows.
const BATCH: usize = 100;

/// What holding `opened` idle connections cost the server.
#[derive(Clone, Debug)]
pub struct IdleCost {
    pub wanted: usize,
    pub opened: usize,
    /// The server's resident set before and after, when it runs here.
    pub rss_kib: Option<(u64, u64)>,
    /// Why fewer than `wanted` were opened.
    pub error: Option<String>,
}

impl IdleCost {
    /// Bytes of resident memory per idle connection.
    pub fn bytes_per_conn(&self) -> Option<f64> {
        let (before, after) = self.rss_kib?;
        (self.opened > 0).then(|| (after as f64 - before as f64) * 1024.0 / self.opened as f64)
    }
}

/// The resident set of process `pid` in KiB, from `/proc`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    line.trim().trim_end_matches("kB").trim().parse().ok()
}

/// Raises this process's open-files soft limit to its hard limit; returns
/// the limit now in force.
pub fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
    getrlimit(Resource::Nofile).current
}

/// Opens `n` connections to `addr`, each answered one get (spread over the
/// gets), and reads the server's memory (`pid`) before and after. The
/// connections are returned to be held open; an error stops the opening.
pub fn open(
    addr: SocketAddr,
    n: usize,
    w: &Workload,
    pid: Option<u32>,
    timeout: Duration,
) -> (Vec<TcpStream>, IdleCost) {
    let before = pid.and_then(rss_kib);
    let mut held = Vec::with_capacity(n);
    let mut error = None;
    'batches: while held.len() < n {
        let first = held.len();
        for i in first..n.min(first + BATCH) {
            let opened = blocking_connect(addr, timeout).and_then(|mut s| {
                let g = i % w.gets();
                s.write_all(&w.get_req[g])
                    .map_err(|e| format!("write: {e}"))?;
                Ok(s)
            });
            match opened {
                Ok(s) => held.push(s),
                Err(e) => {
                    error = Some(format!("idle connection {i}: {e}"));
                    break 'batches;
                }
            }
        }
        for (i, s) in held.iter_mut().enumerate().skip(first) {
            let expect = Expect::Get((i % w.gets()) as u32);
            match read_reply(s, &mut Vec::new(), expect, w) {
                Ok((Outcome::Ok, _)) => {}
                Ok((_, reply)) => {
                    error = Some(format!("idle connection {i} was answered {reply:?}"));
                    break 'batches;
                }
                Err(e) => {
                    error = Some(format!("idle connection {i}: {e}"));
                    break 'batches;
                }
            }
        }
    }
    let after = pid.and_then(rss_kib);
    let cost = IdleCost {
        wanted: n,
        opened: held.len(),
        rss_kib: before.zip(after),
        error,
    };
    (held, cost)
}
