//! The memory cells of the load bench (`--memory`): how many bytes of RSS a
//! server holds per item once loaded, memcached and mckv in the same run.
//!
//! Each cell starts its servers afresh (memcached `-t 1 -m 8192`, one mckv
//! node on the embedded store, or a 3-node eventual cluster, each told
//! `memory_limit_mb = 8192` so nothing is evicted), loads `items` keys of
//! 30 bytes (`key:` and 26 digits) with values of `value` bytes as
//! pipelined `noreply` sets over one connection, waits until `stats`
//! shows every item on every node, and reads `VmRSS` from `/proc`.
//!
//! ```text
//!  set key:000…0001 0 0 100 noreply ─┐ one connection, batches of 64 KB
//!  ...                               ├─► server ─► stats curr_items == N on each node
//!  version ──────────────────────────┘             └─► /proc/<pid>/status VmRSS
//! ```
//!
//! Bytes per item is the RSS after loading over the items; "added" is the
//! RSS the load added (after less before) over the items. The ratio is
//! RSS after loading to memcached's in the same cell. For mckv, `bytes` is
//! what the store charges against `memory_limit_mb` (its `stats bytes`),
//! so how near the cap is to real allocation shows beside the RSS; in
//! eventual mode, the version log's heap bytes (`mckv_version_log_bytes`)
//! too.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Key length the issue measures with.
const KEY_LEN: usize = 30;
/// The cap every server is given: far above what any cell stores.
const LIMIT_MB: u64 = 8192;

/// One memory cell: what is loaded.
#[derive(Clone, Copy)]
pub struct Cell {
    pub name: &'static str,
    pub items: u64,
    pub value: usize,
    /// Also measure a 3-node eventual cluster (per node).
    pub eventual: bool,
}

/// The cells `--memory` runs, by name: `1m` (1M x 100 B, with the eventual
/// cluster), `10m` (10M x 10 B, one node).
pub const CELLS: [Cell; 2] = [
    Cell {
        name: "1m",
        items: 1_000_000,
        value: 100,
        eventual: true,
    },
    Cell {
        name: "10m",
        items: 10_000_000,
        value: 10,
        eventual: false,
    },
];

/// Processes killed when dropped, and the temporary directory removed.
struct Started {
    children: Vec<Child>,
    /// Client address of each process (node 0 first).
    addrs: Vec<SocketAddr>,
    dir: Option<PathBuf>,
}

