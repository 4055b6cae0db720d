//! Real memcached clients against the real `mckv server` binary: the Rust
//! `memcache` crate (text protocol), libmemcached's command-line tools
//! (Debian package libmemcached-tools) in their ASCII and binary modes, and
//! Python's pymemcache (`pip install pymemcache`).

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{connect, roundtrip, start_cluster, start_mckv, MckvNode, TempDir};

fn start() -> MckvNode {
    start_mckv("", &[])
}

// ---------------------------------------------------------------------------
// Running external programs, bounded in time
// ---------------------------------------------------------------------------

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn describe(&self) -> String {
        format!(
            "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `program args`, killing it after `limit`; collects its output.
fn run(program: &str, args: &[&str], limit: Duration) -> Run {
    let mut child = common::spawn(
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let run = Run {
        code: status.and_then(|s| s.code()),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    };
    assert!(
        status.is_some(),
        "{program} {args:?} still ran after {limit:?}; killed.\n{}",
        run.describe()
    );
    run
}

/// The first of `names` found on PATH.
fn tool(names: &[&str]) -> String {
    installed(names)
        .unwrap_or_else(|| panic!("none of {names:?} on PATH: apt-get install libmemcached-tools"))
}

/// The first of `names` on `PATH`, if any is.
fn installed(names: &[&str]) -> Option<String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    names
        .iter()
        .find(|name| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
        .map(|name| name.to_string())
}

fn servers(node: &MckvNode) -> String {
    format!("--servers=127.0.0.1:{}", node.port())
}

/// The exact reply of a raw `get`.
fn raw_get(node: &MckvNode, key: &str) -> Vec<u8> {
    let mut s = connect(node.port());
    roundtrip(&mut s, format!("get {key}\r\n").as_bytes(), b"END\r\n")
}

fn get_reply(key: &str, flags: u32, value: &[u8]) -> Vec<u8> {
    let mut out = format!("VALUE {key} {flags} {}\r\n", value.len()).into_bytes();
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\nEND\r\n");
    out
}

fn pseudo_random_bytes(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

const TOOL_LIMIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// 1. The Rust `memcache` crate
// ---------------------------------------------------------------------------

#[test]
fn rust_memcache_crate_ascii() {
    use memcache::{CommandError, MemcacheError};

    let node = start();
    let client = memcache::Client::builder()
        .add_server(format!(
            "memcache://127.0.0.1:{}?protocol=ascii",
            node.port()
        ))
        .unwrap()
        .with_read_timeout(Duration::from_secs(5))
        .with_write_timeout(Duration::from_secs(5))
        .with_connection_timeout(Duration::from_secs(5))
        .build()
        .expect("connect with the memcache crate");

    let versions = client.version().expect("version");
    assert_eq!(versions.len(), 1);
    assert!(!versions[0].1.is_empty(), "{versions:?}");

    // set / get
    client.set("rs_a", "alpha", 0).expect("set");
    assert_eq!(
        client.get::<String>("rs_a").unwrap().as_deref(),
        Some("alpha")
    );
    assert_eq!(client.get::<String>("rs_missing").unwrap(), None);
    let blob = pseudo_random_bytes(300_000, 7);
    client.set("rs_blob", blob.as_slice(), 0).expect("set blob");
    assert_eq!(client.get::<Vec<u8>>("rs_blob").unwrap(), Some(blob));
    client.set("rs_num", 42u64, 0).unwrap();
    assert_eq!(client.get::<u64>("rs_num").unwrap(), Some(42));

    // add (the crate reports NOT_STORED as Ok in ASCII mode: check the value)
    client.add("rs_a", "not-added", 0).unwrap();
    assert_eq!(
        client.get::<String>("rs_a").unwrap().as_deref(),
        Some("alpha")
    );
    client.add("rs_added", "fresh", 0).unwrap();
    assert_eq!(
        client.get::<String>("rs_added").unwrap().as_deref(),
        Some("fresh")
    );

    // replace
    client.replace("rs_missing", "nope", 0).unwrap();
    assert_eq!(client.get::<String>("rs_missing").unwrap(), None);
    client.replace("rs_added", "replaced", 0).unwrap();
    assert_eq!(
        client.get::<String>("rs_added").unwrap().as_deref(),
        Some("replaced")
    );

    // append / prepend
    client.append("rs_a", "-tail").unwrap();
    client.prepend("rs_a", "head-").unwrap();
    assert_eq!(
        client.get::<String>("rs_a").unwrap().as_deref(),
        Some("head-alpha-tail")
    );

    // delete
    assert!(client.delete("rs_added").unwrap());
    assert!(!client.delete("rs_added").unwrap());
    assert_eq!(client.get::<String>("rs_added").unwrap(), None);

    // increment / decrement
    client.set("rs_counter", "10", 0).unwrap();
    assert_eq!(client.increment("rs_counter", 5).unwrap(), 15);
    assert_eq!(client.decrement("rs_counter", 3).unwrap(), 12);
    assert_eq!(client.decrement("rs_counter", 100).unwrap(), 0);
    assert_eq!(
        client.increment("rs_counter", u64::MAX).unwrap(),
        u64::MAX,
        "0 + 2^64-1"
    );
    assert_eq!(client.increment("rs_counter", 1).unwrap(), 0, "wraps");
    match client.increment("rs_nocounter", 1) {
        Err(MemcacheError::CommandError(CommandError::KeyNotFound)) => {}
        other => panic!("incr of a missing key: {other:?}"),
    }

    // touch
    assert!(client.touch("rs_a", 1000).unwrap());
    assert!(!client.touch("rs_missing", 1000).unwrap());

    // gets + cas
    let (value, _flags, cas) = client
        .get::<(String, u32, Option<u64>)>("rs_a")
        .unwrap()
        .expect("gets rs_a");
    assert_eq!(value, "head-alpha-tail");
    let cas = cas.expect("gets returns a cas unique");
    assert!(client.cas("rs_a", "swapped", 0, cas).unwrap());
    assert!(
        !client.cas("rs_a", "stale", 0, cas).unwrap(),
        "cas with a used unique"
    );
    assert!(!client.cas("rs_missing", "x", 0, cas).unwrap());
    assert_eq!(
        client.get::<String>("rs_a").unwrap().as_deref(),
        Some("swapped")
    );

    // multi-get (sent as one `gets k1 k2 ...`)
    let many: std::collections::HashMap<String, String> = client
        .gets(&["rs_a", "rs_missing", "rs_counter", "rs_num"])
        .unwrap();
    assert_eq!(many.len(), 3, "{many:?}");
    assert_eq!(many["rs_a"], "swapped");
    // Like memcached, a number that shrank in place is padded with spaces.
    assert_eq!(many["rs_counter"], format!("{:<20}", 0));
    assert_eq!(many["rs_num"], "42");

    // flush
    client.flush().unwrap();
    assert_eq!(client.get::<String>("rs_a").unwrap(), None);
    assert_eq!(client.get::<u64>("rs_num").unwrap(), None);
    client.set("rs_after_flush", "ok", 0).unwrap();
    assert_eq!(
        client.get::<String>("rs_after_flush").unwrap().as_deref(),
        Some("ok")
    );
    // The crate used the text protocol: the raw bytes agree.
    assert_eq!(
        String::from_utf8_lossy(&raw_get(&node, "rs_after_flush")),
        "VALUE rs_after_flush 0 2\r\nok\r\nEND\r\n"
    );
}

/// What the `memcache` crate, in its binary protocol (its default), gets
/// back from `port` for one session of every command: each result as it
/// reports it (uniques by how they relate, as their numbers differ).
fn memcache_crate_binary_session(port: u16) -> Vec<String> {
    let client = memcache::Client::builder()
        .add_server(format!("memcache://127.0.0.1:{port}"))
        .unwrap()
        .with_read_timeout(Duration::from_secs(5))
        .with_write_timeout(Duration::from_secs(5))
        .with_connection_timeout(Duration::from_secs(5))
        .build()
        .expect("connect with the memcache crate");
    let mut seen = Vec::new();
    let mut note = |what: &str, result: String| seen.push(format!("{what}: {result}"));
    note("set", format!("{:?}", client.set("rb_a", "alpha", 0)));
    note("get", format!("{:?}", client.get::<String>("rb_a")));
    note(
        "get missing",
        format!("{:?}", client.get::<String>("rb_missing")),
    );
    let blob = pseudo_random_bytes(300_000, 9);
    note(
        "set blob",
        format!("{:?}", client.set("rb_blob", blob.as_slice(), 0)),
    );
    note(
        "blob back",
        format!(
            "{}",
            client.get::<Vec<u8>>("rb_blob").unwrap() == Some(blob)
        ),
    );
    note("add existing", format!("{:?}", client.add("rb_a", "x", 0)));
    note("add", format!("{:?}", client.add("rb_b", "bee", 0)));
    note(
        "replace missing",
        format!("{:?}", client.replace("rb_missing", "x", 0)),
    );
    note("append", format!("{:?}", client.append("rb_a", "-tail")));
    note("prepend", format!("{:?}", client.prepend("rb_a", "head-")));
    note(
        "prepend missing",
        format!("{:?}", client.prepend("rb_missing", "x")),
    );
    note("after both", format!("{:?}", client.get::<String>("rb_a")));
    note("delete", format!("{:?}", client.delete("rb_b")));
    note("delete again", format!("{:?}", client.delete("rb_b")));
    note("set counter", format!("{:?}", client.set("rb_n", 10u64, 0)));
    note("incr", format!("{:?}", client.increment("rb_n", 5)));
    note("decr", format!("{:?}", client.decrement("rb_n", 100)));
    note(
        "incr missing",
        format!("{:?}", client.increment("rb_nocounter", 1)),
    );
    note("touch", format!("{:?}", client.touch("rb_a", 1000)));
    note(
        "touch missing",
        format!("{:?}", client.touch("rb_missing", 1000)),
    );
    let (_, _, cas) = client
        .get::<(String, u32, Option<u64>)>("rb_a")
        .unwrap()
        .expect("rb_a");
    let cas = cas.expect("a cas unique");
    note(
        "cas",
        format!("{:?}", client.cas("rb_a", "swapped", 0, cas)),
    );
    note(
        "cas again",
        format!("{:?}", client.cas("rb_a", "stale", 0, cas)),
    );
    let many: std::collections::HashMap<String, String> =
        client.gets(&["rb_a", "rb_missing", "rb_n"]).unwrap();
    let many: std::collections::BTreeMap<_, _> = many.into_iter().collect();
    note("multi-get", format!("{many:?}"));
    note("flush", format!("{:?}", client.flush()));
    note("after flush", format!("{:?}", client.get::<String>("rb_a")));
    seen
}

/// The crate in its binary protocol gets what it gets from memcached.
#[test]
fn rust_memcache_crate_binary() {
    let memcached = common::start_memcached();
    let want = memcache_crate_binary_session(memcached.port);
    let node = start();
    assert_eq!(memcache_crate_binary_session(node.port()), want);
}

// ---------------------------------------------------------------------------
// 2. libmemcached's command-line tools
// ---------------------------------------------------------------------------

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write file");
    path
}

#[test]
fn libmemcached_memccp_memccat_and_friends() {
    let memccp = tool(&["memccp", "memcp"]);
    let memccat = tool(&["memccat", "memcat"]);
    let memcexist = tool(&["memcexist", "memexist"]);
    let memctouch = tool(&["memctouch", "memtouch"]);
    let memcrm = tool(&["memcrm", "memrm"]);
    let memcflush = tool(&["memcflush", "memflush"]);
    let memcping = tool(&["memcping", "memping"]);
    let memcstat = tool(&["memcstat", "memstat"]);
    let node = start();
    let srv = servers(&node);
    let dir = TempDir::new("tools");
    let content = pseudo_random_bytes(200_000, 11);
    let file = write_file(&dir.0, "payload.bin", &content);
    let file_arg = file.to_str().unwrap();

    let r = run(&memccp, &[&srv, "--flags=7", file_arg], TOOL_LIMIT);
    assert_eq!(r.code, Some(0), "memccp: {}", r.describe());
    // memccp stores under the file's base name.
    assert!(
        raw_get(&node, "payload.bin") == get_reply("payload.bin", 7, &content),
        "raw get of what memccp stored differs"
    );

    let out = dir.0.join("out.bin");
    let out_arg = format!("--file={}", out.display());
    let r = run(&memccat, &[&srv, &out_arg, "payload.bin"], TOOL_LIMIT);
    assert_eq!(r.code, Some(0), "memccat: {}", r.describe());
    let back = std::fs::read(&out).expect("memccat wrote the file");
    assert!(
        back == content,
        "memccat returned {} bytes, not the {} copied in",
        back.len(),
        content.len()
    );

    let r = run(&memccat, &[&srv, "no-such-key"], TOOL_LIMIT);
    assert_ne!(
        r.code,
        Some(0),
        "memccat of a missing key: {}",
        r.describe()
    );

    let r = run(&memcexist, &[&srv, "payload.bin"], TOOL_LIMIT);
    assert_eq!(r.code, Some(0), "memcexist: {}", r.describe());
    let r = run(
        &memctouch,
        &[&srv, "--expire=1000", "payload.bin"],
        TOOL_LIMIT,
    );
    assert_eq!(r.code, Some(0), "memctouch: {}", r.describe());
    let r = run(&memcrm, &[&srv, "payload.bin"], TOOL_LIMIT);
    assert_eq!(r.code, Some(0), "memcrm: {}", r.describe());
    let r = run(&memcexist, &[&srv, "payload.bin"], TOOL_LIMIT);
    assert_ne!(r.code, Some(0), "memcexist after memcrm: {}", r.describe());
    assert_eq!(
        String::from_utf8_lossy(&raw_get(&node, "payload.bin")),
        "END\r\n"
    );

    let r = run(&memccp, &[&srv, file_arg], TOOL_LIMIT);
    assert_eq!(r.code, Some(0), "memccp: {}", r.describe());
    let r = run(&memcflush, &[&srv], TOOL_LIMIT);
    assert_eq!(r.code, Some(0), "memcflush: {}", r.describe());
    assert_eq!(
        String::from_utf8_lossy(&raw_get(&node, "payload.bin")),
        "END\r\n"
    );

    let r = run(&memcping, &[&srv], TOOL_LIMIT);
    assert_eq!(r.code, Some(0), "memcping: {}", r.describe());
    let r = run(&memcstat, &[&srv], TOOL_LIMIT);
    assert_eq!(r.code, Some(0), "memcstat: {}", r.describe());
    assert!(
        r.stdout.contains("curr_connections:"),
        "memcstat: {}",
        r.describe()
    );
    // Each stats group, as memcstat asks for it.
    for (group, shows) in [
        ("slabs", "active_slabs: 0"),
        ("settings", "maxconns: 1024"),
        ("sizes", "sizes_status: disabled"),
        ("conns", ":state: conn_parse_cmd"),
    ] {
        let args = format!("--args={group}");
        let r = run(&memcstat, &[&srv, &args], TOOL_LIMIT);
        assert!(
            r.code == Some(0) && r.stdout.contains(shows),
            "memcstat {args}: {}",
            r.describe()
        );
    }
    // memcdump walks every slab class with `stats cachedump`: mckv's
    // store has none, so it lists nothing, and ends.
    let memcdump = tool(&["memcdump", "memdump"]);
    let r = run(&memcdump, &[&srv], TOOL_LIMIT);
    assert_eq!(r.code, Some(0), "memcdump: {}", r.describe());
}

/// memcslap exits 0 even when the server fails; its errors go to stderr.
fn assert_slap_clean(what: &str, r: &Run) {
    assert_eq!(r.code, Some(0), "{what}: {}", r.describe());
    let stderr = r.stderr.to_lowercase();
    assert!(
        !stderr.contains("error") && !stderr.contains("fail"),
        "{what} reported errors: {}",
        r.describe()
    );
}

#[test]
fn libmemcached_memcslap_bounded_runs() {
    let memcslap = tool(&["memcslap", "memslap"]);
    let node = start();
    let srv = servers(&node);
    let base = [srv.as_str(), "--execute-number=1000", "--concurrency=4"];
    for test in ["set", "get", "mget"] {
        let test_arg = format!("--test={test}");
        let mut args = base.to_vec();
        args.push(&test_arg);
        let r = run(&memcslap, &args, TOOL_LIMIT);
        assert_slap_clean(&format!("memcslap --test={test}"), &r);
        // It reports how many keys it handled; 0 means nothing worked.
        let line = r
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("Time to {test} ")))
            .unwrap_or_else(|| panic!("no 'Time to {test}' line: {}", r.describe()));
        let count: u64 = line
            .split_whitespace()
            .nth(3)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("cannot read the count in {line:?}"));
        assert!(count >= 1000, "memcslap --test={test}: {line}");
    }
    let r = run(
        &memcslap,
        &[
            &srv,
            "--execute-number=500",
            "--concurrency=2",
            "--test=set",
            "--noreply",
        ],
        TOOL_LIMIT,
    );
    assert_slap_clean("memcslap --noreply", &r);
    // The server is still in sync after all of that.
    let mut s = connect(node.port());
    let got = roundtrip(
        &mut s,
        b"set slap-after 0 0 2\r\nok\r\nget slap-after\r\n",
        b"END\r\n",
    );
    assert_eq!(
        String::from_utf8_lossy(&got),
        "STORED\r\nVALUE slap-after 0 2\r\nok\r\nEND\r\n"
    );
}

