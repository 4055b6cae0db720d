//! End-to-end load bench: mckv against a bare memcached (and, on request,
//! against mckv clusters in each mode, durable nodes and etcd), same load,
//! same run. This file starts the servers; the load generator, the table,
//! the CSV and the plot are `mckv bench`'s (`src/bench/`), which this calls.
//!
//! ```sh
//! cargo build --release && cargo bench --bench load              # full run, ~2.5 min
//! cargo build --release && cargo bench --bench load -- --quick   # ~1 min
//! ```
//!
//! It starts `memcached -t 1` and `target/release/mckv server` (one node) on
//! free 127.0.0.1 ports, stores the keys in each, then runs every cell
//! (connections x get/set mix x pipelining depth) against each server in turn
//! and prints one table: ops/s, p50/p99/p99.9 latency, errors, server CPU and
//! the ratios to memcached. Servers are killed at the end (drop guards).
//! What the load is and how replies are checked: `src/bench/mod.rs`.
//! Running `--servers memcached,memcached` shows how much two runs of the
//! same server differ (the noise floor of a ratio).
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
//! trips but brings no concurrency within a connection.
//!
//! Flags (argv after `--`; each also from the environment, argv winning):
//! every flag of `mckv bench` (`--conns`, `--mix`, `--depth`, `--rate`,
//! `--duration`, `--warmup`, `--keys`, `--value-size`, `--threads`,
//! `--timeout-ms`, `--csv`, `--plot`, `--progress`; see `mckv bench --help`),
//! with other defaults, and these:
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
//! | `--servers LIST` | `LOAD_SERVERS` | memcached,mckv (also `linearizable`, `sequential`, `eventual`, `causal`: a 3-node cluster in that mode, driven through node 0; `linearizable-tls`: the same with `peer_tls = on`; `linearizable-always`, `linearizable-everysec`: the same with a data directory on every node and that fsync policy; `eventual-always`, `eventual-everysec`: a 3-node eventual cluster with a data directory on every node and that fsync policy; `durable-always`, `durable-everysec`, `durable-no`: one node with a data directory and that fsync policy; `etcd`: a 3-member etcd cluster, driven through member 0 over HTTP; or HOST:PORT: a memcached-protocol server started by hand) |
//! | `--timeout-ms N` | `LOAD_TIMEOUT_MS` | 1000 |
//! | `--mckv PATH` | `MCKV_BIN` | `target/release/mckv` |
//! | `--memory` | | off: instead of the load cells, the memory cells (`load/memory.rs`): RSS per item after 1M x 100 B (memcached, one node, a 3-node eventual cluster per node) and 10M x 10 B (memcached, one node), and the ratios; about 5 minutes |
//! | `--memory-cells LIST` | | 1m,10m: which memory cells |
//! | `--suite LIST` | `LOAD_SUITE` | grid (also `big-values`, `multi-get`, `idle-conns`, `issue16`) |
//!
//! `--suite` picks what is measured (a list; `LOAD_SUITE`):
//!
//! | suite | cells |
//! | --- | --- |
//! | `grid` (default) | every combination of `--conns`, `--mix`, `--depth` (and `--rate`, `--idle-conns`), with `--keys`, `--value-size`, `--keys-per-get` |
//! | `big-values` | 16 KiB values (1,000 keys), then 512 KiB values (100 keys): 50 connections, 90/10, depth 1 |
//! | `multi-get` | gets of 100 keys each (10,000 keys of 100 B): 50 connections, 90/10, depth 1 |
//! | `idle-conns` | 50 busy connections, 90/10, depth 1, 100 B values, alone and then with 10,000 idle connections open (each made one get); the servers' memory per idle connection |
//! | `issue16` | `idle-conns`, `big-values` and `multi-get` |
//!
//! Each suite's plan is stored and run in turn against the same servers,
//! each printing its own table (`--csv` and `--plot` keep the last one's). With `big-values`, memcached runs with
//! `-m 1024` and mckv with `memory_limit_mb = 1024`; with `idle-conns`,
//! memcached with `-c 11000` and mckv with `max_connections = 11000`, and
//! the bench raises its open-files limit (which the servers inherit).
//!
//! Run without `--bench` (as `cargo test --benches` does) it only does a
//! short smoke run, or nothing if the release binary is not built.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream as StdStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime};

