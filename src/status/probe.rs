//! Asking one node how it is: `stats` and `show` on one connection, read
//! within a deadline, and the fields `mckv status` shows taken from them.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::client;
use crate::cluster::NodeId;

/// How long a node may take to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a node may take to answer both requests, from the connect.
const REPLY_DEADLINE: Duration = Duration::from_secs(2);
const REQUEST: &[u8] = b"stats\r\nshow\r\n";
const END: &str = "END";

/// What one node said of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The id it answers as (`stats`' `mckv_node`).
    pub id: NodeId,
    pub pid: u64,
    pub uptime_s: u64,
    /// When the answer came, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub mode: String,
    pub role: String,
    pub epoch: u64,
    pub view: Vec<NodeId>,
    pub clock: u64,
    pub queue: u64,
    pub ops: u64,
    /// The replication lag it reports: its delivery lag in the strong
    /// modes; in eventual mode the longest time since a sync from a peer
    /// it holds up (`None` with no such peer).
    pub lag_ms: Option<u64>,
    /// The other nodes it holds up.
    pub sees_up: Vec<NodeId>,
}

/// A node's answer, or why there is none.
pub type Probe = Result<Sample, String>;

/// Asks the node at `addr` (`host:port`).
pub fn probe(addr: &str) -> Probe {
    let text = ask(addr).map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            format!("no reply within {} s", REPLY_DEADLINE.as_secs())
        }
        _ => e.to_string(),
    })?;
    let (stats, show) = text
        .split_once("\r\nEND\r\n")
        .ok_or("no END after its stats")?;
    Sample::read(stats, show, now_ms())
}

/// Sends `stats` and `show` and reads both replies, within the deadline.
fn ask(addr: &str) -> io::Result<String> {
    let started = Instant::now();
    let mut stream = client::connect(addr, CONNECT_TIMEOUT)?;
    stream.set_write_timeout(Some(REPLY_DEADLINE))?;
    stream.write_all(REQUEST)?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while !both_ended(&reply) {
        let left = REPLY_DEADLINE.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed")),
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    String::from_utf8(reply).map_err(|_| io::Error::other("a reply that is not text"))
}

/// Whether `reply` holds both `END`s (or an error line: not mckv).
fn both_ended(reply: &[u8]) -> bool {
    let text = String::from_utf8_lossy(reply);
    let lines: Vec<&str> = text.split("\r\n").collect();
    let complete = &lines[..lines.len() - 1];
    complete.iter().filter(|l| **l == END).count() >= 2
        || complete.iter().any(|l| l.starts_with("ERROR"))
}

fn now_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH);
    since.map_or(0, |d| d.as_millis() as u64)
}

impl Sample {
    /// The sample in the text of `stats` (without its `END`) and `show`.
    fn read(stats: &str, show: &str, at_ms: u64) -> Result<Sample, String> {
        let stat = |name: &str| {
            let prefix = format!("STAT {name} ");
            stats.lines().find_map(|l| l.strip_prefix(&prefix))
        };
        let number = |name: &str| -> Result<u64, String> {
            stat(name)
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| format!("no {name} in its stats: is it an mckv node?"))
        };
        let text = |name: &str| stat(name).unwrap_or("-").trim().to_string();
        let id = number("mckv_node")? as NodeId;
        let show = ShowLines::read(show);
        let lag_ms = match stat("mckv_delivery_lag_ms") {
            Some(lag) => lag.trim().parse().ok(),
            None => show.longest_sync_lag_from_up_peers(),
        };
        Ok(Sample {
            id,
            pid: number("pid")?,
            uptime_s: number("uptime")?,
            at_ms,
            mode: text("mckv_mode"),
            role: text("mckv_role"),
            epoch: number("mckv_view_epoch")?,
            view: node_list(stat("mckv_view_members").unwrap_or("")),
            clock: number("mckv_clock")?,
            queue: number("mckv_pending")?,
            ops: number("mckv_ops")?,
            lag_ms,
            sees_up: show.peers_up(),
        })
    }
}

/// `0,1,2` as ids.
fn node_list(text: &str) -> Vec<NodeId> {
    text.trim()
        .split(',')
        .filter_map(|id| id.parse().ok())
        .collect()
}