#[test]
fn libmemcached_memcaslap_verified_run() {
    let memcaslap = tool(&["memcaslap", "memaslap"]);
    let node = start();
    let server = format!("127.0.0.1:{}", node.port());
    // 3000 operations (10% set, 90% get), every get verified.
    let r = run(
        &memcaslap,
        &["-s", &server, "-x", "3000", "-T", "2", "-c", "8", "-v", "1"],
        TOOL_LIMIT,
    );
    assert_eq!(r.code, Some(0), "memcaslap: {}", r.describe());
    let field = |name: &str| -> u64 {
        r.stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{name}: ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no '{name}:' in memcaslap output: {}", r.describe()))
    };
    assert_eq!(field("verify_failed"), 0, "{}", r.describe());
    assert_eq!(field("verify_misses"), 0, "{}", r.describe());
    assert_eq!(field("get_misses"), 0, "{}", r.describe());
    assert!(
        field("cmd_get") + field("cmd_set") >= 3000,
        "{}",
        r.describe()
    );
}

/// memcaslap writing 160 MB of 10 KB values into a store of 4 MB, as a new
/// user tries a cache: the store evicts and every set is stored (misses
/// are expected). The control: with `eviction = none` (memcached's `-M`)
/// the same run prints `SERVER_ERROR out of memory` for most sets, which
/// is what the check looks for.
#[test]
fn libmemcached_memcaslap_into_a_full_store_stores_every_set() {
    let memcaslap = tool(&["memcaslap", "memaslap"]);
    for eviction in ["lru", "none"] {
        let config = format!("memory_limit_mb = 4\neviction = {eviction}");
        let node = common::start_mckv_with(&config, "", &[]);
        let server = format!("127.0.0.1:{}", node.port());
        let args = [
            "-s", &server, "-x", "20000", "-T", "2", "-c", "8", "-X", "10000",
        ];
        let r = run(&memcaslap, &args, TOOL_LIMIT);
        assert_eq!(r.code, Some(0), "memcaslap: {}", r.describe());
        let refused = r.stdout.matches("SERVER_ERROR out of memory").count()
            + r.stderr.matches("SERVER_ERROR out of memory").count();
        let evictions = common::stat(node.port(), "evictions");
        match eviction {
            "lru" => {
                assert_eq!(refused, 0, "{}", r.describe());
                assert!(evictions > 1000, "{evictions} evictions");
            }
            _ => assert!(refused > 1000, "only {refused} refusals: {}", r.describe()),
        }
    }
}

