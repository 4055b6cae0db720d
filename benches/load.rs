//! End-to-end load generator: mckv against a bare memcached (and, on request,
//! against etcd), same load, same run.
//!
//! ```sh
//! cargo build --release && cargo bench --bench load              # full run, ~2.5 min
//! cargo build --release && cargo bench --bench load -- --quick   # ~1 min
//! ```
//!
//! It starts `memcached -t 1` and `target/release/mckv server` (one node) on
//! free 127.0.0.1 ports, stores the 10,000 keys in each, then runs every cell
//! (connections x get/set mix x pipelining depth) against each server in turn
//! and prints one table: ops/s, p50/p99/p99.9 latency, errors, server CPU and
//! the ratios to memcached. Servers are killed at the end (drop guards).
//!
//! The load: a closed loop per connection keeping `depth` requests in flight
//! (a reply that comes back is replaced at once, as memtier's `--pipeline`
//! does); keys drawn uniformly among 10,000 keys of 32 bytes; `set` writes a
//! 100-byte value (always the same one for a key, so every `get` reply is
//! known exactly). Every reply is framed (`VALUE`/data/`END`, one-line
//! replies) and compared with the one expected; anything else is an error,
//! and so is a miss, a reply that does not come within the timeout, or a
//! connection the server closed. Errors are counted over the whole cell,
//! warm-up included; throughput and latency over the measured window.
//! Latency runs from the write that carried a request to the read that
//! completed its reply.
//!
//! The generator is a few threads (`--threads`), each driving its share of
//! the connections with a small mio loop, so 50 connections do not cost 50
//! threads' context switches on a small machine. Running
//! `--servers memcached,memcached` shows how much two runs of the same
//! server differ (the noise floor of a ratio).
//!
//! `--servers etcd` adds a 3-member etcd cluster (`etcd` from PATH, e.g.
//! `apt-get install etcd-server`; skipped with a note if it is not there) on
//! free 127.0.0.1 ports with etcd's defaults (fsync on), data in a temporary
//! directory. The same generator drives member 0 (whose CPU is measured)
//! through etcd's v3 JSON gateway over HTTP/1.1 keep-alive connections:
//! `set` is `POST /v3/kv/put`, `get` is `POST /v3/kv/range`, which by default
//! is a linearizable read (a quorum round trip), so `etcd` compares with
//! `linearizable`. Pipelining is HTTP/1.1 pipelining: Go's net/http answers a
//! connection's requests in order, one after another, so depth saves round
//! trips but brings no concurrency within a connection. A `put` is right if
//! it is answered 200; a `range` if the 200 body holds the key's value, a
//! miss if it has no `"kvs"`; a response etcd does not frame with a
//! Content-Length (e.g. chunked) cannot be told from the next one and counts
//! as a broken connection (an io error, its reason shown in the details).
//!
//! Knobs (argv after `--`, or environment):
//!
//! | argv | env | default |
//! | --- | --- | --- |
//! | `--quick` | `LOAD_QUICK=1` | off: 1 s measured, 0.3 s warm-up |
//! | `--duration S` | `LOAD_DURATION` | 3 (seconds measured per cell) |
//! | `--warmup S` | `LOAD_WARMUP` | 1 |
//! | `--conns LIST` | `LOAD_CONNS` | 1,4,16,50 |
//! | `--mix LIST` | `LOAD_MIX` | 90,50 (percent of gets) |
//! | `--depth LIST` | `LOAD_DEPTH` | 1,16 |
//! | `--threads N` | `LOAD_THREADS` | 1 generator thread |
//! | `--servers LIST` | `LOAD_SERVERS` | memcached,mckv (also `linearizable`, `sequential`, `eventual`: a 3-node cluster in that mode, driven through node 0; `durable-always`, `durable-everysec`, `durable-no`: one node with a data directory and that fsync policy; `etcd`: a 3-member etcd cluster, driven through member 0 over HTTP; or HOST:PORT: a memcached-protocol server started by hand) |
//! | `--timeout-ms N` | `LOAD_TIMEOUT_MS` | 1000 |
//! | `--mckv PATH` | `MCKV_BIN` | `target/release/mckv` |
//!
//! Run without `--bench` (as `cargo test --benches` does) it only does a
//! short smoke run, or nothing if the release binary is not built.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream as StdStream};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

const KEYS: usize = 10_000;
const KEY_LEN: usize = 32;
const VALUE_LEN: usize = 100;
/// Linux's USER_HZ, the unit of /proc/<pid>/stat times.
const CLOCK_TICKS: f64 = 100.0;

// ---------------------------------------------------------------- options

#[derive(Clone)]
struct Opts {
    duration: Duration,
    warmup: Duration,
    conns: Vec<usize>,
    mixes: Vec<u32>,
    depths: Vec<usize>,
    threads: usize,
    servers: Vec<Kind>,
    timeout: Duration,
    mckv: PathBuf,
}

fn parse_list<T: std::str::FromStr>(what: &str, text: &str) -> Result<Vec<T>, String> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse()
                .map_err(|_| format!("bad {what} value {s:?}"))
        })
        .collect()
}

fn parse_secs(what: &str, text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("bad {what} {text:?} (seconds)"))
}

impl Opts {
    /// Defaults, then environment, then argv.
    fn from_env_and_args(args: &[String]) -> Result<Opts, String> {
        let mut o = Opts {
            duration: Duration::from_secs(3),
            warmup: Duration::from_secs(1),
            conns: vec![1, 4, 16, 50],
            mixes: vec![90, 50],
            depths: vec![1, 16],
            threads: 1,
            servers: vec![Kind::Memcached, Kind::Mckv],
            timeout: Duration::from_millis(1000),
            mckv: Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/mckv"),
        };
        let mut settings: Vec<(String, String)> = Vec::new();
        for (env, key) in [
            ("LOAD_DURATION", "duration"),
            ("LOAD_WARMUP", "warmup"),
            ("LOAD_CONNS", "conns"),
            ("LOAD_MIX", "mix"),
            ("LOAD_DEPTH", "depth"),
            ("LOAD_THREADS", "threads"),
            ("LOAD_SERVERS", "servers"),
            ("LOAD_TIMEOUT_MS", "timeout-ms"),
            ("MCKV_BIN", "mckv"),
        ] {
            if let Ok(v) = std::env::var(env) {
                settings.push((key.into(), v));
            }
        }
        let mut quick = std::env::var("LOAD_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                // cargo bench passes --bench; criterion-style filters are not used here.
                "--bench" => {}
                "--quick" => quick = true,
                "--help" | "-h" => return Err(String::new()),
                flag if flag.starts_with("--") => {
                    let key = &flag[2..];
                    let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
                    settings.push((key.into(), value.clone()));
                }
                other => return Err(format!("unexpected argument {other:?}")),
            }
        }
        if quick {
            o.duration = Duration::from_secs(1);
            o.warmup = Duration::from_millis(300);
        }
        for (key, v) in settings {
            match key.as_str() {
                "duration" => o.duration = parse_secs("duration", &v)?,
                "warmup" => o.warmup = parse_secs("warmup", &v)?,
                "conns" => o.conns = parse_list("conns", &v)?,
                "mix" => o.mixes = parse_list("mix", &v)?,
                "depth" => o.depths = parse_list("depth", &v)?,
                "threads" => o.threads = v.parse().map_err(|_| format!("bad threads {v:?}"))?,
                "servers" => o.servers = parse_list("servers", &v)?,
                "timeout-ms" => {
                    o.timeout = Duration::from_millis(
                        v.parse().map_err(|_| format!("bad timeout-ms {v:?}"))?,
                    )
                }
                "mckv" => o.mckv = PathBuf::from(v),
                other => return Err(format!("unknown option --{other}")),
            }
        }
        if o.conns.contains(&0) || o.depths.contains(&0) || o.threads == 0 {
            return Err("conns, depth and threads must be at least 1".into());
        }
        if o.mixes.iter().any(|&m| m > 100) {
            return Err("mix is a percentage of gets (0-100)".into());
        }
        if o.servers.is_empty() || o.conns.is_empty() || o.mixes.is_empty() || o.depths.is_empty() {
            return Err("empty list".into());
        }
        Ok(o)
    }
}

