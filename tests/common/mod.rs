//! Shared harness for integration tests: free loopback ports, and guards that
//! start a real `memcached` or a real `mckv` node and kill it when dropped.
#![allow(dead_code)]

pub mod alloc;
pub mod rng;
pub mod tls;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// Taken exclusively while [`free_port`] probes a port with a listening
/// socket, and shared while a child process starts. A child forked during a
/// probe holds the probe's listener until it execs (close-on-exec acts only
/// then): the server meant for the port then fails to bind it, or a test's
/// connect lands on the probe and is reset. Both happened about once in 150
/// runs of tests/command_line.rs. Every child of the tests starts through
/// [`spawn`], [`output`] or [`status`].
static STARTING: RwLock<()> = RwLock::new(());

/// `cmd.spawn()`, never during a port probe.
pub fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    starting(|| cmd.spawn())
}

/// Runs `start`, which starts a child process some other way (on a
/// pseudo-terminal, say), never during a port probe.
pub fn starting<T>(start: impl FnOnce() -> T) -> T {
    let _starting = STARTING.read().unwrap_or_else(|e| e.into_inner());
    start()
}

/// `cmd.output()`, never starting during a port probe.
pub fn output(cmd: &mut Command) -> std::io::Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    spawn(cmd)?.wait_with_output()
}

/// `cmd.status()`, never starting during a port probe.
pub fn status(cmd: &mut Command) -> std::io::Result<ExitStatus> {
    spawn(cmd)?.wait()
}