#[test]
fn libmemcached_memccapable_ascii() {
    memccapable(&tool(&["memccapable", "memcapable"]), "-a", "ASCII");
}

/// libmemcached's conformance test of the binary protocol: every opcode
/// and its quiet form, as a binary client library uses them. Skipped, with
/// the reason printed, where libmemcached-tools is not installed (.ci/run
/// installs it).
#[test]
fn libmemcached_memccapable_binary() {
    let Some(memccapable_bin) = installed(&["memccapable", "memcapable"]) else {
        println!("skipped: memccapable not on PATH (apt-get install libmemcached-tools)");
        return;
    };
    memccapable(&memccapable_bin, "-b", "binary");
}

/// Runs libmemcached's conformance test in `mode` (`-a` or `-b`) against a
/// node: every test must pass.
fn memccapable(memccapable: &str, mode: &str, protocol: &str) {
    let node = start();
    let port = node.port().to_string();
    let r = run(
        memccapable,
        &["-h", "127.0.0.1", "-p", &port, mode, "-t", "5"],
        TOOL_LIMIT,
    );
    assert!(
        r.code == Some(0) && r.stdout.contains("All tests passed"),
        "memccapable {mode} ({protocol} conformance): {}",
        r.describe()
    );
}

/// libmemcached's tools in binary mode against a 3-node linearizable
/// cluster, each talking to another node: what one stores, the others
/// read (in either protocol), remove and count.
#[test]
fn libmemcached_binary_mode_on_a_cluster() {
    let Some(memccp) = installed(&["memccp", "memcp"]) else {
        println!("skipped: memccp not on PATH (apt-get install libmemcached-tools)");
        return;
    };
    let memccat = tool(&["memccat", "memcat"]);
    let memcrm = tool(&["memcrm", "memrm"]);
    let memcstat = tool(&["memcstat", "memstat"]);
    let cluster = start_cluster(3, "linearizable", "");
    let srv = |node: usize| format!("--servers=127.0.0.1:{}", cluster.port(node));
    let dir = TempDir::new("binary-tools");
    let content = pseudo_random_bytes(100_000, 5);
    let file = write_file(&dir.0, "bin.payload", &content);

    let r = run(
        &memccp,
        &[&srv(0), "--binary", "--flags=3", file.to_str().unwrap()],
        TOOL_LIMIT,
    );
    assert_eq!(r.code, Some(0), "memccp --binary: {}", r.describe());
    let mut text = connect(cluster.port(2));
    let got = roundtrip(&mut text, b"get bin.payload\r\n", b"END\r\n");
    assert!(
        got == get_reply("bin.payload", 3, &content),
        "node 2 reads what node 0 took in binary"
    );

    let out = dir.0.join("out.bin");
    let out_arg = format!("--file={}", out.display());
    let r = run(
        &memccat,
        &[&srv(1), "--binary", &out_arg, "bin.payload"],
        TOOL_LIMIT,
    );
    assert_eq!(r.code, Some(0), "memccat --binary: {}", r.describe());
    assert!(
        std::fs::read(&out).unwrap() == content,
        "memccat --binary on node 1"
    );

    let r = run(&memcrm, &[&srv(2), "--binary", "bin.payload"], TOOL_LIMIT);
    assert_eq!(r.code, Some(0), "memcrm --binary: {}", r.describe());
    let mut text = connect(cluster.port(0));
    let got = roundtrip(&mut text, b"get bin.payload\r\n", b"END\r\n");
    assert_eq!(
        String::from_utf8_lossy(&got),
        "END\r\n",
        "removed everywhere"
    );

    let r = run(&memcstat, &[&srv(1), "--binary"], TOOL_LIMIT);
    assert!(
        r.code == Some(0) && r.stdout.contains("curr_connections:"),
        "memcstat --binary: {}",
        r.describe()
    );
}