const USAGE: &str = "usage: cargo bench --bench load -- [--quick] [--duration S] [--warmup S] \
[--conns 1,4,16,50] [--mix 90,50] [--depth 1,16] [--threads N] \
[--servers memcached,mckv,linearizable,sequential,eventual,durable-always,durable-everysec,durable-no,etcd,HOST:PORT] [--timeout-ms N] [--mckv PATH]";

// ---------------------------------------------------------------- servers

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Memcached,
    Mckv,
    /// A 3-node mckv cluster in this consistency mode, driven through node 0.
    Cluster(&'static str),
    /// One mckv node with a data directory and this fsync policy.
    Durable(&'static str),
    /// A 3-member etcd cluster, driven through member 0.
    Etcd,
    /// A server someone else started (e.g. under a profiler): driven and
    /// populated, but neither started nor stopped, and its CPU not measured.
    External(SocketAddr),
}

impl std::str::FromStr for Kind {
    type Err = ();
    fn from_str(s: &str) -> Result<Kind, ()> {
        match s {
            "memcached" => Ok(Kind::Memcached),
            "mckv" => Ok(Kind::Mckv),
            "linearizable" => Ok(Kind::Cluster("linearizable")),
            "sequential" => Ok(Kind::Cluster("sequential")),
            "eventual" => Ok(Kind::Cluster("eventual")),
            "durable-always" => Ok(Kind::Durable("always")),
            "durable-everysec" => Ok(Kind::Durable("everysec")),
            "durable-no" => Ok(Kind::Durable("no")),
            "etcd" => Ok(Kind::Etcd),
            addr => addr.parse().map(Kind::External).map_err(|_| ()),
        }
    }
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Memcached => "memcached",
            Kind::Mckv => "mckv",
            Kind::Cluster(mode) => mode,
            Kind::Durable("always") => "durable-always",
            Kind::Durable("everysec") => "durable-everysec",
            Kind::Durable(_) => "durable-no",
            Kind::Etcd => "etcd",
            Kind::External(_) => "external",
        }
    }

    fn protocol(self) -> Protocol {
        match self {
            Kind::Etcd => Protocol::EtcdHttp,
            _ => Protocol::Memcached,
        }
    }
}

/// How a server is spoken to: the requests, the replies' framing, readiness.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Protocol {
    /// The memcached text protocol (memcached, mckv, a server started by hand).
    Memcached,
    /// etcd's v3 JSON gateway over HTTP/1.1.
    EtcdHttp,
}