/// A port that was free on 127.0.0.1 a moment ago. Ports come from below
/// the kernel's ephemeral range (32768 and up), so an outgoing connection can
/// never take one between this call and the server's bind, and from a
/// per-process counter, so two tests of one binary never get the same one.
pub fn free_port() -> u16 {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = LOW + (std::process::id() % 600) * 20;
    let _ = NEXT.compare_exchange(0, start, Ordering::SeqCst, Ordering::SeqCst);
    loop {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = (LOW + (n - LOW) % SPAN) as u16;
        let _probing = STARTING.write().unwrap_or_else(|e| e.into_inner());
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Calls `check` every `every` until it gives `Ok`, for at most `limit`;
/// panics with its last `Err` if it never does.
pub fn poll<T>(
    limit: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match check() {
            Ok(done) => return done,
            Err(why) if Instant::now() >= deadline => panic!("{why}"),
            Err(_) => std::thread::sleep(every),
        }
    }
}

/// Waits (at most 30 s) until `child` exits by itself; panics with
/// `still_running` if it does not.
pub fn wait_for_exit(child: &mut Child, still_running: &str) -> ExitStatus {
    poll(Duration::from_secs(30), Duration::from_millis(50), || {
        child
            .try_wait()
            .expect("wait")
            .ok_or_else(|| still_running.to_string())
    })
}

/// Whether `reply` is what a client gets for a write the node could not
/// make durable: told it may have been applied, or nothing (the node
/// stopped first).
pub fn maybe_applied_or_unanswered(reply: &str) -> bool {
    matches!(
        reply,
        "" | "SERVER_ERROR timeout; the operation may have been applied\r\n"
    )
}

/// Waits until something accepts on `port`, or panics after `limit`.
pub fn wait_for_port(port: u16, limit: Duration) {
    poll(limit, Duration::from_millis(20), || {
        TcpStream::connect(("127.0.0.1", port))
            .map(drop)
            .map_err(|_| format!("nothing listens on 127.0.0.1:{port} after {limit:?}"))
    })
}

/// Waits (at most 10 s) until the server `process` accepts on its port;
/// panics with its log if it exits or never does.
pub fn wait_for_server(process: &mut ProcessGuard, log: &std::path::Path) {
    let port = process.port;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        let exited = process.child.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() > deadline {
            panic!(
                "server for 127.0.0.1:{port} not accepting (exited: {exited:?}); its log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process killed (SIGKILL) and reaped when the guard drops.
pub struct ProcessGuard {
    pub child: Child,
    pub port: u16,
}

impl ProcessGuard {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let status = status(
            Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(self.pid().to_string()),
        )
        .expect("run kill");
        assert!(status.success(), "kill -{sig} {} failed", self.pid());
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The memcached binary the tests use as the reference server.
pub fn memcached_bin() -> String {
    std::env::var("MEMCACHED").unwrap_or_else(|_| "memcached".to_string())
}

/// Starts `memcached -t 1` on a free port of 127.0.0.1.
pub fn start_memcached() -> ProcessGuard {
    start_memcached_with(&[])
}

/// Starts `memcached -t 1` with `extra` arguments on a free port of 127.0.0.1.
pub fn start_memcached_with(extra: &[&str]) -> ProcessGuard {
    let port = free_port();
    let child = spawn(
        Command::new(memcached_bin())
            .args([
                "-l",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "0",
                "-t",
                "1",
                "-u",
                "root",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .expect("start memcached (apt-get install memcached)");
    let guard = ProcessGuard { child, port };
    wait_for_port(port, Duration::from_secs(10));
    guard
}

/// A scratch directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "mckv-test-{tag}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A disk whose fsyncs fail or stall on demand, for a node started
/// through [`FailingFsync::preload`]: a library preloaded into it makes
/// `fsync` and `fdatasync` fail with EIO once [`FailingFsync::fail`] was
/// called, and wait from [`FailingFsync::stall`] to
/// [`FailingFsync::resume`] (`tests/common/failing_fsync.c`, built here
/// with the system's `cc`).
pub struct FailingFsync {
    dir: TempDir,
    library: PathBuf,
}

impl FailingFsync {
    pub fn build() -> FailingFsync {
        let dir = TempDir::new("failing-fsync");
        let source = dir.0.join("failing_fsync.c");
        std::fs::write(&source, include_str!("failing_fsync.c")).expect("write the shim");
        let library = dir.0.join("libfailing_fsync.so");
        let built = output(
            Command::new("cc")
                .args(["-shared", "-fPIC", "-O2", "-o"])
                .arg(&library)
                .arg(&source),
        )
        .expect("run cc (the tests need a C compiler, as cargo's linker does)");
        assert!(
            built.status.success(),
            "cc: {}",
            String::from_utf8_lossy(&built.stderr)
        );
        FailingFsync { dir, library }
    }

    fn trigger(&self) -> PathBuf {
        self.dir.0.join("fail-now")
    }

    fn stall_trigger(&self) -> PathBuf {
        self.dir.0.join("stall-now")
    }

    /// Makes `cmd`'s process take the library.
    pub fn preload(&self, cmd: &mut Command) {
        cmd.env("LD_PRELOAD", &self.library)
            .env("MCKV_TEST_FSYNC_FAILS_WHEN", self.trigger())
            .env("MCKV_TEST_FSYNC_STALLS_WHEN", self.stall_trigger());
    }

    /// Every fsync from now on fails.
    pub fn fail(&self) {
        std::fs::write(self.trigger(), b"").expect("write the trigger");
    }

    /// Every fsync from now on waits until [`FailingFsync::resume`].
    pub fn stall(&self) {
        std::fs::write(self.stall_trigger(), b"").expect("write the trigger");
    }

    pub fn resume(&self) {
        std::fs::remove_file(self.stall_trigger()).expect("remove the trigger");
    }

    /// On the node at `port` (with `fsync = always`, its fsyncs through
    /// this disk, `other` stored as `other` before): with fsyncs stalled, a
    /// `set k` and a `get k` are both held, while a `get other` is
    /// answered, and `stats` soon says the log is stalled; once they
    /// resume, both come, with the value, and the log is no longer stalled.
    pub fn check_a_read_of_another_key_goes_on_while_a_write_waits(&self, port: u16) {
        self.stall();
        let mut writer = connect(port);
        writer.write_all(b"set k 0 0 1\r\nv\r\n").unwrap();
        let mut same_key = connect(port);
        same_key.write_all(b"get k\r\n").unwrap();
        let held = || stat(port, "mckv_replies_held");
        poll(
            Duration::from_secs(10),
            Duration::from_millis(10),
            || match held() {
                2 => Ok(()),
                n => Err(format!("{n} replies held, not the set's and the get's")),
            },
        );
        assert_eq!(
            request(&mut connect(port), b"get other\r\n"),
            "VALUE other 0 5\r\nother\r\nEND\r\n"
        );
        assert_eq!(held(), 2, "answered before its fsync");
        let stalled = |want: u64| {
            poll(
                Duration::from_secs(10),
                Duration::from_millis(20),
                || match stat(port, "mckv_log_stalled") {
                    n if n == want => Ok(()),
                    n => Err(format!("mckv_log_stalled {n}, not {want}")),
                },
            )
        };
        stalled(1);
        self.resume();
        let line = |got: &[u8]| got.ends_with(b"\r\n");
        let stored = read_until(&mut writer, Duration::from_secs(10), line);
        assert_eq!(String::from_utf8_lossy(&stored), "STORED\r\n");
        let end = |got: &[u8]| got.ends_with(b"END\r\n");
        let got = read_until(&mut same_key, Duration::from_secs(10), end);
        assert_eq!(String::from_utf8_lossy(&got), "VALUE k 0 1\r\nv\r\nEND\r\n");
        stalled(0);
    }
}

/// A tmpfs mounted on a scratch directory, unmounted when dropped (however
/// the test ends), then removed.
pub struct Tmpfs {
    pub dir: TempDir,
}

/// Mounts a tmpfs of `size` (mount's notation: `1m`), if this process may
/// (it must be root); the caller says so and checks nothing otherwise.
pub fn mount_tmpfs(size: &str) -> Option<Tmpfs> {
    let dir = TempDir::new("tmpfs");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(&dir.0)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    mounted.then_some(Tmpfs { dir })
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir.0).status();
    }
}

/// A running one-node mckv server and the scratch directory holding its config and log.
pub struct MckvNode {
    pub process: ProcessGuard,
    pub dir: TempDir,
}

impl MckvNode {
    pub fn port(&self) -> u16 {
        self.process.port
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("node.log")).unwrap_or_default()
    }
}

/// Starts a one-node mckv cluster with the embedded store. `extra_node_keys` are
/// added to the `[node.0]` section (e.g. `"kv_type = memcache\nkv_addr = 127.0.0.1:1234"`),
/// `extra_args` to the command line.
pub fn start_mckv(extra_node_keys: &str, extra_args: &[&str]) -> MckvNode {
    start_mckv_with("", extra_node_keys, extra_args)
}

/// Like [`start_mckv`], with `extra_cluster_keys` added to `[cluster]`
/// (e.g. `"item_size_max = 2048"`).
pub fn start_mckv_with(
    extra_cluster_keys: &str,
    extra_node_keys: &str,
    extra_args: &[&str],
) -> MckvNode {
    let dir = TempDir::new("node");
    let port = free_port();
    let peer = free_port();
    let config = format!(
        "[cluster]\nname = test\nconsistency = linearizable\nsecret = test-secret\n{extra_cluster_keys}\n\n\
         [node.0]\nclient = 127.0.0.1:{port}\npeer = 127.0.0.1:{peer}\n{extra_node_keys}\n"
    );
    let config_path = dir.0.join("config.ini");
    std::fs::write(&config_path, config).expect("write config");
    let child = spawn(
        Command::new(env!("CARGO_BIN_EXE_mckv"))
            .arg("server")
            .arg("--config")
            .arg(&config_path)
            .args(["--node", "0", "--log-file"])
            .arg(dir.0.join("node.log"))
            .args(extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .expect("start mckv");
    let mut process = ProcessGuard { child, port };
    wait_for_server(&mut process, &dir.0.join("node.log"));
    MckvNode { process, dir }
}

/// Connects to 127.0.0.1:`port` with read and write timeouts.
pub fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// The number `stats` on the node at `port` gives for `name`.
/// Resident set size of a process in KiB, from /proc/<pid>/status.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// The bound the tests of hostile clients and peers hold a node's resident
/// memory under, with every such client still connected or just gone.
pub const HOSTILE_RSS_LIMIT_KIB: u64 = 64 * 1024;

/// Fails if the process `pid` holds more than [`HOSTILE_RSS_LIMIT_KIB`].
pub fn assert_rss_bounded(pid: u32, after: &str) {
    let rss = rss_kib(pid);
    assert!(
        rss < HOSTILE_RSS_LIMIT_KIB,
        "the node holds {rss} KiB after {after}"
    );
}

pub fn stat(port: u16, name: &str) -> u64 {
    let stats = request(&mut connect(port), b"stats\r\n");
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("STAT {name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {stats}"))
}

/// Sends one request and reads its reply (up to `END`, or one line that is
/// not a `VALUE`), as text.
pub fn request(c: &mut TcpStream, bytes: &[u8]) -> String {
    let done = |got: &[u8]| {
        got.ends_with(b"END\r\n") || (got.ends_with(b"\r\n") && !got.starts_with(b"VALUE"))
    };
    c.write_all(bytes).expect("send");
    String::from_utf8_lossy(&read_until(c, Duration::from_secs(10), done)).into_owned()
}

/// Reads from `stream` until `done(&bytes)` holds or `limit` passes; returns what came.
pub fn read_until(
    stream: &mut TcpStream,
    limit: Duration,
    done: impl Fn(&[u8]) -> bool,
) -> Vec<u8> {
    read_while(stream, limit, done).0
}

/// Reads from `stream` until the server closes it (EOF, or an error other
/// than a timeout) or `limit` passes; returns what came, and whether it
/// was closed.
pub fn read_to_eof(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    read_while(stream, limit, |_| false)
}

/// Reads until `done(&bytes)`, the stream's end or `limit`; what came, and
/// whether the stream ended.
fn read_while(
    stream: &mut TcpStream,
    limit: Duration,
    done: impl Fn(&[u8]) -> bool,
) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    while !done(&got) && Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            // A read with a timeout is never restarted after a signal
            // handler ran (signal(7)); seen here about once in 200 runs.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return (got, true),
        }
    }
    (got, false)
}

/// The port after `peer = 127.0.0.1:` in node `id`'s section of config `text`.
pub fn peer_port_of(text: &str, id: usize) -> u16 {
    text.split(&format!("[node.{id}]"))
        .nth(1)
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("peer = 127.0.0.1:")))
        .and_then(|p| p.trim().parse().ok())
        .expect("the node's peer port")
}

/// Sends `request` and reads until the reply ends with `suffix` (or 5 s pass).
pub fn roundtrip(stream: &mut TcpStream, request: &[u8], suffix: &[u8]) -> Vec<u8> {
    stream.write_all(request).expect("write request");
    read_until(stream, Duration::from_secs(5), |got| got.ends_with(suffix))
}

/// A running cluster of real `mckv` processes on free loopback ports.
pub struct Cluster {
    pub nodes: Vec<ProcessGuard>,
    /// The memcached of each node, for clusters on the memcache backend
    /// (dropped after the nodes).
    pub backends: Vec<ProcessGuard>,
    pub dir: TempDir,
    pub config: PathBuf,
}

impl Cluster {
    pub fn port(&self, node: usize) -> u16 {
        self.nodes[node].port
    }

    pub fn log(&self, node: usize) -> String {
        std::fs::read_to_string(self.dir.0.join(format!("node{node}.log"))).unwrap_or_default()
    }

    /// `show` from `node`, as text.
    pub fn show(&self, node: usize) -> String {
        let mut c = connect(self.port(node));
        String::from_utf8_lossy(&roundtrip(&mut c, b"show\r\n", b"END\r\n")).into_owned()
    }

    /// Waits (at most 10 s) until every node's `show` lists every node up.
    pub fn wait_all_up(&self) {
        let n = self.nodes.len();
        poll(Duration::from_secs(10), Duration::from_millis(20), || {
            for node in 0..n {
                let show = self.show(node);
                let up = show
                    .lines()
                    .filter(|l| l.split(' ').nth(3) == Some("up"))
                    .count();
                if up != n {
                    return Err(format!("node {node} never saw the cluster up:\n{show}"));
                }
            }
            Ok(())
        })
    }

    /// Waits (at most 10 s) until `node` answers `get key` with `want`.
    pub fn wait_for_value(&self, node: usize, key: &str, want: &str) {
        let mut c = connect(self.port(node));
        poll(Duration::from_secs(10), Duration::from_millis(20), || {
            let got = request(&mut c, format!("get {key}\r\n").as_bytes());
            match got == want {
                true => Ok(()),
                false => Err(format!(
                    "node {node} never answered {want:?} for {key}: {got:?}"
                )),
            }
        })
    }

    /// Every node's reply to `gets` of `keys`, in node order.
    pub fn gets_everywhere(&self, keys: &[String]) -> Vec<String> {
        let line = format!("gets {}\r\n", keys.join(" "));
        (0..self.nodes.len())
            .map(|n| request(&mut connect(self.port(n)), line.as_bytes()))
            .collect()
    }

    /// Waits (at most 10 s) until every node's `gets` of `keys` reads the
    /// same, and returns it; fails with every node's reply if they never do.
    pub fn converged(&self, keys: &[String]) -> String {
        poll(Duration::from_secs(10), Duration::from_millis(50), || {
            let views = self.gets_everywhere(keys);
            match views.iter().all(|v| v == &views[0]) {
                true => Ok(views[0].clone()),
                false => Err(format!("replicas differ: {views:?}")),
            }
        })
    }
}

/// The config of an `n`-node cluster on free ports; returns it with the client ports.
pub fn cluster_config(n: usize, consistency: &str, extra_cluster_keys: &str) -> (String, Vec<u16>) {
    cluster_config_with(n, consistency, extra_cluster_keys, |_| String::new())
}

/// Like [`cluster_config`], with `node_keys(id)` added to each node's section.
pub fn cluster_config_with(
    n: usize,
    consistency: &str,
    extra_cluster_keys: &str,
    node_keys: impl Fn(usize) -> String,
) -> (String, Vec<u16>) {
    let mut config = format!(
        "[cluster]\nname = test\nconsistency = {consistency}\nsecret = test-secret\n\
         {extra_cluster_keys}\n"
    );
    // Quick failure detection, unless the test sets its own.
    for default in ["heartbeat_ms = 50", "peer_timeout_ms = 400"] {
        let key = &default[..default.find(' ').unwrap_or(default.len())];
        let set_by_test = extra_cluster_keys
            .lines()
            .any(|line| line.split('=').next().map(str::trim) == Some(key));
        if !set_by_test {
            config.push_str(default);
            config.push('\n');
        }
    }
    let mut ports = Vec::new();
    for id in 0..n {
        let (client, peer) = (free_port(), free_port());
        config.push_str(&format!(
            "\n[node.{id}]\nclient = 127.0.0.1:{client}\npeer = 127.0.0.1:{peer}\n{}\n",
            node_keys(id)
        ));
        ports.push(client);
    }
    (config, ports)
}

/// Starts node `id` of the config at `config` (logging to `dir/node<id>.log`).
pub fn start_cluster_node(
    config: &std::path::Path,
    dir: &std::path::Path,
    id: usize,
    port: u16,
) -> ProcessGuard {
    start_cluster_node_with(config, dir, id, port, |_| {})
}

/// [`start_cluster_node`], with `setup` applied to its command first (an
/// environment variable, say).
pub fn start_cluster_node_with(
    config: &std::path::Path,
    dir: &std::path::Path,
    id: usize,
    port: u16,
    setup: impl FnOnce(&mut Command),
) -> ProcessGuard {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mckv"));
    setup(&mut command);
    let child = spawn(
        command
            .arg("server")
            .arg("--config")
            .arg(config)
            .args([
                "--node",
                &id.to_string(),
                "--log-level",
                "debug",
                "--log-file",
            ])
            .arg(dir.join(format!("node{id}.log")))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .expect("start mckv");
    let mut guard = ProcessGuard { child, port };
    wait_for_server(&mut guard, &dir.join(format!("node{id}.log")));
    guard
}

/// Starts an `n`-node cluster and waits until every node sees every other one.
pub fn start_cluster(n: usize, consistency: &str, extra_cluster_keys: &str) -> Cluster {
    launch_cluster(
        cluster_config(n, consistency, extra_cluster_keys),
        Vec::new(),
    )
}

/// Like [`start_cluster`], with `node_keys(id)` added to each node's section.
pub fn start_cluster_with(
    n: usize,
    consistency: &str,
    extra_cluster_keys: &str,
    node_keys: impl Fn(usize) -> String,
) -> Cluster {
    launch_cluster(
        cluster_config_with(n, consistency, extra_cluster_keys, node_keys),
        Vec::new(),
    )
}

/// Like [`start_cluster`], each node keeping its data in a memcached of its own.
pub fn start_cluster_on_memcached(
    n: usize,
    consistency: &str,
    extra_cluster_keys: &str,
) -> Cluster {
    let backends: Vec<ProcessGuard> = (0..n)
        .map(|_| start_memcached_with(&["-I", "2m"]))
        .collect();
    let kv = |id: usize| {
        format!(
            "kv_type = memcache\nkv_addr = 127.0.0.1:{}",
            backends[id].port
        )
    };
    let config = cluster_config_with(n, consistency, extra_cluster_keys, kv);
    launch_cluster(config, backends)
}

/// Starts the cluster of config `text` (with its client ports), as
/// [`start_cluster`] does, for a test that edits the config first.
pub fn launch_cluster_text(text: String, ports: Vec<u16>) -> Cluster {
    launch_cluster((text, ports), Vec::new())
}

/// [`launch_cluster_text`], with `setup(id, command)` applied to each
/// node's command first.
pub fn launch_cluster_text_with(
    text: String,
    ports: Vec<u16>,
    setup: impl Fn(usize, &mut Command),
) -> Cluster {
    launch_cluster_with((text, ports), Vec::new(), setup)
}

fn launch_cluster(config: (String, Vec<u16>), backends: Vec<ProcessGuard>) -> Cluster {
    launch_cluster_with(config, backends, |_, _| {})
}

fn launch_cluster_with(
    (text, ports): (String, Vec<u16>),
    backends: Vec<ProcessGuard>,
    setup: impl Fn(usize, &mut Command),
) -> Cluster {
    let dir = TempDir::new("cluster");
    let config = dir.0.join("config.ini");
    std::fs::write(&config, text).expect("write config");
    let nodes = ports
        .iter()
        .enumerate()
        .map(|(id, &port)| start_cluster_node_with(&config, &dir.0, id, port, |cmd| setup(id, cmd)))
        .collect();
    let cluster = Cluster {
        nodes,
        backends,
        dir,
        config,
    };
    cluster.wait_all_up();
    cluster
}