// ---------------------------------------------------------------------------
// 3. pymemcache
// ---------------------------------------------------------------------------

const PYMEMCACHE_SCRIPT: &str = r#"
import sys
from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheClientError

port = int(sys.argv[1])
c = Client(("127.0.0.1", port), connect_timeout=5, timeout=5)

assert c.version(), "version"

# set / get / get_many / set_many
assert c.set("py_a", b"alpha", noreply=False) is True
assert c.get("py_a") == b"alpha"
assert c.get("py_missing") is None
assert c.set_many({"py_b": b"beta", "py_c": b"gamma"}, noreply=False) == []
got = c.get_many(["py_a", "py_b", "py_c", "py_missing"])
assert got == {"py_a": b"alpha", "py_b": b"beta", "py_c": b"gamma"}, got
data = bytes(range(256)) * 1000
assert c.set("py_bin", data, noreply=False) is True
assert c.get("py_bin") == data
c.set("py_quiet", b"noreply-set")  # pymemcache's default is noreply
assert c.get("py_quiet") == b"noreply-set"

# gets / cas
value, cas = c.gets("py_a")
assert value == b"alpha" and cas is not None, (value, cas)
assert c.cas("py_a", b"alpha2", cas, noreply=False) is True
assert c.cas("py_a", b"alpha3", cas, noreply=False) is False
assert c.cas("py_nokey", b"x", cas, noreply=False) is None
assert c.get("py_a") == b"alpha2"
assert c.gets("py_missing") == (None, None)
many = c.gets_many(["py_a", "py_b", "py_missing"])
assert set(many) == {"py_a", "py_b"}, many
assert many["py_a"][0] == b"alpha2" and many["py_b"][0] == b"beta", many