/// A server process; killed (by pid) when dropped.
struct Server {
    label: String,
    protocol: Protocol,
    addr: SocketAddr,
    /// Empty for an external server; three for a cluster (node 0 first).
    children: Vec<Child>,
    dead: Option<String>,
    _tmp: Option<TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts a 3-node cluster in `mode` whose node 0 serves clients on `port`.
fn start_cluster(mode: &str, port: u16, opts: &Opts, seq: usize) -> Result<Server, String> {
    let dir = std::env::temp_dir().join(format!("mckv-load-{}-{seq}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{dir:?}: {e}"))?;
    let mut config = format!("[cluster]\nname = load\nconsistency = {mode}\nsecret = load\n");
    for id in 0..3 {
        let client = if id == 0 {
            port
        } else {
            free_port().map_err(|e| e.to_string())?
        };
        let peer = free_port().map_err(|e| e.to_string())?;
        config.push_str(&format!(
            "[node.{id}]\nclient = 127.0.0.1:{client}\npeer = 127.0.0.1:{peer}\n"
        ));
    }
    let path = dir.join("config.ini");
    std::fs::write(&path, config).map_err(|e| format!("{path:?}: {e}"))?;
    let mut children = Vec::new();
    for id in 0..3 {
        let child = Command::new(&opts.mckv)
            .args(["server", "--config"])
            .arg(&path)
            .args([
                "--node",
                &id.to_string(),
                "--log-level",
                "warn",
                "--log-file",
            ])
            .arg(dir.join(format!("node{id}.log")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start a {mode} node: {e}"))?;
        children.push(child);
    }
    let mut server = Server {
        label: mode.to_string(),
        protocol: Protocol::Memcached,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        children,
        dead: None,
        _tmp: Some(TempDir(dir)),
    };
    server.wait_ready()?;
    Ok(server)
}

/// Starts a 3-member etcd cluster whose member 0 serves clients on `port`.
fn start_etcd(label: &str, port: u16, seq: usize) -> Result<Server, String> {
    let dir = std::env::temp_dir().join(format!("mckv-load-{}-{seq}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{dir:?}: {e}"))?;
    let mut server = Server {
        label: label.to_string(),
        protocol: Protocol::EtcdHttp,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        children: Vec::new(),
        dead: None,
        _tmp: Some(TempDir(dir.clone())),
    };
    let ports = || free_port().map_err(|e| format!("no free port: {e}"));
    let clients = [port, ports()?, ports()?];
    let peers = [ports()?, ports()?, ports()?];
    let url = |port: u16| format!("http://127.0.0.1:{port}");
    let cluster: Vec<String> = (0..3).map(|i| format!("n{i}={}", url(peers[i]))).collect();
    let token = format!("load-{}-{seq}", std::process::id());
    for i in 0..3 {
        let (client, peer) = (url(clients[i]), url(peers[i]));
        // Spawned into `server` one by one, so a failure kills those already up.
        let child = Command::new("etcd")
            .args(["--name", &format!("n{i}"), "--data-dir"])
            .arg(dir.join(format!("n{i}")))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &cluster.join(",")])
            .args([
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                &token,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start etcd: {e}"))?;
        server.children.push(child);
    }
    server.wait_ready()?;
    Ok(server)
}

impl Server {
    fn start(kind: Kind, label: String, opts: &Opts, seq: usize) -> Result<Server, String> {
        if let Kind::External(addr) = kind {
            let mut server = Server {
                label: format!("{label}({addr})"),
                protocol: Protocol::Memcached,
                addr,
                children: Vec::new(),
                dead: None,
                _tmp: None,
            };
            server.wait_ready()?;
            return Ok(server);
        }
        let mut last_err = String::new();
        // A free port can be taken between the probe and the server's bind: retry.
        for _ in 0..5 {
            let port = free_port().map_err(|e| format!("no free port: {e}"))?;
            let (mut cmd, tmp) = match kind {
                Kind::Memcached => {
                    let mut cmd = Command::new("memcached");
                    cmd.args(["-l", "127.0.0.1", "-p", &port.to_string()]);
                    cmd.args(["-U", "0", "-t", "1", "-u", "root"]);
                    (cmd, None)
                }
                Kind::Mckv => {
                    let dir = std::env::temp_dir()
                        .join(format!("mckv-load-{}-{seq}-{port}", std::process::id()));
                    std::fs::create_dir_all(&dir).map_err(|e| format!("{dir:?}: {e}"))?;
                    let mut cmd = Command::new(&opts.mckv);
                    cmd.args(["server", "--port", &port.to_string(), "--log-file"]);
                    cmd.arg(dir.join("mckv.log"));
                    cmd.args(["--log-level", "warn"]);
                    (cmd, Some(TempDir(dir)))
                }
                Kind::Durable(fsync) => {
                    let dir = std::env::temp_dir()
                        .join(format!("mckv-load-{}-{seq}-{port}", std::process::id()));
                    std::fs::create_dir_all(&dir).map_err(|e| format!("{dir:?}: {e}"))?;
                    let peer = free_port().map_err(|e| format!("no free port: {e}"))?;
                    let config = format!(
                        "[cluster]\nfsync = {fsync}\n[node.0]\nclient = 127.0.0.1:{port}\n\
                         peer = 127.0.0.1:{peer}\ndata_dir = {}\n",
                        dir.join("data").display()
                    );
                    let path = dir.join("config.ini");
                    std::fs::write(&path, config).map_err(|e| format!("{path:?}: {e}"))?;
                    let mut cmd = Command::new(&opts.mckv);
                    cmd.arg("server")
                        .arg("--config")
                        .arg(&path)
                        .arg("--log-file");
                    cmd.arg(dir.join("mckv.log"));
                    cmd.args(["--log-level", "warn"]);
                    (cmd, Some(TempDir(dir)))
                }
                Kind::Cluster(mode) => match start_cluster(mode, port, opts, seq) {
                    Ok(server) => return Ok(server),
                    Err(e) => {
                        last_err = e;
                        continue;
                    }
                },
                Kind::Etcd => match start_etcd(&label, port, seq) {
                    Ok(server) => return Ok(server),
                    Err(e) => {
                        last_err = e;
                        continue;
                    }
                },
                Kind::External(_) => unreachable!("handled above"),
            };
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let child = cmd
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", kind.name()))?;
            let mut server = Server {
                label: label.clone(),
                protocol: kind.protocol(),
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                children: vec![child],
                dead: None,
                _tmp: tmp,
            };
            match server.wait_ready() {
                Ok(()) => return Ok(server),
                Err(e) => last_err = e,
            }
        }
        Err(format!("{label} did not start: {last_err}"))
    }

    /// Waits until the server is ready for the load: answering, and (a
    /// cluster) with every node up, or (etcd) with a leader committing puts.
    fn wait_ready(&mut self) -> Result<(), String> {
        let (patience, unready) = match self.protocol {
            Protocol::Memcached => (5, "not answering `show` (or a node not up)"),
            // Electing etcd's first leader takes a few seconds.
            Protocol::EtcdHttp => (15, "no put through member 0 succeeded (no leader?)"),
        };
        let deadline = Instant::now() + Duration::from_secs(patience);
        loop {
            for child in &mut self.children {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("exited with {status}"));
                }
            }
            let ready = match self.protocol {
                // A server started by hand may be a cluster of any size.
                Protocol::Memcached => {
                    memcached_ready(self.addr, Some(self.children.len()).filter(|&n| n > 0))
                }
                Protocol::EtcdHttp => etcd_ready(self.addr),
            };
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{unready} after {patience} s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process whose CPU is measured: the server, or a cluster's node 0
    /// (the one the load goes through).
    fn pid(&self) -> Option<u32> {
        self.children.first().map(Child::id)
    }

    /// CPU seconds of every process of the server (all of a cluster's nodes).
    fn all_cpu_seconds(&self) -> Option<f64> {
        self.children
            .iter()
            .map(|c| cpu_seconds(&c.id().to_string()))
            .sum()
    }

    fn check_alive(&mut self) {
        for child in &mut self.children {
            if self.dead.is_none() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.dead = Some(format!("exited with {status}"));
                }
            }
        }
    }
}

/// Whether the server at `addr` answers, and, if it is mckv, shows every
/// node up (`nodes` of them, when known).
fn memcached_ready(addr: SocketAddr, nodes: Option<usize>) -> bool {
    let Ok(mut s) = StdStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 4096];
    if s.write_all(b"show\r\n").is_err() {
        return false;
    }
    let Ok(n) = s.read(&mut buf) else {
        return false;
    };
    let show = String::from_utf8_lossy(&buf[..n]);
    let listed: Vec<&str> = show.lines().filter(|l| l.starts_with("NODE ")).collect();
    let up = listed
        .iter()
        .filter(|l| l.split(' ').nth(3) == Some("up"))
        .count();
    let all_up = up == listed.len() && nodes.is_none_or(|n| n == up);
    // memcached has no `show`: its ERROR is an answer too.
    (show.ends_with("END\r\n") && all_up) || show.starts_with("ERROR")
}

/// Whether etcd commits a put through `addr` (answered 200): a leader is
/// elected. The put is key 0's, with its value, so it adds nothing.
fn etcd_ready(addr: SocketAddr) -> bool {
    let Ok(mut s) = StdStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    // A put waits for a leader; give up on this one and ask again.
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(&etcd_put(key(0).as_bytes(), &value(0)))
        .is_err()
    {
        return false;
    }
    let mut input = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match parse_http(&input) {
            Ok(Some((status, _))) => return status == 200,
            Ok(None) => {}
            Err(_) => return false,
        }
        match s.read(&mut buf) {
            Ok(n) if n > 0 => input.extend_from_slice(&buf[..n]),
            _ => return false,
        }
    }
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of the file (utime, stime); `after` starts at field 3.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / CLOCK_TICKS)
}

/// CPU seconds the whole machine spent busy (steal included: a host taking
/// the CPU away is noise too), from /proc/stat.
fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle and iowait.
    let busy: f64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum();
    Some(busy / CLOCK_TICKS)
}

/// Busy CPU (in cores) of everything but the server and the generator above
/// which a cell is flagged as disturbed.
const OTHER_CPU_FLAG: f64 = 0.15;

// ---------------------------------------------------------------- workload

/// Every request and what proves its reply right, built once per protocol.
struct Workload {
    protocol: Protocol,
    get_req: Vec<Vec<u8>>,
    set_req: Vec<Vec<u8>>,
    /// What a `get` of the key must answer: memcached's whole reply; for
    /// etcd, the `"value":"<base64>"` its JSON body must contain (the rest
    /// of the body carries revisions that change with every write).
    get_expected: Vec<Vec<u8>>,
}

fn key(i: usize) -> String {
    let k = format!("key:{i:028}");
    debug_assert_eq!(k.len(), KEY_LEN);
    k
}