use clap::{CommandFactory, FromArgMatches, Parser};
use mckv::bench::{
    etcd_put, load_line, machine_line, parse_http, raise_open_files_limit, Bench, LoadArgs, Plan,
    Protocol, Target,
};

#[path = "load/memory.rs"]
mod memory;

// ---------------------------------------------------------------- options

#[derive(Parser)]
#[command(
    name = "load",
    about = "mckv against memcached (and clusters, durable nodes, etcd) on servers it starts"
)]
struct Args {
    /// memcached, mckv, linearizable, sequential, eventual, causal, linearizable-tls,
    /// linearizable-always, linearizable-everysec, eventual-always, eventual-everysec,
    /// durable-always, durable-everysec, durable-no, etcd, or HOST:PORT of a server started by
    /// hand.
    #[arg(long, value_delimiter = ',', default_value = "memcached,mckv")]
    servers: Vec<Kind>,
    /// 1 s measured per cell after 0.3 s of warm-up (unless given).
    #[arg(long)]
    quick: bool,
    /// The mckv binary to start (default: target/release/mckv).
    #[arg(long)]
    mckv: Option<PathBuf>,
    /// Given by `cargo bench`; without it (`cargo test --benches`) only a smoke run.
    #[arg(long, hide = true)]
    bench: bool,
    /// Only the memory cells (see `load/memory.rs`): RSS per item after loading.
    #[arg(long)]
    memory: bool,
    /// With --memory: the cells to run, of 1m (1M x 100 B, also a 3-node eventual cluster) and
    /// 10m (10M x 10 B); all by default.
    #[arg(long, value_delimiter = ',')]
    memory_cells: Vec<String>,
    /// grid (the --conns x --mix x --depth cells), big-values, multi-get,
    /// idle-conns, or issue16 (the last three).
    #[arg(long, value_delimiter = ',', default_value = "grid")]
    suite: Vec<SuiteName>,
    #[command(flatten)]
    load: LoadArgs,
}

/// The environment variables that set a flag, and the flag.
const ENV_FLAGS: [(&str, &str); 10] = [
    ("LOAD_SUITE", "--suite"),
    ("LOAD_DURATION", "--duration"),
    ("LOAD_WARMUP", "--warmup"),
    ("LOAD_CONNS", "--conns"),
    ("LOAD_MIX", "--mix"),
    ("LOAD_DEPTH", "--depth"),
    ("LOAD_THREADS", "--threads"),
    ("LOAD_SERVERS", "--servers"),
    ("LOAD_TIMEOUT_MS", "--timeout-ms"),
    ("MCKV_BIN", "--mckv"),
];

impl Args {
    /// argv, and the environment's settings of flags argv does not give;
    /// this bench's defaults.
    fn parse_env_and_args() -> Args {
        let given: Vec<String> = std::env::args().skip(1).collect();
        let in_argv = |flag: &str| {
            given
                .iter()
                .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
        };
        let mut argv = vec!["load".to_string()];
        for (env, flag) in ENV_FLAGS {
            match std::env::var(env) {
                Ok(value) if !in_argv(flag) => argv.extend([flag.to_string(), value]),
                _ => {}
            }
        }
        if std::env::var("LOAD_QUICK").is_ok_and(|v| !v.is_empty() && v != "0") {
            argv.push("--quick".into());
        }
        argv.extend(given.iter().cloned());
        let quick = argv.iter().any(|a| a == "--quick");
        let (duration, warmup) = if quick { ("1", "0.3") } else { ("3", "1") };
        let command = Args::command()
            .mut_arg("conns", |a| a.default_value("1,4,16,50"))
            .mut_arg("mix", |a| a.default_value("90,50"))
            .mut_arg("depth", |a| a.default_value("1,16"))
            .mut_arg("duration", |a| a.default_value(duration))
            .mut_arg("warmup", |a| a.default_value(warmup));
        let matches = command.get_matches_from(argv);
        Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }

    fn mckv(&self) -> PathBuf {
        self.mckv
            .clone()
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/mckv"))
    }
}

// ---------------------------------------------------------------- suites

/// A name `--suite` takes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SuiteName {
    Grid,
    BigValues,
    MultiGet,
    IdleConns,
    Issue16,
}