# incr / decr
assert c.set("py_n", b"10", noreply=False)
assert c.incr("py_n", 5) == 15
assert c.decr("py_n", 3) == 12
assert c.decr("py_n", 100) == 0
assert c.incr("py_nonum", 1) is None
c.set("py_text", b"abc", noreply=False)
try:
    c.incr("py_text", 1)
    raise AssertionError("incr of a non-number did not fail")
except MemcacheClientError:
    pass

# delete
assert c.delete("py_n", noreply=False) is True
assert c.delete("py_n", noreply=False) is False
assert c.get("py_n") is None

# touch
assert c.touch("py_a", 1000, noreply=False) is True
assert c.touch("py_missing", 1000, noreply=False) is False

# add / replace / append / prepend
assert c.add("py_a", b"x", noreply=False) is False
assert c.add("py_new", b"new", noreply=False) is True
assert c.replace("py_missing", b"x", noreply=False) is False
assert c.replace("py_new", b"newer", noreply=False) is True
assert c.append("py_new", b"-end", noreply=False) is True
assert c.prepend("py_new", b"start-", noreply=False) is True
assert c.get("py_new") == b"start-newer-end"
assert c.append("py_missing", b"x", noreply=False) is False
assert c.prepend("py_missing", b"x", noreply=False) is False
assert c.get("py_missing") is None