/// A key's value: the same bytes every time the key is written.
fn value(i: usize) -> Vec<u8> {
    (0..VALUE_LEN)
        .map(|j| b'a' + ((i + j) % 26) as u8)
        .collect()
}

/// Standard base64 with padding: how etcd's JSON gateway carries bytes.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let group = byte(0) << 16 | byte(1) << 8 | byte(2);
        // n input bytes make n + 1 digits; `=` pads the group to 4.
        for digit in 0..4 {
            if digit <= chunk.len() {
                out.push(char::from(
                    ALPHABET[(group >> (18 - 6 * digit) & 63) as usize],
                ));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An HTTP/1.1 request to etcd's v3 JSON gateway, `POST /v3/kv/{method}`.
fn etcd_request(method: &str, body: &str) -> Vec<u8> {
    format!(
        "POST /v3/kv/{method} HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn etcd_put(key: &[u8], value: &[u8]) -> Vec<u8> {
    let body = format!(r#"{{"key":"{}","value":"{}"}}"#, base64(key), base64(value));
    etcd_request("put", &body)
}

/// A range of one key, with etcd's default (linearizable) consistency.
fn etcd_range(key: &[u8]) -> Vec<u8> {
    etcd_request("range", &format!(r#"{{"key":"{}"}}"#, base64(key)))
}

impl Workload {
    fn new(protocol: Protocol) -> Workload {
        let mut w = Workload {
            protocol,
            get_req: Vec::with_capacity(KEYS),
            set_req: Vec::with_capacity(KEYS),
            get_expected: Vec::with_capacity(KEYS),
        };
        for i in 0..KEYS {
            let k = key(i);
            let v = value(i);
            match protocol {
                Protocol::Memcached => {
                    w.get_req.push(format!("get {k}\r\n").into_bytes());
                    let mut set = format!("set {k} 0 0 {VALUE_LEN}\r\n").into_bytes();
                    set.extend_from_slice(&v);
                    set.extend_from_slice(b"\r\n");
                    w.set_req.push(set);
                    let mut reply = format!("VALUE {k} 0 {VALUE_LEN}\r\n").into_bytes();
                    reply.extend_from_slice(&v);
                    reply.extend_from_slice(b"\r\nEND\r\n");
                    w.get_expected.push(reply);
                }
                Protocol::EtcdHttp => {
                    w.get_req.push(etcd_range(k.as_bytes()));
                    w.set_req.push(etcd_put(k.as_bytes(), &v));
                    let expected = format!(r#""value":"{}""#, base64(&v));
                    w.get_expected.push(expected.into_bytes());
                }
            }
        }
        w
    }
}

/// Connections `populate` spreads the keys over: etcd answers a connection's
/// requests one after another, each after its own commit (about 1,000 a
/// second here), which would make one connection take 10 s.
const POPULATE_CONNS: usize = 8;

/// Stores every key (pipelined, 100 at a time per connection) and checks
/// that one reads back.
fn populate(addr: SocketAddr, w: &Workload) -> Result<(), String> {
    std::thread::scope(|scope| {
        let shares: Vec<_> = (0..POPULATE_CONNS)
            .map(|share| scope.spawn(move || populate_share(addr, w, share)))
            .collect();
        shares
            .into_iter()
            .try_for_each(|h| h.join().expect("populate thread panicked"))
    })?;
    let mut s = populate_connect(addr)?;
    let last = KEYS - 1;
    s.write_all(&w.get_req[last])
        .map_err(|e| format!("write: {e}"))?;
    match read_reply(&mut s, &mut Vec::new(), Expect::Get(last as u32), w)? {
        (Outcome::Ok, _) => Ok(()),
        (_, reply) => Err(format!("a stored key does not read back: {reply:?}")),
    }
}

/// Stores every `POPULATE_CONNS`-th key from `share` on one connection.
fn populate_share(addr: SocketAddr, w: &Workload, share: usize) -> Result<(), String> {
    let mut s = populate_connect(addr)?;
    let keys: Vec<usize> = (share..KEYS).step_by(POPULATE_CONNS).collect();
    let mut input = Vec::new();
    for batch in keys.chunks(100) {
        let out: Vec<u8> = batch
            .iter()
            .flat_map(|&i| w.set_req[i].iter().copied())
            .collect();
        s.write_all(&out).map_err(|e| format!("write: {e}"))?;
        for _ in batch {
            if let (Outcome::Miss | Outcome::Wrong, reply) =
                read_reply(&mut s, &mut input, Expect::Set, w)?
            {
                return Err(format!("a set was answered {reply:?}"));
            }
        }
    }
    Ok(())
}

fn populate_connect(addr: SocketAddr) -> Result<StdStream, String> {
    let s = StdStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// Reads (blocking) until the reply at the head of `input` is complete;
/// takes it out of `input` and returns its outcome and its text.
fn read_reply(
    s: &mut StdStream,
    input: &mut Vec<u8>,
    expect: Expect,
    w: &Workload,
) -> Result<(Outcome, String), String> {
    let mut buf = [0u8; 4096];
    loop {
        match frame(input, expect, w) {
            Framing::Done(outcome, used) => {
                let text = String::from_utf8_lossy(&input[..used]).into_owned();
                input.drain(..used);
                return Ok((outcome, text));
            }
            Framing::Incomplete => {}
            Framing::Broken(why) => {
                let head = String::from_utf8_lossy(&input[..input.len().min(300)]);
                return Err(format!("unparsable reply ({why}): {head:?}"));
            }
        }
        let n = s.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        input.extend_from_slice(&buf[..n]);
    }
}

// ---------------------------------------------------------------- generator

#[derive(Clone, Copy, Debug)]
struct Cell {
    conns: usize,
    get_percent: u32,
    depth: usize,
}

impl Cell {
    fn name(&self) -> String {
        format!(
            "{:>3} conn  {:>2}/{:<2}  depth {:>2}",
            self.conns,
            self.get_percent,
            100 - self.get_percent,
            self.depth
        )
    }
}

#[derive(Clone, Copy)]
struct Times {
    start: Instant,
    measure: Instant,
    end: Instant,
}

#[derive(Default, Clone, Copy)]
struct Errors {
    /// A reply other than the one expected (including `SERVER_ERROR`s).
    wrong: u64,
    /// A `get` of a stored key that found nothing.
    miss: u64,
    /// Requests whose reply did not come within the timeout.
    timeout: u64,
    /// Connect failures, closed connections, unparsable replies, and the
    /// requests lost with them.
    io: u64,
}

impl Errors {
    fn total(&self) -> u64 {
        self.wrong + self.miss + self.timeout + self.io
    }

    fn add(&mut self, o: &Errors) {
        self.wrong += o.wrong;
        self.miss += o.miss;
        self.timeout += o.timeout;
        self.io += o.io;
    }
}

struct Stats {
    hist: Histogram<u64>,
    /// Replies completed in the measured window.
    measured: u64,
    /// Replies completed over the whole cell (warm-up included).
    completed: u64,
    errors: Errors,
    bytes_out: u64,
    bytes_in: u64,
    /// What the first io error was (the details say it: a count alone would
    /// hide, say, a server answering in a way that cannot be framed).
    first_io_error: Option<String>,
}

impl Stats {
    fn new() -> Stats {
        Stats {
            // Nanoseconds, 1 ns to 100 s, 3 significant digits.
            hist: Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("histogram bounds"),
            measured: 0,
            completed: 0,
            errors: Errors::default(),
            bytes_out: 0,
            bytes_in: 0,
            first_io_error: None,
        }
    }

    /// Counts an io error: it cost the connection and the `lost` requests
    /// that were in flight on it.
    fn io_error(&mut self, e: &io::Error, lost: u64) {
        self.errors.io += 1 + lost;
        self.first_io_error.get_or_insert_with(|| e.to_string());
    }

    fn merge(&mut self, o: &Stats) {
        self.hist.add(&o.hist).expect("same histogram bounds");
        self.measured += o.measured;
        self.completed += o.completed;
        self.errors.add(&o.errors);
        self.bytes_out += o.bytes_out;
        self.bytes_in += o.bytes_in;
        if self.first_io_error.is_none() {
            self.first_io_error.clone_from(&o.first_io_error);
        }
    }
}

#[derive(Clone, Copy)]
enum Expect {
    Get(u32),
    Set,
}

struct Pending {
    expect: Expect,
    sent: Instant,
}

/// Input buffer: filled at `end`, parsed from `start`; never zeroed again.
const IN_BUF: usize = 256 * 1024;

struct Conn {
    stream: Option<TcpStream>,
    out: Vec<u8>,
    out_at: usize,
    input: Vec<u8>,
    in_start: usize,
    in_end: usize,
    inflight: VecDeque<Pending>,
    rng: u64,
}

enum Outcome {
    Ok,
    Miss,
    Wrong,
}

enum Framing {
    Done(Outcome, usize),
    Incomplete,
    /// The bytes cannot be framed as a reply (why): the connection is out of step.
    Broken(&'static str),
}

fn find_newline(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}

/// Frames the reply at the head of `buf` and checks it against `expect`.
fn frame(buf: &[u8], expect: Expect, w: &Workload) -> Framing {
    match w.protocol {
        Protocol::Memcached => frame_memcached(buf, expect, w),
        Protocol::EtcdHttp => frame_etcd(buf, expect, w),
    }
}

fn frame_memcached(buf: &[u8], expect: Expect, w: &Workload) -> Framing {
    match expect {
        Expect::Set => match find_newline(buf) {
            Some(nl) if &buf[..=nl] == b"STORED\r\n" => Framing::Done(Outcome::Ok, nl + 1),
            Some(nl) => Framing::Done(Outcome::Wrong, nl + 1),
            None if buf.len() > 4096 => Framing::Broken("no end of line in 4 KiB"),
            None => Framing::Incomplete,
        },
        Expect::Get(k) => {
            let want = &w.get_expected[k as usize];
            if buf.len() >= want.len() && &buf[..want.len()] == want.as_slice() {
                return Framing::Done(Outcome::Ok, want.len());
            }
            // Not the expected bytes (or not all here yet): frame it properly.
            let mut at = 0;
            let mut values = 0;
            loop {
                let Some(nl) = find_newline(&buf[at..]) else {
                    return if buf.len() - at > 4096 {
                        Framing::Broken("no end of line in 4 KiB")
                    } else {
                        Framing::Incomplete
                    };
                };
                let line = &buf[at..at + nl + 1];
                if line == b"END\r\n" {
                    let outcome = if values == 0 {
                        Outcome::Miss
                    } else {
                        Outcome::Wrong
                    };
                    return Framing::Done(outcome, at + nl + 1);
                }
                if let Some(rest) = line.strip_prefix(b"VALUE ") {
                    let text = String::from_utf8_lossy(rest);
                    let Some(len) = text
                        .split_whitespace()
                        .nth(2)
                        .and_then(|n| n.parse::<usize>().ok())
                    else {
                        return Framing::Broken("VALUE line without a length");
                    };
                    let data_end = at + nl + 1 + len + 2;
                    if buf.len() < data_end {
                        return Framing::Incomplete;
                    }
                    if &buf[data_end - 2..data_end] != b"\r\n" {
                        return Framing::Broken("value data not followed by CRLF");
                    }
                    at = data_end;
                    values += 1;
                    continue;
                }
                if at == 0 {
                    // A one-line reply instead of a value: ERROR, SERVER_ERROR, ...
                    return Framing::Done(Outcome::Wrong, nl + 1);
                }
                return Framing::Broken("a line that is neither VALUE nor END");
            }
        }
    }
}

/// Longest response head (status line and headers) waited for.
const MAX_HTTP_HEAD: usize = 8192;

/// Frames the HTTP/1.1 response at the head of `buf`: its status and the
/// byte range of its body (whose end is the response's length), or `None`
/// while incomplete. Only a Content-Length can frame a response among
/// pipelined ones here; a chunked one is refused, not skipped over.
fn parse_http(buf: &[u8]) -> Result<Option<(u16, Range<usize>)>, &'static str> {
    let Some(head_len) = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4) else {
        return if buf.len() > MAX_HTTP_HEAD {
            Err("no end of the response head in 8 KiB")
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&buf[..head_len]).map_err(|_| "response head not UTF-8")?;
    let mut lines = head.split("\r\n").filter(|l| !l.is_empty());
    let status = lines
        .next()
        .and_then(|l| l.strip_prefix("HTTP/1."))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or("not an HTTP/1.x status line")?;
    let mut length = None;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or("header line without a colon")?;
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.trim().parse().map_err(|_| "bad Content-Length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("Transfer-Encoding (chunked) response");
        }
    }
    let length: usize = length.ok_or("response without Content-Length")?;
    let end = head_len + length;
    Ok((buf.len() >= end).then_some((status, head_len..end)))
}

fn frame_etcd(buf: &[u8], expect: Expect, w: &Workload) -> Framing {
    let (status, body) = match parse_http(buf) {
        Ok(Some(response)) => response,
        Ok(None) => return Framing::Incomplete,
        Err(why) => return Framing::Broken(why),
    };
    let used = body.end;
    let body = &buf[body];
    let contains = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    let outcome = match expect {
        _ if status != 200 => Outcome::Wrong,
        Expect::Set => Outcome::Ok,
        Expect::Get(k) if contains(&w.get_expected[k as usize]) => Outcome::Ok,
        // A range that found nothing has no `kvs` at all (and no `count`).
        Expect::Get(_) if !contains(br#""kvs""#) => Outcome::Miss,
        Expect::Get(_) => Outcome::Wrong,
    };
    Framing::Done(outcome, used)
}

impl Conn {
    fn new(seed: u64) -> Conn {
        Conn {
            stream: None,
            out: Vec::with_capacity(16 * 1024),
            out_at: 0,
            input: vec![0; IN_BUF],
            in_start: 0,
            in_end: 0,
            inflight: VecDeque::new(),
            rng: seed | 1,
        }
    }

    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn connect(&mut self, addr: SocketAddr, poll: &Poll, token: Token) -> io::Result<()> {
        let s = StdStream::connect_timeout(&addr, Duration::from_secs(1))?;
        s.set_nodelay(true)?;
        s.set_nonblocking(true)?;
        let mut s = TcpStream::from_std(s);
        poll.registry()
            .register(&mut s, token, Interest::READABLE | Interest::WRITABLE)?;
        self.stream = Some(s);
        Ok(())
    }

    /// Forgets the connection and what was in flight on it.
    fn drop_connection(&mut self, poll: &Poll) -> u64 {
        if let Some(mut s) = self.stream.take() {
            let _ = poll.registry().deregister(&mut s);
        }
        self.out.clear();
        self.out_at = 0;
        self.in_start = 0;
        self.in_end = 0;
        let lost = self.inflight.len() as u64;
        self.inflight.clear();
        lost
    }

    /// Tops the pipeline up to `depth` requests and writes what it can.
    fn fill_and_send(&mut self, cell: &Cell, w: &Workload, stats: &mut Stats) -> io::Result<()> {
        if self.inflight.len() < cell.depth {
            let now = Instant::now();
            while self.inflight.len() < cell.depth {
                let r = self.next_random();
                let k = ((r >> 16) % KEYS as u64) as usize;
                let expect = if ((r >> 48) % 100) < u64::from(cell.get_percent) {
                    self.out.extend_from_slice(&w.get_req[k]);
                    Expect::Get(k as u32)
                } else {
                    self.out.extend_from_slice(&w.set_req[k]);
                    Expect::Set
                };
                self.inflight.push_back(Pending { expect, sent: now });
            }
        }
        self.send(stats)
    }

    fn send(&mut self, stats: &mut Stats) -> io::Result<()> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        while self.out_at < self.out.len() {
            match stream.write(&self.out[self.out_at..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out_at += n;
                    stats.bytes_out += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_at = 0;
        Ok(())
    }

    /// Reads until the socket is empty, then takes every complete reply.
    fn receive(&mut self, w: &Workload, times: &Times, stats: &mut Stats) -> io::Result<()> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        loop {
            if self.in_end == self.input.len() {
                if self.in_start == 0 {
                    return Err(io::Error::other("reply larger than the input buffer"));
                }
                self.input.copy_within(self.in_start..self.in_end, 0);
                self.in_end -= self.in_start;
                self.in_start = 0;
            }
            match stream.read(&mut self.input[self.in_end..]) {
                Ok(0) => return Err(io::Error::other("server closed the connection")),
                Ok(n) => {
                    let room = self.input.len() - self.in_end;
                    self.in_end += n;
                    stats.bytes_in += n as u64;
                    // A short read emptied the socket: with epoll's edge
                    // triggering, new bytes bring a new event, so the read
                    // that would only say WouldBlock is saved (as tokio does).
                    if n < room {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let now = Instant::now();
        let measuring = now >= times.measure;
        while let Some(p) = self.inflight.front() {
            match frame(&self.input[self.in_start..self.in_end], p.expect, w) {
                Framing::Incomplete => break,
                Framing::Broken(why) => {
                    return Err(io::Error::other(format!("unparsable reply: {why}")))
                }
                Framing::Done(outcome, used) => {
                    self.in_start += used;
                    stats.completed += 1;
                    match outcome {
                        Outcome::Ok => {
                            if measuring {
                                stats.measured += 1;
                                let ns = now.duration_since(p.sent).as_nanos() as u64;
                                stats.hist.saturating_record(ns.max(1));
                            }
                        }
                        Outcome::Miss => stats.errors.miss += 1,
                        Outcome::Wrong => stats.errors.wrong += 1,
                    }
                    self.inflight.pop_front();
                }
            }
        }
        if self.in_start == self.in_end {
            self.in_start = 0;
            self.in_end = 0;
        } else if self.inflight.is_empty() {
            // Bytes nobody asked for.
            return Err(io::Error::other("unsolicited bytes from the server"));
        }
        Ok(())
    }
}

/// One generator thread: drives `ids` connections until `times.end`.
fn drive(
    addr: SocketAddr,
    ids: Vec<usize>,
    cell: Cell,
    w: Arc<Workload>,
    times: Times,
    timeout: Duration,
) -> Stats {
    let mut stats = Stats::new();
    let mut poll = Poll::new().expect("mio poll");
    let mut events = Events::with_capacity(256);
    let mut conns: Vec<Conn> = ids
        .iter()
        .map(|&id| Conn::new(0x9e37_79b9_7f4a_7c15 ^ ((id as u64 + 1) * 0x2545_f491_4f6c_dd1d)))
        .collect();
    for (i, c) in conns.iter_mut().enumerate() {
        if let Err(e) = c.connect(addr, &poll, Token(i)) {
            stats.io_error(&e, 0);
        }
    }
    if let Some(wait) = times.start.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
    for c in conns.iter_mut() {
        if c.stream.is_some() {
            if let Err(e) = c.fill_and_send(&cell, &w, &mut stats) {
                stats.io_error(&e, c.drop_connection(&poll));
            }
        }
    }
    let mut next_check = Instant::now() + Duration::from_millis(10);
    loop {
        let now = Instant::now();
        if now >= times.end {
            break;
        }
        let wait = (times.end - now).min(Duration::from_millis(10));
        if let Err(e) = poll.poll(&mut events, Some(wait)) {
            if e.kind() != io::ErrorKind::Interrupted {
                panic!("poll: {e}");
            }
        }
        for event in events.iter() {
            let i = event.token().0;
            let c = &mut conns[i];
            let mut result = Ok(());
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                result = c.receive(&w, &times, &mut stats);
            }
            if result.is_ok() && Instant::now() < times.end {
                result = c.fill_and_send(&cell, &w, &mut stats);
            }
            if let Err(e) = result {
                stats.io_error(&e, c.drop_connection(&poll));
            }
        }
        let now = Instant::now();
        if now >= next_check {
            next_check = now + Duration::from_millis(10);
            for (i, c) in conns.iter_mut().enumerate() {
                let late = c
                    .inflight
                    .front()
                    .is_some_and(|p| now.duration_since(p.sent) > timeout);
                if late {
                    stats.errors.timeout += c.drop_connection(&poll);
                }
                if c.stream.is_none() && now < times.end {
                    match c.connect(addr, &poll, Token(i)) {
                        Ok(()) => {
                            if let Err(e) = c.fill_and_send(&cell, &w, &mut stats) {
                                stats.io_error(&e, c.drop_connection(&poll));
                            }
                        }
                        Err(e) => stats.io_error(&e, 0),
                    }
                }
            }
        }
    }
    stats
}

struct CellResult {
    stats: Stats,
    window: Duration,
    server_cpu: Option<f64>,
    generator_cpu: Option<f64>,
    /// CPU used by other processes (and the host's steal) meanwhile.
    other_cpu: Option<f64>,
}

impl CellResult {
    fn disturbed(&self) -> bool {
        self.other_cpu.is_some_and(|c| c > OTHER_CPU_FLAG)
    }
}

impl CellResult {
    fn ops_per_sec(&self) -> f64 {
        self.stats.measured as f64 / self.window.as_secs_f64()
    }

    fn percentile_us(&self, q: f64) -> f64 {
        self.stats.hist.value_at_quantile(q) as f64 / 1000.0
    }
}

fn run_cell(server: &Server, cell: Cell, opts: &Opts, w: &Arc<Workload>) -> CellResult {
    let threads = opts.threads.min(cell.conns);
    let start = Instant::now() + Duration::from_millis(100);
    let times = Times {
        start,
        measure: start + opts.warmup,
        end: start + opts.warmup + opts.duration,
    };
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let ids: Vec<usize> = (t..cell.conns).step_by(threads).collect();
            let (w, addr, timeout) = (w.clone(), server.addr, opts.timeout);
            std::thread::Builder::new()
                .name(format!("load-{t}"))
                .spawn(move || drive(addr, ids, cell, w, times, timeout))
                .expect("spawn a generator thread")
        })
        .collect();
    let pid = server.pid().map(|p| p.to_string());
    let server_cpu_now = || cpu_seconds(pid.as_deref()?);
    if let Some(wait) = times.measure.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
    let cpu0 = (
        server_cpu_now(),
        cpu_seconds("self"),
        machine_busy_seconds(),
        server.all_cpu_seconds(),
    );
    if let Some(wait) = times.end.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
    let cpu1 = (
        server_cpu_now(),
        cpu_seconds("self"),
        machine_busy_seconds(),
        server.all_cpu_seconds(),
    );
    let mut stats = Stats::new();
    for h in handles {
        stats.merge(&h.join().expect("generator thread panicked"));
    }
    let window = times.end - times.measure;
    let per_window = |a: Option<f64>, b: Option<f64>| Some((b? - a?) / window.as_secs_f64());
    let server_cpu = per_window(cpu0.0, cpu1.0);
    let generator_cpu = per_window(cpu0.1, cpu1.1);
    // A cluster's other nodes are the server too, not a disturbance.
    let all_server_cpu = per_window(cpu0.3, cpu1.3);
    let other_cpu =
        (|| Some((per_window(cpu0.2, cpu1.2)? - all_server_cpu? - generator_cpu?).max(0.0)))();
    CellResult {
        stats,
        window,
        server_cpu,
        generator_cpu,
        other_cpu,
    }
}

// ---------------------------------------------------------------- report

fn command_output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

/// `etcd --version`'s first line, e.g. `etcd Version: 3.4.23`; `None` if
/// etcd is not on PATH.
fn etcd_version() -> Option<String> {
    let version = command_output("etcd", &["--version"])?;
    version.lines().next().map(str::to_string)
}

fn machine_description(opts: &Opts) -> String {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".into(), |k| k.trim().to_string());
    let memcached = command_output("memcached", &["-V"]).unwrap_or_else(|| "not found".into());
    let commit = command_output("git", &["rev-parse", "--short", "HEAD"]).map(|c| {
        let dirty = Command::new("git")
            .args(["diff", "--quiet", "HEAD", "--", "src", "Cargo.toml"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .is_ok_and(|s| s.code() == Some(1));
        if dirty {
            format!("{c} + uncommitted changes in src/")
        } else {
            c
        }
    });
    let mckv = command_output(opts.mckv.to_str().unwrap_or("mckv"), &["--version"])
        .unwrap_or_else(|| "not found".into());
    let mut s = String::new();
    let _ = writeln!(s, "machine:   {nproc} CPUs, {model}, Linux {kernel}");
    let _ = writeln!(s, "memcached: {memcached} (-t 1)");
    if opts.servers.contains(&Kind::Etcd) {
        let etcd = etcd_version().unwrap_or_else(|| "not found".into());
        let _ = writeln!(
            s,
            "etcd:      {etcd}, 3 members, defaults (fsync on), v3 JSON gateway over HTTP/1.1"
        );
    }
    let _ = writeln!(
        s,
        "mckv:      {mckv}, commit {} ({}), one node, memory store",
        commit.as_deref().unwrap_or("unknown"),
        opts.mckv.display()
    );
    let _ = writeln!(
        s,
        "load:      {KEYS} keys of {KEY_LEN} B, {VALUE_LEN} B values, uniform keys; \
         {:.1} s measured after {:.1} s warm-up per cell; {} generator thread(s); \
         timeout {} ms",
        opts.duration.as_secs_f64(),
        opts.warmup.as_secs_f64(),
        opts.threads,
        opts.timeout.as_millis()
    );
    s
}

fn fmt_us(us: f64) -> String {
    if us < 100.0 {
        format!("{us:.1}")
    } else {
        format!("{us:.0}")
    }
}

fn fmt_cpu(c: Option<f64>) -> String {
    c.map_or_else(|| "-".into(), |c| format!("{:.0}", c * 100.0))
}

fn print_table(
    servers: &[String],
    cells: &[Cell],
    results: &[Vec<Option<CellResult>>],
    baseline: Option<usize>,
) {
    let mut head1 = format!("{:<27}", "");
    let mut head2 = format!("{:<27}", "workload");
    for s in servers {
        let _ = write!(head1, "| {:<48}", s);
        let _ = write!(
            head2,
            "| {:>8} {:>7} {:>7} {:>7} {:>6} {:>6} ",
            "ops/s", "p50", "p99", "p99.9", "errors", "cpu%"
        );
    }
    let ratio_servers: Vec<usize> = match baseline {
        Some(b) => (0..servers.len()).filter(|&i| i != b).collect(),
        None => Vec::new(),
    };
    for &i in &ratio_servers {
        let b = baseline.expect("baseline");
        let _ = write!(head1, "| {:<16}", format!("{}/{}", servers[i], servers[b]));
        let _ = write!(head2, "| {:>7} {:>7} ", "ops", "p99");
    }
    println!("{head1}");
    println!("{head2}");
    println!("{}", "-".repeat(head2.len()));
    for (c, cell) in cells.iter().enumerate() {
        let disturbed = results[c].iter().flatten().any(CellResult::disturbed);
        let mark = if disturbed { " !" } else { "" };
        let mut row = format!("{:<27}", format!("{}{mark}", cell.name()));
        for result in &results[c] {
            match result {
                Some(r) => {
                    let _ = write!(
                        row,
                        "| {:>8.0} {:>7} {:>7} {:>7} {:>6} {:>6} ",
                        r.ops_per_sec(),
                        fmt_us(r.percentile_us(0.50)),
                        fmt_us(r.percentile_us(0.99)),
                        fmt_us(r.percentile_us(0.999)),
                        r.stats.errors.total(),
                        fmt_cpu(r.server_cpu)
                    );
                }
                None => {
                    let _ = write!(row, "| {:<48}", "not run (server down)");
                }
            }
        }
        for &i in &ratio_servers {
            let b = baseline.expect("baseline");
            match (&results[c][i], &results[c][b]) {
                (Some(r), Some(base)) if base.ops_per_sec() > 0.0 => {
                    let p99 = base.percentile_us(0.99);
                    let _ = write!(
                        row,
                        "| {:>7.2} {:>7} ",
                        r.ops_per_sec() / base.ops_per_sec(),
                        if p99 > 0.0 {
                            format!("{:.2}", r.percentile_us(0.99) / p99)
                        } else {
                            "-".into()
                        }
                    );
                }
                _ => {
                    let _ = write!(row, "| {:>7} {:>7} ", "-", "-");
                }
            }
        }
        println!("{row}");
    }
    println!(
        "\nlatency in µs (write of the request to read of its whole reply); cpu% = server \
         process CPU over the measured window (100 = one core); errors over the whole cell, \
         warm-up included; ratios: throughput (higher is better) and p99 (lower is better)."
    );
    if results
        .iter()
        .flatten()
        .flatten()
        .any(CellResult::disturbed)
    {
        println!(
            "! = other processes (or the host's steal) used more than {:.0}% of a CPU during \
             that cell: its numbers are disturbed; rerun on a quiet machine.",
            OTHER_CPU_FLAG * 100.0
        );
    }
}

fn print_details(servers: &[String], cells: &[Cell], results: &[Vec<Option<CellResult>>]) {
    println!(
        "\ndetails (bytes per completed request; CPU of the generator and of everything else, \
         100 = one core; error kinds):"
    );
    for (c, cell) in cells.iter().enumerate() {
        for (s, result) in results[c].iter().enumerate() {
            let Some(r) = result else { continue };
            let done = r.stats.completed.max(1) as f64;
            let e = r.stats.errors;
            let mut line = format!(
                "  {:<27} {:<12} out {:>5.1} B/op  in {:>5.1} B/op  generator cpu {:>4}%  \
                 other cpu {:>4}%",
                cell.name(),
                servers[s],
                r.stats.bytes_out as f64 / done,
                r.stats.bytes_in as f64 / done,
                fmt_cpu(r.generator_cpu),
                fmt_cpu(r.other_cpu),
            );
            if e.total() > 0 {
                let _ = write!(
                    line,
                    "  ERRORS: wrong {} miss {} timeout {} io {}",
                    e.wrong, e.miss, e.timeout, e.io
                );
            }
            if let Some(first) = &r.stats.first_io_error {
                let _ = write!(line, " (first io error: {first})");
            }
            println!("{line}");
        }
    }
}

// ---------------------------------------------------------------- main

fn newest_source_change() -> Option<SystemTime> {
    let mut newest = None;
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).ok()?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if let Ok(m) = entry.metadata().and_then(|m| m.modified()) {
                newest = newest.max(Some(m));
            }
        }
    }
    newest
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes --bench; `cargo test --benches` does not: then
    // only a smoke run, so tests do not take minutes.
    let smoke = !args.iter().any(|a| a == "--bench");
    let mut opts = match Opts::from_env_and_args(&args) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("load: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if opts.servers.contains(&Kind::Etcd) && etcd_version().is_none() {
        println!("load: etcd not installed (apt-get install etcd-server); skipped");
        opts.servers.retain(|k| *k != Kind::Etcd);
        if opts.servers.is_empty() {
            return ExitCode::SUCCESS;
        }
    }
    let wants_mckv = opts.servers.contains(&Kind::Mckv);
    if wants_mckv && !opts.mckv.is_file() {
        if smoke {
            println!(
                "load: smoke run skipped: {} is not built",
                opts.mckv.display()
            );
            return ExitCode::SUCCESS;
        }
        eprintln!(
            "load: {} not found.\nBuild it first: cd {} && cargo build --release\n\
             (or point MCKV_BIN / --mckv at an mckv binary)",
            opts.mckv.display(),
            env!("CARGO_MANIFEST_DIR")
        );
        return ExitCode::FAILURE;
    }
    if opts.servers.contains(&Kind::Memcached) && command_output("memcached", &["-V"]).is_none() {
        eprintln!("load: `memcached` is not on PATH; install it: apt-get install -y memcached");
        return ExitCode::FAILURE;
    }
    if smoke {
        opts.duration = Duration::from_millis(300);
        opts.warmup = Duration::from_millis(100);
        opts.conns = vec![4];
        opts.mixes = vec![90];
        opts.depths = vec![4];
    }
    if wants_mckv {
        let built = std::fs::metadata(&opts.mckv)
            .and_then(|m| m.modified())
            .ok();
        if let (Some(built), Some(changed)) = (built, newest_source_change()) {
            if changed > built {
                eprintln!(
                    "load: WARNING: src/ changed after {} was built; run `cargo build --release` \
                     to measure the current code",
                    opts.mckv.display()
                );
            }
        }
    }

    print!("{}", machine_description(&opts));

    // Labels: memcached, mckv; a server named twice gets #2 (calibration runs).
    let mut labels: Vec<String> = Vec::new();
    for (i, kind) in opts.servers.iter().enumerate() {
        let seen = opts.servers[..i].iter().filter(|k| *k == kind).count();
        labels.push(if seen == 0 {
            kind.name().to_string()
        } else {
            format!("{}#{}", kind.name(), seen + 1)
        });
    }
    let mut servers = Vec::new();
    // One workload per protocol, shared by the servers that speak it.
    let mut workloads: Vec<Arc<Workload>> = Vec::new();
    for (i, kind) in opts.servers.iter().enumerate() {
        let server = match Server::start(*kind, labels[i].clone(), &opts, i) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("load: {e}");
                return ExitCode::FAILURE;
            }
        };
        let workload = workloads
            .iter()
            .find(|w| w.protocol == server.protocol)
            .cloned()
            .unwrap_or_else(|| Arc::new(Workload::new(server.protocol)));
        if let Err(e) = populate(server.addr, &workload) {
            eprintln!("load: populating {}: {e}", server.label);
            return ExitCode::FAILURE;
        }
        servers.push(server);
        workloads.push(workload);
    }
    let baseline = opts.servers.iter().position(|k| *k == Kind::Memcached);

    let mut cells = Vec::new();
    for &conns in &opts.conns {
        for &get_percent in &opts.mixes {
            for &depth in &opts.depths {
                cells.push(Cell {
                    conns,
                    get_percent,
                    depth,
                });
            }
        }
    }
    let total = cells.len() * servers.len();
    let mut results: Vec<Vec<Option<CellResult>>> = Vec::new();
    let mut n = 0;
    for cell in &cells {
        let mut row = Vec::new();
        // Servers take turns cell by cell, so a drift of the machine's speed
        // during the run hits them alike.
        for (server, workload) in servers.iter_mut().zip(&workloads) {
            n += 1;
            server.check_alive();
            if let Some(why) = &server.dead {
                eprintln!(
                    "[{n}/{total}] {} {}: skipped, server {why}",
                    server.label,
                    cell.name()
                );
                row.push(None);
                continue;
            }
            let r = run_cell(server, *cell, &opts, workload);
            eprintln!(
                "[{n}/{total}] {:<12} {}: {:>8.0} ops/s  p99 {:>6} µs  errors {}",
                server.label,
                cell.name(),
                r.ops_per_sec(),
                fmt_us(r.percentile_us(0.99)),
                r.stats.errors.total()
            );
            server.check_alive();
            row.push(Some(r));
            // Let the server close the old connections before the next cell.
            std::thread::sleep(Duration::from_millis(50));
        }
        results.push(row);
    }
    println!();
    print_table(&labels, &cells, &results, baseline);
    print_details(&labels, &cells, &results);
    let mut failed = false;
    for s in &servers {
        if let Some(why) = &s.dead {
            println!("\n{}: the server {why} during the run", s.label);
            failed = true;
        }
    }
    drop(servers);
    let errors: u64 = results
        .iter()
        .flatten()
        .flatten()
        .map(|r| r.stats.errors.total())
        .sum();
    if errors > 0 {
        println!("\n{errors} errors in total (see details above)");
    }
    if failed || (smoke && errors > 0) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