/// The peer lines of `show`: `NODE <id> <address> <state> peer k=v...`.
struct ShowLines<'a>(Vec<Vec<&'a str>>);

impl<'a> ShowLines<'a> {
    fn read(show: &'a str) -> ShowLines<'a> {
        let lines = show.lines().map(|l| l.split(' ').collect::<Vec<_>>());
        ShowLines(lines.filter(|w| w.len() > 4 && w[4] == "peer").collect())
    }

    fn up(&self) -> impl Iterator<Item = &Vec<&'a str>> {
        self.0.iter().filter(|w| w[3] == "up")
    }

    fn peers_up(&self) -> Vec<NodeId> {
        self.up().filter_map(|w| w[1].parse().ok()).collect()
    }

    fn longest_sync_lag_from_up_peers(&self) -> Option<u64> {
        let lags = self.up().filter_map(|w| {
            w.iter()
                .find_map(|field| field.strip_prefix("sync_lag_ms="))
                .and_then(|ms| ms.parse().ok())
        });
        lags.max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATS: &str = "STAT pid 41\r\nSTAT uptime 12\r\nSTAT mckv_node 1\r\n\
        STAT mckv_mode linearizable\r\nSTAT mckv_ops 40\r\nSTAT mckv_clock 9\r\n\
        STAT mckv_view_epoch 3\r\nSTAT mckv_role member\r\nSTAT mckv_view_members 0,1\r\n\
        STAT mckv_pending 2\r\nSTAT mckv_delivery_lag_ms 100";

    const SHOW: &str =
        "NODE 0 127.0.0.1:8000 up peer last_heard_ms=3 clock=9 view=3 queue=0 ops=1\r\n\
        NODE 1 127.0.0.1:8001 up self last_heard_ms=0 clock=9 view=3 queue=2 ops=40 members=0,1\r\n\
        NODE 2 127.0.0.1:8002 down peer last_heard_ms=900 clock=4 view=3 queue=0 ops=0\r\nEND\r\n";

    #[test]
    fn a_strong_mode_node_reads_from_its_stats_and_show() {
        let sample = Sample::read(STATS, SHOW, 7).unwrap();
        assert_eq!(sample.id, 1);
        assert_eq!((sample.pid, sample.uptime_s, sample.at_ms), (41, 12, 7));
        assert_eq!(
            (sample.mode.as_str(), sample.role.as_str()),
            ("linearizable", "member")
        );
        assert_eq!((sample.epoch, sample.view.as_slice()), (3, &[0, 1][..]));
        assert_eq!((sample.clock, sample.queue, sample.ops), (9, 2, 40));
        assert_eq!(sample.lag_ms, Some(100));
        assert_eq!(sample.sees_up, [0]);
    }

    #[test]
    fn an_eventual_node_lags_by_its_oldest_sync_from_a_peer_it_holds_up() {
        let stats = STATS.replace("STAT mckv_delivery_lag_ms 100", "STAT mckv_sync_rounds 4");
        let show =
            "NODE 0 a up peer last_heard_ms=3 clock=9 view=0 queue=0 ops=1 sync_lag_ms=200\r\n\
            NODE 1 b up self last_heard_ms=0 clock=9 view=0 queue=0 ops=4 members=0,1,2\r\n\
            NODE 2 c down peer last_heard_ms=900 clock=4 view=0 queue=0 ops=0 sync_lag_ms=9000\r\n";
        let sample = Sample::read(&stats, show, 0).unwrap();
        assert_eq!(sample.lag_ms, Some(200));
    }

    #[test]
    fn a_server_that_is_not_mckv_is_named_as_such() {
        let memcached = "STAT pid 1\r\nSTAT uptime 5\r\nSTAT curr_items 0";
        let why = Sample::read(memcached, "ERROR\r\n", 0).unwrap_err();
        assert!(why.contains("is it an mckv node?"), "{why}");
    }

    #[test]
    fn the_replies_end_after_two_ends_or_an_error() {
        assert!(!both_ended(b"STAT pid 1\r\nEND\r\nNODE 0"));
        assert!(!both_ended(b"STAT pid 1\r\nEND\r\nEND"));
        assert!(both_ended(b"STAT pid 1\r\nEND\r\nNODE 0 x\r\nEND\r\n"));
        assert!(both_ended(b"END\r\nERROR\r\n"));
    }
}