impl std::str::FromStr for SuiteName {
    type Err = String;
    fn from_str(s: &str) -> Result<SuiteName, String> {
        match s {
            "grid" => Ok(SuiteName::Grid),
            "big-values" => Ok(SuiteName::BigValues),
            "multi-get" => Ok(SuiteName::MultiGet),
            "idle-conns" => Ok(SuiteName::IdleConns),
            "issue16" => Ok(SuiteName::Issue16),
            other => Err(format!(
                "{other:?}: grid, big-values, multi-get, idle-conns or issue16"
            )),
        }
    }
}

/// Idle connections in the `idle-conns` suite.
const IDLE_CONNS: usize = 10_000;

/// The load flags of each plan the suites run, in order: the grid is the
/// flags as given; issue 16's cells set their own load and keep only the
/// durations, threads and timeout of the flags.
fn suite_loads(names: &[SuiteName], given: &LoadArgs) -> Vec<LoadArgs> {
    let cell = |value_size: usize, keys: usize, keys_per_get: usize, idle: &[usize]| LoadArgs {
        conns: vec![50],
        mix: vec![90],
        depth: vec![1],
        rate: Vec::new(),
        keys,
        value_size,
        keys_per_get,
        idle_conns: idle.to_vec(),
        ..given.clone()
    };
    let mut loads = Vec::new();
    for name in names {
        let wanted: Vec<SuiteName> = match name {
            // Idle connections first: the servers' memory before them is
            // then not swollen with the free memory big values leave.
            SuiteName::Issue16 => vec![
                SuiteName::IdleConns,
                SuiteName::BigValues,
                SuiteName::MultiGet,
            ],
            other => vec![*other],
        };
        for suite in wanted {
            match suite {
                SuiteName::Grid => loads.push(given.clone()),
                SuiteName::BigValues => {
                    loads.push(cell(16 * 1024, 1_000, 1, &[0]));
                    loads.push(cell(512 * 1024, 100, 1, &[0]));
                }
                SuiteName::MultiGet => loads.push(cell(100, 10_000, 100, &[0])),
                // The same cell without them first: the ratio to compare with.
                SuiteName::IdleConns => loads.push(cell(100, 10_000, 1, &[0, IDLE_CONNS])),
                SuiteName::Issue16 => unreachable!("expanded above"),
            }
        }
    }
    loads
}

/// What the servers must allow for every plan of the run.
#[derive(Clone, Copy, Default)]
struct Capacity {
    /// Megabytes of values (memcached `-m`, mckv `memory_limit_mb`).
    memory_mb: Option<u64>,
    /// Client connections (memcached `-c`, mckv `max_connections`).
    connections: Option<usize>,
}

impl Capacity {
    fn of(plans: &[Plan]) -> Capacity {
        let bytes = plans
            .iter()
            .map(|p| p.keys * p.value_len)
            .max()
            .unwrap_or(0);
        let conns = plans
            .iter()
            .flat_map(|p| &p.cells)
            .map(|c| c.conns + c.idle)
            .max()
            .unwrap_or(0);
        Capacity {
            // memcached -m 64 and mckv's 64 MiB default hold the grid's load.
            memory_mb: (bytes > 16 << 20).then_some(1024),
            // memcached -c 1024 and mckv's 1024 default serve the grid.
            connections: (conns > 900).then_some(conns + 1_000),
        }
    }
}