# stats, its groups, version, cache_memlimit, as monitoring code reads them
stats = c.stats()
assert b"curr_connections" in stats, stats
assert stats[b"cmd_set"] >= 1 and stats[b"version"] == b"1.6.0", stats
assert c.version() == b"1.6.0"
assert c.stats("slabs") == {b"active_slabs": 0, b"total_malloced": 0}
assert c.stats("items") == {}
assert c.stats("settings")[b"maxconns"] == 1024
assert c.cache_memlimit(64) is True

# flush_all
assert c.flush_all(noreply=False) is True
assert c.get("py_a") is None
assert c.get_many(["py_b", "py_new"]) == {}
assert c.set("py_after", b"ok", noreply=False) is True
assert c.get("py_after") == b"ok"
c.close()
print("OK")
"#;

#[test]
fn python_pymemcache() {
    let probe = run("python3", &["-c", "import pymemcache"], TOOL_LIMIT);
    assert_eq!(
        probe.code,
        Some(0),
        "pymemcache is missing: pip install pymemcache\n{}",
        probe.describe()
    );
    let node = start();
    let port = node.port().to_string();
    let r = run("python3", &["-c", PYMEMCACHE_SCRIPT, &port], TOOL_LIMIT);
    assert!(
        r.code == Some(0) && r.stdout.lines().any(|l| l == "OK"),
        "pymemcache script: {}",
        r.describe()
    );
}