impl Drop for Started {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn start_memcached() -> Result<Started, String> {
    let port = free_port()?;
    let child = Command::new("memcached")
        .args(["-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0"])
        .args(["-t", "1", "-m", &LIMIT_MB.to_string(), "-u", "root"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start memcached: {e}"))?;
    let started = Started {
        children: vec![child],
        addrs: vec![local(port)],
        dir: None,
    };
    wait_answering(&started)?;
    Ok(started)
}

/// `nodes` mckv nodes (1: a single node; 3: an eventual cluster), each
/// capped at [`LIMIT_MB`].
fn start_mckv(mckv: &Path, nodes: usize) -> Result<Started, String> {
    let dir = std::env::temp_dir().join(format!(
        "mckv-load-memory-{}-{}",
        std::process::id(),
        free_port()?
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{dir:?}: {e}"))?;
    let mode = if nodes == 1 {
        ""
    } else {
        "consistency = eventual\n"
    };
    let mut config =
        format!("[cluster]\nname = memory\nsecret = memory\n{mode}memory_limit_mb = {LIMIT_MB}\n");
    let mut addrs = Vec::new();
    for id in 0..nodes {
        let (client, peer) = (free_port()?, free_port()?);
        config.push_str(&format!(
            "[node.{id}]\nclient = 127.0.0.1:{client}\npeer = 127.0.0.1:{peer}\n"
        ));
        addrs.push(local(client));
    }
    let path = dir.join("config.ini");
    std::fs::write(&path, config).map_err(|e| format!("{path:?}: {e}"))?;
    let mut started = Started {
        children: Vec::new(),
        addrs,
        dir: Some(dir.clone()),
    };
    for id in 0..nodes {
        let child = Command::new(mckv)
            .args(["server", "--config"])
            .arg(&path)
            .args(["--node", &id.to_string(), "--log-level", "warn"])
            .arg("--log-file")
            .arg(dir.join(format!("node{id}.log")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start mckv: {e}"))?;
        started.children.push(child);
    }
    wait_answering(&started)?;
    Ok(started)
}

/// Waits until every process answers `stats`.
fn wait_answering(started: &Started) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    for addr in &started.addrs {
        while stats(*addr).is_err() {
            if Instant::now() > deadline {
                return Err(format!("{addr} does not answer"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // A cluster's nodes connect to each other after they answer clients.
    std::thread::sleep(Duration::from_millis(if started.addrs.len() > 1 {
        1000
    } else {
        0
    }));
    Ok(())
}

/// A server's `stats` as (name, value) pairs.
fn stats(addr: SocketAddr) -> Result<Vec<(String, String)>, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"stats\r\n").map_err(|e| e.to_string())?;
    let mut lines = BufReader::new(s);
    let mut out = Vec::new();
    loop {
        let mut line = String::new();
        if lines.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Err("closed".into());
        }
        let line = line.trim_end();
        if line == "END" {
            return Ok(out);
        }
        let mut words = line.splitn(3, ' ');
        if let (Some("STAT"), Some(name), Some(value)) = (words.next(), words.next(), words.next())
        {
            out.push((name.to_string(), value.to_string()));
        }
    }
}

fn stat(stats: &[(String, String)], name: &str) -> u64 {
    let found = stats.iter().find(|(n, _)| n == name);
    found.and_then(|(_, v)| v.parse().ok()).unwrap_or(0)
}

/// Resident set of `pid` in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmRSS:"));
    let kb = line.and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok());
    kb.unwrap_or(0) * 1024
}

fn key(i: u64) -> String {
    format!("key:{i:0width$}", width = KEY_LEN - 4)
}

/// Pipelined `noreply` sets of `items` keys over one connection, then a
/// `version` whose answer says the server has read them all. Anything else
/// the server answers (an error) fails the load.
fn load(addr: SocketAddr, items: u64, value_len: usize) -> Result<(), String> {
    let stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let mut reader = stream.try_clone().map_err(|e| e.to_string())?;
    // Replies are drained on their own thread so an error cannot stall the writes.
    let replies = std::thread::spawn(move || -> Result<(), String> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(8).any(|w| w == b"VERSION ") {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => return Err("connection closed during the load".into()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        match got.starts_with(b"VERSION ") {
            true => Ok(()),
            false => Err(String::from_utf8_lossy(&got)
                .lines()
                .next()
                .unwrap_or("")
                .into()),
        }
    });
    let mut writer = stream;
    let value = vec![b'v'; value_len];
    let mut batch = Vec::with_capacity(1 << 17);
    for i in 0..items {
        batch.extend_from_slice(format!("set {} 0 0 {value_len} noreply\r\n", key(i)).as_bytes());
        batch.extend_from_slice(&value);
        batch.extend_from_slice(b"\r\n");
        if batch.len() >= 1 << 16 {
            writer.write_all(&batch).map_err(|e| e.to_string())?;
            batch.clear();
        }
    }
    batch.extend_from_slice(b"version\r\n");
    writer.write_all(&batch).map_err(|e| e.to_string())?;
    replies.join().map_err(|_| "reader panicked".to_string())?
}

/// What one server held after a cell's load.
struct Measured {
    label: String,
    /// RSS before and after loading, per process.
    before: Vec<u64>,
    after: Vec<u64>,
    /// mckv: what the store charges (`stats bytes`), per process.
    charged: Vec<u64>,
    /// mckv in eventual mode: the version log's heap bytes
    /// (`mckv_version_log_bytes`), per process.
    log: Vec<Option<u64>>,
}

/// Starts a server, loads it, waits for every node to hold every item.
fn measure(label: &str, started: Started, cell: Cell) -> Result<Measured, String> {
    let pids: Vec<u32> = started.children.iter().map(Child::id).collect();
    let before = pids.iter().map(|&p| rss(p)).collect();
    load(started.addrs[0], cell.items, cell.value)?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let (mut charged, mut log) = (Vec::new(), Vec::new());
    for addr in &started.addrs {
        loop {
            let stats = stats(*addr)?;
            if stat(&stats, "curr_items") >= cell.items {
                charged.push(stat(&stats, "bytes"));
                let logged = stats.iter().any(|(n, _)| n == "mckv_version_log_bytes");
                log.push(logged.then(|| stat(&stats, "mckv_version_log_bytes")));
                break;
            }
            if Instant::now() > deadline {
                let held = stat(&stats, "curr_items");
                return Err(format!(
                    "{label}: {addr} holds {held} of {} items",
                    cell.items
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let after = pids.iter().map(|&p| rss(p)).collect();
    Ok(Measured {
        label: label.into(),
        before,
        after,
        charged,
        log,
    })
}

fn mb(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1 << 20) as f64)
}

/// Runs the cells named in `names` (all if empty) and prints a table per cell.
pub fn run(mckv: &Path, names: &[String]) -> Result<(), String> {
    println!("memory:    {KEY_LEN} B keys, pipelined noreply sets over one connection, cap {LIMIT_MB} MB");
    for cell in CELLS {
        if !names.is_empty() && !names.iter().any(|n| n == cell.name) {
            continue;
        }
        println!(
            "\n{} items x {} B values ({} B keys)\n",
            cell.items, cell.value, KEY_LEN
        );
        let mut rows = vec![measure("memcached", start_memcached()?, cell)?];
        rows.push(measure("mckv", start_mckv(mckv, 1)?, cell)?);
        if cell.eventual {
            rows.push(measure("eventual (per node)", start_mckv(mckv, 3)?, cell)?);
        }
        println!(
            "| server | RSS MB | bytes/item | added bytes/item | charged bytes/item \
             | version log bytes/item | ratio |"
        );
        println!("| --- | --- | --- | --- | --- | --- | --- |");
        let base = rows[0].after[0] as f64;
        for row in &rows {
            for (node, (&after, &before)) in row.after.iter().zip(&row.before).enumerate() {
                let label = match row.after.len() {
                    1 => row.label.clone(),
                    _ => format!("{} node {node}", row.label),
                };
                let charged = match (row.label.as_str(), row.charged.get(node)) {
                    ("memcached", _) | (_, None) => "-".to_string(),
                    (_, Some(&c)) => format!("{:.1}", c as f64 / cell.items as f64),
                };
                let log = match row.log.get(node) {
                    Some(Some(bytes)) => format!("{:.1}", *bytes as f64 / cell.items as f64),
                    _ => "-".to_string(),
                };
                println!(
                    "| {label} | {} | {:.1} | {:.1} | {charged} | {log} | {:.2} |",
                    mb(after),
                    after as f64 / cell.items as f64,
                    (after - before.min(after)) as f64 / cell.items as f64,
                    after as f64 / base,
                );
            }
        }
    }
    Ok(())
}