// ---------------------------------------------------------------- servers

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Memcached,
    Mckv,
    /// A 3-node mckv cluster in this consistency mode, driven through node 0.
    Cluster(&'static str),
    /// The same with `peer_tls = on` (certificates made with `openssl`).
    ClusterTls(&'static str),
    /// A 3-node cluster in this mode (linearizable or eventual) whose nodes
    /// keep a data directory, with this fsync policy.
    ClusterDurable(&'static str, &'static str),
    /// One mckv node with a data directory and this fsync policy.
    Durable(&'static str),
    /// A 3-member etcd cluster, driven through member 0.
    Etcd,
    /// A server someone else started (e.g. under a profiler): driven and
    /// populated, but neither started nor stopped, and its CPU not measured.
    External(SocketAddr),
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Kind, String> {
        match s {
            "memcached" => Ok(Kind::Memcached),
            "mckv" => Ok(Kind::Mckv),
            "linearizable" => Ok(Kind::Cluster("linearizable")),
            "sequential" => Ok(Kind::Cluster("sequential")),
            "eventual" => Ok(Kind::Cluster("eventual")),
            "causal" => Ok(Kind::Cluster("causal")),
            "linearizable-tls" => Ok(Kind::ClusterTls("linearizable")),
            "linearizable-always" => Ok(Kind::ClusterDurable("linearizable", "always")),
            "linearizable-everysec" => Ok(Kind::ClusterDurable("linearizable", "everysec")),
            "eventual-always" => Ok(Kind::ClusterDurable("eventual", "always")),
            "eventual-everysec" => Ok(Kind::ClusterDurable("eventual", "everysec")),
            "durable-always" => Ok(Kind::Durable("always")),
            "durable-everysec" => Ok(Kind::Durable("everysec")),
            "durable-no" => Ok(Kind::Durable("no")),
            "etcd" => Ok(Kind::Etcd),
            addr => addr
                .parse()
                .map(Kind::External)
                .map_err(|_| format!("{addr:?} is no server kind nor HOST:PORT")),
        }
    }
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Memcached => "memcached",
            Kind::Mckv => "mckv",
            Kind::Cluster(mode) => mode,
            Kind::ClusterTls(_) => "linearizable-tls",
            Kind::ClusterDurable("linearizable", "always") => "linearizable-always",
            Kind::ClusterDurable("linearizable", _) => "linearizable-everysec",
            Kind::ClusterDurable(_, "always") => "eventual-always",
            Kind::ClusterDurable(..) => "eventual-everysec",
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

/// Makes a CA and a certificate for 127.0.0.1 it signed in `dir`, with
/// the commands README's "Peer TLS" gives; returns the config lines.
fn make_certs(dir: &Path) -> Result<(String, String), String> {
    let ec = "ec_paramgen_curve:prime256v1";
    let steps: [&[&str]; 3] = [
        &[
            "req", "-x509", "-newkey", "ec", "-pkeyopt", ec, "-nodes", "-days", "2",
        ],
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            ec,
            "-nodes",
            "-subj",
            "/CN=mckv node",
        ],
        &[
            "x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        ],
    ];
    let tails: [&[&str]; 3] = [
        &[
            "-subj",
            "/CN=mckv CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
        &["-keyout", "node.key", "-out", "node.csr"],
        &[
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "node.ext",
            "-out",
            "node.pem",
        ],
    ];
    let ext = "subjectAltName = IP:127.0.0.1\nextendedKeyUsage = serverAuth, clientAuth\n";
    std::fs::write(dir.join("node.ext"), ext).map_err(|e| e.to_string())?;
    for (step, tail) in steps.iter().zip(tails) {
        let ok = Command::new("openssl")
            .current_dir(dir)
            .args(*step)
            .args(tail)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("openssl: {e}"))?;
        if !ok.success() {
            return Err(format!("openssl {step:?} failed"));
        }
    }
    let cluster = format!("peer_tls = on\ntls_ca = {}\n", dir.join("ca.pem").display());
    let node = format!(
        "tls_cert = {}\ntls_key = {}\n",
        dir.join("node.pem").display(),
        dir.join("node.key").display()
    );
    Ok((cluster, node))
}

/// Starts a 3-node cluster in `mode` (its peer links over TLS if `tls`)
/// whose node 0 serves clients on `port`.
fn start_cluster(kind: Kind, port: u16, mckv: &Path, seq: usize) -> Result<Server, String> {
    let dir = std::env::temp_dir().join(format!("mckv-load-{}-{seq}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{dir:?}: {e}"))?;
    let (mode, (tls_cluster, tls_node), fsync) = match kind {
        Kind::ClusterTls(mode) => (mode, make_certs(&dir)?, None),
        Kind::ClusterDurable(mode, fsync) => (mode, Default::default(), Some(fsync)),
        Kind::Cluster(mode) => (mode, Default::default(), None),
        _ => unreachable!("not a cluster"),
    };
    let mut config =
        format!("[cluster]\nname = load\nconsistency = {mode}\nsecret = load\n{tls_cluster}");
    if let Some(fsync) = fsync {
        config.push_str(&format!("fsync = {fsync}\n"));
    }
    for id in 0..3 {
        let client = if id == 0 {
            port
        } else {
            free_port().map_err(|e| e.to_string())?
        };
        let peer = free_port().map_err(|e| e.to_string())?;
        config.push_str(&format!(
            "[node.{id}]\nclient = 127.0.0.1:{client}\npeer = 127.0.0.1:{peer}\n{tls_node}"
        ));
        if fsync.is_some() {
            let data = dir.join(format!("data{id}"));
            config.push_str(&format!("data_dir = {}\n", data.display()));
        }
    }
    let path = dir.join("config.ini");
    std::fs::write(&path, config).map_err(|e| format!("{path:?}: {e}"))?;
    let mut children = Vec::new();
    for id in 0..3 {
        let child = Command::new(mckv)
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
        label: kind.name().to_string(),
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
    fn start(
        kind: Kind,
        label: String,
        mckv: &Path,
        seq: usize,
        capacity: Capacity,
    ) -> Result<Server, String> {
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
                    if let Some(mb) = capacity.memory_mb {
                        cmd.args(["-m", &mb.to_string()]);
                    }
                    if let Some(conns) = capacity.connections {
                        cmd.args(["-c", &conns.to_string()]);
                    }
                    (cmd, None)
                }
                Kind::Mckv => {
                    let dir = std::env::temp_dir()
                        .join(format!("mckv-load-{}-{seq}-{port}", std::process::id()));
                    std::fs::create_dir_all(&dir).map_err(|e| format!("{dir:?}: {e}"))?;
                    let mut cmd = Command::new(mckv);
                    cmd.args(["server", "--port", &port.to_string(), "--log-file"]);
                    cmd.arg(dir.join("mckv.log"));
                    cmd.args(["--log-level", "warn"]);
                    if capacity.memory_mb.is_some() || capacity.connections.is_some() {
                        let mut config = String::from("[cluster]\n");
                        if let Some(mb) = capacity.memory_mb {
                            config.push_str(&format!("memory_limit_mb = {mb}\n"));
                        }
                        if let Some(conns) = capacity.connections {
                            config.push_str(&format!("max_connections = {conns}\n"));
                        }
                        let peer = free_port().map_err(|e| format!("no free port: {e}"))?;
                        config.push_str(&format!(
                            "[node.0]\nclient = 127.0.0.1:{port}\npeer = 127.0.0.1:{peer}\n"
                        ));
                        let path = dir.join("config.ini");
                        std::fs::write(&path, config).map_err(|e| format!("{path:?}: {e}"))?;
                        cmd.arg("--config").arg(&path);
                    }
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
                    let mut cmd = Command::new(mckv);
                    cmd.arg("server")
                        .arg("--config")
                        .arg(&path)
                        .arg("--log-file");
                    cmd.arg(dir.join("mckv.log"));
                    cmd.args(["--log-level", "warn"]);
                    (cmd, Some(TempDir(dir)))
                }
                Kind::Cluster(_) | Kind::ClusterTls(_) | Kind::ClusterDurable(..) => {
                    match start_cluster(kind, port, mckv, seq) {
                        Ok(server) => return Ok(server),
                        Err(e) => {
                            last_err = e;
                            continue;
                        }
                    }
                }
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
            Protocol::Memcached => (5, "not answering `show`, a node not up, or no set stored"),
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

    /// What the generator drives: node 0 (or member 0) of a cluster is the
    /// process whose CPU the table shows; all of them are the server.
    fn target(&self) -> Target {
        Target {
            name: self.label.clone(),
            addr: self.addr,
            protocol: self.protocol,
            pids: self.children.iter().map(Child::id).collect(),
        }
    }

    /// Why the server is down, if it is (checked before each cell).
    fn check_alive(&mut self) -> Option<String> {
        for child in &mut self.children {
            if self.dead.is_none() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.dead = Some(format!("exited with {status}"));
                }
            }
        }
        self.dead.clone()
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
    let show = String::from_utf8_lossy(&buf[..n]).into_owned();
    let listed: Vec<&str> = show.lines().filter(|l| l.starts_with("NODE ")).collect();
    let up = listed
        .iter()
        .filter(|l| l.split(' ').nth(3) == Some("up"))
        .count();
    let all_up = up == listed.len() && nodes.is_none_or(|n| n == up);
    // memcached has no `show`: its ERROR is an answer too.
    let answered = (show.ends_with("END\r\n") && all_up) || show.starts_with("ERROR");
    // Every node up is not yet a view of them all formed (a view of a
    // majority may form first, and take the last one in later): node 0
    // must serve in one, and store a write (the key is none of the load's).
    let mut ask = |request: &[u8]| {
        let mut reply = Vec::new();
        let mut chunk = [0u8; 4096];
        if s.write_all(request).is_ok() {
            // `stats` takes several reads; anything else one line.
            while let Ok(n @ 1..) = s.read(&mut chunk) {
                reply.extend_from_slice(&chunk[..n]);
                if !request.starts_with(b"stats") || reply.ends_with(b"END\r\n") {
                    break;
                }
            }
        }
        String::from_utf8_lossy(&reply).into_owned()
    };
    let in_full_view = |stats: &str| {
        let members = stats
            .lines()
            .find_map(|l| l.strip_prefix("STAT mckv_view_members "))
            .map_or(0, |m| m.split(',').count());
        stats.contains("STAT mckv_role member") && nodes.is_none_or(|n| n == members)
    };
    answered
        && (show.starts_with("ERROR") || listed.len() < 2 || in_full_view(&ask(b"stats\r\n")))
        && ask(b"set load-ready 0 0 1\r\n1\r\n") == "STORED\r\n"
}

/// Whether etcd commits a put through `addr` (answered 200): a leader is
/// elected. The key it puts is none of the load's.
fn etcd_ready(addr: SocketAddr) -> bool {
    let Ok(mut s) = StdStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    // A put waits for a leader; give up on this one and ask again.
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(&etcd_put(b"load-ready", b"1")).is_err() {
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

/// What was measured with what: the machine, the servers' versions and
/// settings, the commit (the load is printed before each plan's table).
fn description(servers: &[Kind], mckv: &Path, capacity: Capacity) -> String {
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
    let version = command_output(mckv.to_str().unwrap_or("mckv"), &["--version"])
        .unwrap_or_else(|| "not found".into());
    let mut flags = String::from("-t 1");
    let mut settings = String::new();
    if let Some(mb) = capacity.memory_mb {
        flags.push_str(&format!(" -m {mb}"));
        settings.push_str(&format!(", memory_limit_mb = {mb}"));
    }
    if let Some(conns) = capacity.connections {
        flags.push_str(&format!(" -c {conns}"));
        settings.push_str(&format!(", max_connections = {conns}"));
    }
    let mut s = machine_line();
    s.push_str(&format!("memcached: {memcached} ({flags})\n"));
    if servers.contains(&Kind::Etcd) {
        let etcd = etcd_version().unwrap_or_else(|| "not found".into());
        s.push_str(&format!(
            "etcd:      {etcd}, 3 members, defaults (fsync on), v3 JSON gateway over HTTP/1.1\n"
        ));
    }
    s.push_str(&format!(
        "mckv:      {version}, commit {} ({}), one node, memory store{settings}\n",
        commit.as_deref().unwrap_or("unknown"),
        mckv.display()
    ));
    s
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

/// Warns if `src/` changed after `mckv` was built: the run would measure old code.
fn warn_if_stale(mckv: &Path) {
    let built = std::fs::metadata(mckv).and_then(|m| m.modified()).ok();
    if let (Some(built), Some(changed)) = (built, newest_source_change()) {
        if changed > built {
            eprintln!(
                "load: WARNING: src/ changed after {} was built; run `cargo build --release` \
                 to measure the current code",
                mckv.display()
            );
        }
    }
}

/// Labels: memcached, mckv; a server named twice gets #2 (calibration runs).
fn labels(servers: &[Kind]) -> Vec<String> {
    servers
        .iter()
        .enumerate()
        .map(
            |(i, kind)| match servers[..i].iter().filter(|k| *k == kind).count() {
                0 => kind.name().to_string(),
                seen => format!("{}#{}", kind.name(), seen + 1),
            },
        )
        .collect()
}

/// Whether what the run needs is there; `Err(exit code)` if not (success
/// for a smoke run that has nothing to run).
fn check_prerequisites(args: &mut Args, mckv: &Path, smoke: bool) -> Result<(), ExitCode> {
    if args.servers.contains(&Kind::Etcd) && etcd_version().is_none() {
        println!("load: etcd not installed (apt-get install etcd-server); skipped");
        args.servers.retain(|k| *k != Kind::Etcd);
        if args.servers.is_empty() {
            return Err(ExitCode::SUCCESS);
        }
    }
    let wants_mckv = args.servers.contains(&Kind::Mckv);
    if wants_mckv && !mckv.is_file() {
        if smoke {
            println!("load: smoke run skipped: {} is not built", mckv.display());
            return Err(ExitCode::SUCCESS);
        }
        eprintln!(
            "load: {} not found.\nBuild it first: cd {} && cargo build --release\n\
             (or point MCKV_BIN / --mckv at an mckv binary)",
            mckv.display(),
            env!("CARGO_MANIFEST_DIR")
        );
        return Err(ExitCode::FAILURE);
    }
    if args.servers.contains(&Kind::Memcached) && command_output("memcached", &["-V"]).is_none() {
        eprintln!("load: `memcached` is not on PATH; install it: apt-get install -y memcached");
        return Err(ExitCode::FAILURE);
    }
    if wants_mckv {
        warn_if_stale(mckv);
    }
    Ok(())
}

/// `--memory`: the memory cells instead of the load cells.
fn run_memory(mckv: &Path, cells: &[String]) -> ExitCode {
    warn_if_stale(mckv);
    print!("{}", machine_line());
    let memcached = command_output("memcached", &["-V"]).unwrap_or_else(|| "not found".into());
    println!("memcached: {memcached}");
    let commit = command_output("git", &["rev-parse", "--short", "HEAD"]);
    println!(
        "mckv:      commit {}",
        commit.as_deref().unwrap_or("unknown")
    );
    match memory::run(mckv, cells) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let mut args = Args::parse_env_and_args();
    // `cargo bench` passes --bench; `cargo test --benches` does not: then
    // only a smoke run, so tests do not take minutes.
    let smoke = !args.bench;
    let mckv = args.mckv();
    if args.memory && !smoke {
        return run_memory(&mckv, &args.memory_cells);
    }
    if let Err(code) = check_prerequisites(&mut args, &mckv, smoke) {
        return code;
    }
    if smoke {
        let load = &mut args.load;
        (load.duration, load.warmup) = (0.3, 0.1);
        (load.conns, load.mix, load.depth) = (vec![4], vec![90], vec![4]);
        args.suite = vec![SuiteName::Grid];
    }
    let loads = suite_loads(&args.suite, &args.load);
    let plans = match loads.iter().map(Plan::new).collect::<Result<Vec<_>, _>>() {
        Ok(plans) => plans,
        Err(e) => {
            eprintln!("load: {e}");
            return ExitCode::from(2);
        }
    };
    let capacity = Capacity::of(&plans);
    if capacity.connections.is_some() {
        raise_open_files_limit();
    }
    print!("{}", description(&args.servers, &mckv, capacity));

    let mut servers = Vec::new();
    for (i, (kind, label)) in args.servers.iter().zip(labels(&args.servers)).enumerate() {
        match Server::start(*kind, label, &mckv, i, capacity) {
            Ok(server) => servers.push(server),
            Err(e) => {
                eprintln!("load: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let mut failed = false;
    let mut errors = 0;
    for plan in plans {
        print!("\n{}", load_line(&plan));
        let targets = servers.iter().map(Server::target).collect();
        let bench = match Bench::new(plan, targets) {
            Ok(bench) => bench,
            Err(e) => {
                eprintln!("load: {e}");
                return ExitCode::from(2);
            }
        };
        if let Err(e) = bench.populate() {
            eprintln!("load: {e}");
            return ExitCode::FAILURE;
        }
        let run = bench.measure(|i| servers[i].check_alive());
        failed |= mckv::bench::report(&run, &args.load).is_err();
        errors += run.errors();
    }
    for s in &mut servers {
        if let Some(why) = s.check_alive() {
            println!("\n{}: the server {why} during the run", s.label);
            failed = true;
        }
    }
    drop(servers);
    if errors > 0 {
        println!("\n{errors} errors in total (see details above)");
    }
    if failed || (smoke && errors > 0) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
