//! Differential tests: byte scripts replayed against a real memcached and
//! against mckv; the replies (and whether the server closed the connection)
//! must be identical after normalising cas uniques and the version string.
//!
//! Each script is a list of writes with optional pauses between them. Every
//! script runs on a fresh connection; scripts of a group run in parallel
//! (unless marked serial), so they use key names made unique by the `$`
//! placeholder, which is replaced by a 4-byte per-script prefix.
//!
//! Replies that must differ in their values (`stats`: the pid, uptime and
//! counters; `stats conns`: descriptors and ports) are compared by their
//! shape instead ([`shape`]): the same lines, `STAT` lines by name only, in
//! the same order; mckv's own `mckv_*` fields and the memcached fields a
//! script names as left out by mckv are set aside.
//!
//! Binary-protocol scripts ([`binary`]) are built as packets and compared
//! response by response ([`binary::normalize`]).
//!
//! Set `DIFF_AGAINST_MEMCACHED=1` to compare memcached with a second
//! memcached instead of mckv (validates that the scripts are deterministic),
//! and `DIFF_DUMP=1` (with `--nocapture`) to print memcached's reply to
//! every script.
//! See tests/memcached_rules.md for the behaviour these scripts pin down.

#[path = "differential/binary.rs"]
mod binary;
mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long the connection must stay silent before a script is considered done.
const QUIET: Duration = Duration::from_millis(300);
/// Upper bound on one script run against one server.
const SCRIPT_LIMIT: Duration = Duration::from_secs(10);
/// The pause used between steps of split requests.
const PAUSE_MS: u64 = 150;
/// `$` in a script is replaced by a prefix of exactly this many bytes.
const PREFIX_LEN: usize = 4;

// ---------------------------------------------------------------------------
// Scripts
// ---------------------------------------------------------------------------

enum Step {
    Send(Vec<u8>),
    Pause(u64),
}

struct Script {
    name: &'static str,
    steps: Vec<Step>,
    /// Run alone, after the parallel scripts of the group (global effects).
    serial: bool,
    compare: Compare,
}

/// How a script's replies from the two servers are compared.
#[derive(Clone, Copy)]
enum Compare {
    /// Byte for byte, after [`normalize`].
    Exact,
    /// By [`shape`]; memcached's `STAT` lines of these names are set aside.
    Shape { left_out: &'static [&'static str] },
    /// Binary responses, after [`binary::normalize`]; with `stats`, `stat`
    /// responses by name, memcached's of these names set aside.
    Binary {
        stats: Option<&'static [&'static str]>,
    },
}

impl Script {
    fn new(name: &'static str) -> Script {
        Script {
            name,
            steps: Vec::new(),
            serial: false,
            compare: Compare::Exact,
        }
    }

    /// Compares by shape, setting aside memcached's fields `left_out`.
    fn shape(mut self, left_out: &'static [&'static str]) -> Script {
        self.compare = Compare::Shape { left_out };
        self
    }

    fn send(mut self, bytes: impl AsRef<[u8]>) -> Script {
        self.steps.push(Step::Send(bytes.as_ref().to_vec()));
        self
    }

    fn pause(mut self, ms: u64) -> Script {
        self.steps.push(Step::Pause(ms));
        self
    }

    /// Sends `bytes` one byte per write, with a small pause after each.
    fn bytewise(mut self, bytes: impl AsRef<[u8]>) -> Script {
        for &b in bytes.as_ref() {
            self.steps.push(Step::Send(vec![b]));
            self.steps.push(Step::Pause(3));
        }
        self
    }

    fn serial(mut self) -> Script {
        self.serial = true;
        self
    }

    fn sent_bytes(&self) -> Vec<u8> {
        let mut all = Vec::new();
        for step in &self.steps {
            if let Step::Send(b) = step {
                all.extend_from_slice(b);
            }
        }
        all
    }
}

/// A script that is a single write.
fn one(name: &'static str, bytes: impl AsRef<[u8]>) -> Script {
    Script::new(name).send(bytes)
}

/// Concatenates byte pieces.
fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A key of exactly `len` bytes once `$` is substituted.
fn key(len: usize) -> Vec<u8> {
    let mut k = b"$".to_vec();
    k.extend(std::iter::repeat_n(b'k', len - PREFIX_LEN));
    k
}

fn repeat(byte: u8, n: usize) -> Vec<u8> {
    vec![byte; n]
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn substitute(bytes: &[u8], prefix: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 16);
    for &b in bytes {
        if b == b'$' {
            out.extend_from_slice(prefix);
        } else {
            out.push(b);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Running a script
// ---------------------------------------------------------------------------

#[derive(PartialEq, Eq, Clone, Copy, Debug)]
enum Ending {
    Open,
    Closed,
    WriteStalled,
}

struct Outcome {
    bytes: Vec<u8>,
    ending: Ending,
}

/// Reads for `span` (or until closed), appending to `got`; returns the
/// instant of the last byte received, if any.
fn drain_for(
    stream: &mut TcpStream,
    span: Duration,
    got: &mut Vec<u8>,
    closed: &mut bool,
) -> Option<Instant> {
    let end = Instant::now() + span;
    let mut last = None;
    let mut buf = vec![0u8; 65536];
    while !*closed {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let slice = (end - now).min(Duration::from_millis(20));
        stream
            .set_read_timeout(Some(slice.max(Duration::from_millis(1))))
            .unwrap();
        match stream.read(&mut buf) {
            Ok(0) => *closed = true,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                last = Some(Instant::now());
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => *closed = true,
        }
    }
    last
}

fn run_script(port: u16, script: &Script, prefix: &[u8]) -> Outcome {
    let started = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_nodelay(true).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut got = Vec::new();
    let mut closed = false;
    let mut ending = Ending::Open;
    for step in &script.steps {
        if closed {
            break;
        }
        match step {
            Step::Send(bytes) => {
                // A binary script's keys were prefixed as it was built.
                let bytes = match script.compare {
                    Compare::Binary { .. } => bytes.clone(),
                    _ => substitute(bytes, prefix),
                };
                if let Err(e) = stream.write_all(&bytes) {
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
                        ending = Ending::WriteStalled;
                    }
                    closed = true;
                }
            }
            Step::Pause(ms) => {
                drain_for(
                    &mut stream,
                    Duration::from_millis(*ms),
                    &mut got,
                    &mut closed,
                );
            }
        }
    }
    // Collect until quiet for QUIET, closed, or the overall limit.
    let mut quiet_since = Instant::now();
    while !closed && quiet_since.elapsed() < QUIET && started.elapsed() < SCRIPT_LIMIT {
        let remaining = QUIET.saturating_sub(quiet_since.elapsed());
        if let Some(t) = drain_for(&mut stream, remaining, &mut got, &mut closed) {
            quiet_since = t;
        }
    }
    if closed && ending == Ending::Open {
        ending = Ending::Closed;
    }
    Outcome { bytes: got, ending }
}

// ---------------------------------------------------------------------------
// Normalisation and reporting
// ---------------------------------------------------------------------------

fn find_crlf(bytes: &[u8], from: usize) -> Option<usize> {
    bytes[from..]
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|p| p + from)
}

fn parse_usize(bytes: &[u8]) -> Option<usize> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// Replaces the cas unique of `VALUE key flags bytes cas` lines with `CAS`
/// and the version of `VERSION x.y.z` lines with `x`; data blocks are copied
/// verbatim (so a value that looks like a reply line is left alone).
fn normalize(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let Some(end) = find_crlf(raw, i) else {
            out.extend_from_slice(&raw[i..]);
            break;
        };
        let line = &raw[i..end];
        i = end + 2;
        if line.starts_with(b"VALUE ") {
            let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
            if fields.len() == 5 {
                out.extend_from_slice(&fields[..4].join(&b' '));
                out.extend_from_slice(b" CAS");
            } else {
                out.extend_from_slice(line);
            }
            out.extend_from_slice(b"\r\n");
            if fields.len() >= 4 {
                if let Some(n) = parse_usize(fields[3]) {
                    let take = (n + 2).min(raw.len() - i);
                    out.extend_from_slice(&raw[i..i + take]);
                    i += take;
                }
            }
        } else if line.starts_with(b"VA ") {
            // A meta value: its flags, then a data block copied verbatim.
            out.extend_from_slice(&normalize_meta_line(line));
            out.extend_from_slice(b"\r\n");
            let size = line[3..].split(|&b| b == b' ').next().and_then(parse_usize);
            if let Some(n) = size {
                let take = (n + 2).min(raw.len() - i);
                out.extend_from_slice(&raw[i..i + take]);
                i += take;
            }
        } else if META_STATUS.iter().any(|code| line.starts_with(code)) {
            out.extend_from_slice(&normalize_meta_line(line));
            out.extend_from_slice(b"\r\n");
        } else if line.starts_with(b"VERSION ") {
            out.extend_from_slice(b"VERSION x\r\n");
        } else {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

/// The status lines of meta replies whose flags may carry a cas unique.
const META_STATUS: [&[u8]; 6] = [b"HD", b"EN", b"NF", b"NS", b"EX", b"ME "];

/// A meta status line with every cas unique (a `c<n>` flag but `c0`, or
/// `me`'s `cas=<n>`) replaced by `CAS`.
fn normalize_meta_line(line: &[u8]) -> Vec<u8> {
    let fields: Vec<Vec<u8>> = line
        .split(|&b| b == b' ')
        .enumerate()
        .map(|(i, field)| {
            let digits = |d: &[u8]| !d.is_empty() && d.iter().all(u8::is_ascii_digit);
            match field {
                [b'c', n @ ..] if i > 0 && digits(n) && n != b"0" => b"cCAS".to_vec(),
                [b'c', b'a', b's', b'=', n @ ..] if digits(n) => b"cas=CAS".to_vec(),
                _ => field.to_vec(),
            }
        })
        .collect();
    fields.join(&b' ')
}

/// A reply's shape: its lines, a `STAT` line by its name alone, with a
/// number before a `:` in the name (a slab class, a descriptor) written
/// `N`. `left_out` names are dropped, and so are mckv's own `mckv_*` fields.
fn shape(raw: &[u8], left_out: &[&str]) -> Vec<String> {
    let text = String::from_utf8_lossy(&normalize(raw)).into_owned();
    text.split_terminator("\r\n")
        .filter_map(|line| {
            let Some(stat) = line.strip_prefix("STAT ") else {
                return Some(line.to_string());
            };
            let name = stat.split(' ').next().unwrap_or_default();
            if name.starts_with("mckv_") || left_out.contains(&name) {
                return None;
            }
            let parts: Vec<&str> = name
                .split(':')
                .map(|part| match part.bytes().all(|b| b.is_ascii_digit()) {
                    true => "N",
                    false => part,
                })
                .collect();
            Some(format!("STAT {}", parts.join(":")))
        })
        .collect()
}

/// Whether the two outcomes of `script` agree as it asks.
fn agree(script: &Script, reference: &Outcome, candidate: &Outcome) -> bool {
    let same_bytes = match script.compare {
        Compare::Exact => normalize(&reference.bytes) == normalize(&candidate.bytes),
        Compare::Shape { left_out } => {
            shape(&reference.bytes, left_out) == shape(&candidate.bytes, &[])
        }
        Compare::Binary { stats } => {
            binary::normalize(&reference.bytes, stats)
                == binary::normalize(&candidate.bytes, stats.map(|_| &[][..]))
        }
    };
    same_bytes && reference.ending == candidate.ending
}

/// For a script compared by shape or a binary one, the first line where
/// the two part.
fn shape_difference(script: &Script, reference: &Outcome, candidate: &Outcome) -> String {
    let (r, c) = match script.compare {
        Compare::Exact => return String::new(),
        Compare::Shape { left_out } => (
            shape(&reference.bytes, left_out),
            shape(&candidate.bytes, &[]),
        ),
        Compare::Binary { stats } => (
            binary::normalize(&reference.bytes, stats),
            binary::normalize(&candidate.bytes, stats.map(|_| &[][..])),
        ),
    };
    let at = r.iter().zip(&c).take_while(|(a, b)| a == b).count();
    format!(
        "\n  shapes part at line {at}: memcached `{}`, candidate `{}`",
        r.get(at).map_or("(end)", String::as_str),
        c.get(at).map_or("(end)", String::as_str)
    )
}

fn escape(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &b in bytes {
        match b {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s
}

/// Escaped, with the middle of long byte strings elided.
fn show(bytes: &[u8]) -> String {
    const HEAD: usize = 400;
    const TAIL: usize = 200;
    if bytes.len() <= HEAD + TAIL + 50 {
        escape(bytes)
    } else {
        format!(
            "{}...({} bytes)...{}",
            escape(&bytes[..HEAD]),
            bytes.len(),
            escape(&bytes[bytes.len() - TAIL..])
        )
    }
}

/// What a server answered to `script`: its bytes escaped, or for a binary
/// script its responses one per line.
fn describe(script: &Script, o: &Outcome) -> String {
    let end = match o.ending {
        Ending::Open => "",
        Ending::Closed => " [connection closed]",
        Ending::WriteStalled => " [write stalled: server stopped reading]",
    };
    match script.compare {
        Compare::Binary { .. } => {
            let responses = binary::normalize(&o.bytes, None);
            format!("\n    {}{end}", responses.join("\n    "))
        }
        _ => format!("`{}`{}", show(&o.bytes), end),
    }
}

// ---------------------------------------------------------------------------
// Servers and groups
// ---------------------------------------------------------------------------

enum Server {
    Memcached(common::ProcessGuard),
    Mckv(common::MckvNode),
    /// A 3-node cluster, talked to through node 1.
    Cluster(common::Cluster),
    /// One node keeping its data in a memcached of its own.
    OnMemcached {
        node: common::MckvNode,
        _backend: common::ProcessGuard,
    },
}

impl Server {
    fn port(&self) -> u16 {
        match self {
            Server::Memcached(g) => g.port,
            Server::Mckv(n) | Server::OnMemcached { node: n, .. } => n.port(),
            Server::Cluster(c) => c.port(1),
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Server::Memcached(_) => "memcached #2",
            Server::Mckv(_) => "mckv",
            Server::Cluster(_) => "mckv cluster",
            Server::OnMemcached { .. } => "mckv on memcached",
        }
    }

    fn log_tail(&self) -> String {
        match self {
            Server::Memcached(_) => String::new(),
            Server::Cluster(c) => {
                let log = c.log(1);
                let start = log.len().saturating_sub(3000);
                log[start..].to_string()
            }
            Server::Mckv(n) | Server::OnMemcached { node: n, .. } => {
                let log = n.log();
                let start = log.len().saturating_sub(3000);
                let start = (start..log.len())
                    .find(|&i| log.is_char_boundary(i))
                    .unwrap_or(log.len());
                format!("\n--- mckv log tail ---\n{}", &log[start..])
            }
        }
    }
}

fn start_candidate() -> Server {
    if std::env::var_os("DIFF_AGAINST_MEMCACHED").is_some() {
        Server::Memcached(common::start_memcached())
    } else {
        Server::Mckv(common::start_mckv("", &[]))
    }
}

/// One node on a memcached of its own, whose item size limit leaves room
/// for mckv's header (as the README says to configure it).
fn start_on_memcached() -> Server {
    let backend = common::start_memcached_with(&["-I", "2m"]);
    let kv = format!("kv_type = memcache\nkv_addr = 127.0.0.1:{}", backend.port);
    let node = common::start_mckv_with("", &kv, &[]);
    Server::OnMemcached {
        node,
        _backend: backend,
    }
}

fn prefix_for(group: char, index: usize) -> Vec<u8> {
    assert!(index < 100, "too many scripts in group {group}");
    let p = format!("{group}{index:02}_").into_bytes();
    assert_eq!(p.len(), PREFIX_LEN);
    p
}

/// Runs one script against both servers at the same time.
fn run_both(reference: u16, candidate: u16, script: &Script, prefix: &[u8]) -> (Outcome, Outcome) {
    std::thread::scope(|s| {
        let r = s.spawn(|| run_script(reference, script, prefix));
        let c = s.spawn(|| run_script(candidate, script, prefix));
        (r.join().unwrap(), c.join().unwrap())
    })
}

/// Runs every script of a group against a fresh memcached and a fresh
/// candidate, then fails once listing every mismatching script.
fn run_group(group: char, title: &str, scripts: Vec<Script>) {
    run_group_on(group, title, scripts, start_candidate());
}

/// Like [`run_group`], against a given candidate server.
fn run_group_on(group: char, title: &str, scripts: Vec<Script>, candidate: Server) {
    let names: std::collections::HashSet<&str> = scripts.iter().map(|s| s.name).collect();
    assert_eq!(
        names.len(),
        scripts.len(),
        "duplicate script names in {title}"
    );

    let reference = common::start_memcached();
    let (rport, cport) = (reference.port, candidate.port());

    let mut results: Vec<Option<(Outcome, Outcome)>> = scripts.iter().map(|_| None).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = scripts
            .iter()
            .enumerate()
            .filter(|(_, sc)| !sc.serial)
            .map(|(i, sc)| {
                let prefix = prefix_for(group, i);
                (i, s.spawn(move || run_both(rport, cport, sc, &prefix)))
            })
            .collect();
        for (i, h) in handles {
            results[i] = Some(h.join().expect("script thread panicked"));
        }
    });
    for (i, sc) in scripts.iter().enumerate().filter(|(_, sc)| sc.serial) {
        results[i] = Some(run_both(rport, cport, sc, &prefix_for(group, i)));
    }

    let dump = std::env::var_os("DIFF_DUMP").is_some();
    let mut failures = Vec::new();
    for (i, (script, result)) in scripts.iter().zip(results).enumerate() {
        let (r, c) = result.unwrap();
        if dump {
            let sent = substitute(&script.sent_bytes(), &prefix_for(group, i));
            eprintln!(
                "[{}] {}\n  sent: `{}`\n  memcached: {}",
                title,
                script.name,
                show(&sent),
                describe(script, &r)
            );
        }
        if !agree(script, &r, &c) {
            let sent = substitute(&script.sent_bytes(), &prefix_for(group, i));
            failures.push(format!(
                "script `{}`\n  sent:      `{}`\n  memcached: {}\n  {}: {}{}",
                script.name,
                show(&sent),
                describe(script, &r),
                candidate.label(),
                describe(script, &c),
                shape_difference(script, &r, &c),
            ));
        }
    }
    if !failures.is_empty() {
        panic!(
            "{}: {} of {} scripts differ from memcached:\n\n{}\n{}",
            title,
            failures.len(),
            scripts.len(),
            failures.join("\n\n"),
            candidate.log_tail()
        );
    }
}

// ---------------------------------------------------------------------------
// Script tables
// ---------------------------------------------------------------------------

fn storage_scripts() -> Vec<Script> {
    let now = unix_now();
    let mut many_keys = b"set $1 0 0 1\r\na\r\nset $9 0 0 1\r\nb\r\nget".to_vec();
    for i in 0..30 {
        many_keys.extend_from_slice(format!(" ${}", i % 12).as_bytes());
    }
    many_keys.extend_from_slice(b"\r\ngets $9 $9 $1\r\n");
    vec![
        one(
            "get_multi_with_misses",
            b"set $a 5 0 1\r\nA\r\nset $b 6 0 2\r\nBB\r\nget $a $b $c\r\nget $c\r\nget $a $a\r\nget  $a   $b  \r\n",
        ),
        one(
            "gets_multi",
            b"set $a 5 0 1\r\nA\r\nset $b 6 0 2\r\nBB\r\ngets $a $c $b\r\ngets $c\r\n",
        ),
        one(
            "gat_and_gats",
            b"set $a 1 0 1\r\nA\r\ngat 0 $a $c\r\ngats 100 $a\r\ngat 0\r\ngats 0\r\ngat\r\ngats\r\ngat abc $a\r\ngat 1.5 $a\r\ngat -1 $a\r\nget $a\r\n",
        ),
        one("multiget_more_than_24_tokens", many_keys),
        one(
            "flags_edge_values",
            b"set $1 4294967295 0 1\r\nx\r\nset $2 4294967296 0 1\r\nx\r\nset $3 4294967297 0 1\r\nx\r\n\
              set $4 -1 0 1\r\nx\r\nset $5 abc 0 1\r\nx\r\nset $6 01 0 1\r\nx\r\nset $7 +5 0 1\r\nx\r\n\
              set $8 1.5 0 1\r\nx\r\nset $9 0x10 0 1\r\nx\r\nget $1 $2 $3 $4 $5 $6 $7 $8 $9\r\n",
        ),
        one(
            "exptime_edge_values",
            format!(
                "set $1 0 -1 1\r\nx\r\nset $2 0 0 1\r\nx\r\nset $3 0 2592000 1\r\nx\r\nset $4 0 2592001 1\r\nx\r\n\
                 set $5 0 99999999999 1\r\nx\r\nset $6 0 -99999999999 1\r\nx\r\nset $7 0 4294967295 1\r\nx\r\n\
                 set $8 0 4294967296 1\r\nx\r\nset $9 0 abc 1\r\nx\r\nset $10 0 1.5 1\r\nx\r\n\
                 set $11 0 {} 1\r\nx\r\nset $12 0 {} 1\r\nx\r\nset $13 0 -0 1\r\nx\r\n\
                 get $1 $2 $3 $4 $5 $6 $7 $8 $9 $10 $11 $12 $13\r\n",
                now + 3600,
                now - 5
            ),
        ),
        one(
            "length_edge_values",
            b"set $1 0 0 0\r\n\r\nset $2 0 0 01\r\nx\r\nset $3 0 0 +1\r\nx\r\nset $4 0 0 4294967297\r\nx\r\n\
              set $5 0 0 abc\r\nx\r\nset $6 0 0 -1\r\nx\r\nset $7 0 0 1.0\r\nx\r\nset $8 0 0 2147483646\r\nx\r\n\
              set $9 0 0 2147483648\r\nx\r\nget $1 $2 $3 $4 $5 $6 $7 $8 $9\r\n",
        ),
        one(
            "noreply_storage_commands",
            b"set $n 0 0 1 noreply\r\nx\r\nadd $n 0 0 1 noreply\r\ny\r\nreplace $m 0 0 1 noreply\r\ny\r\n\
              append $n 0 0 1 noreply\r\nz\r\nprepend $n 0 0 1 noreply\r\nw\r\nget $n $m\r\n\
              add $m 0 0 1 noreply\r\nm\r\nreplace $m 0 0 1 noreply\r\nM\r\nappend $o 0 0 1 noreply\r\no\r\n\
              cas $n 0 0 1 1 noreply\r\nq\r\ncas $o 0 0 1 1 noreply\r\nq\r\nget $n $m $o\r\n",
        ),
        one(
            "noreply_token_spellings",
            b"set $1 0 0 1 NOREPLY\r\nx\r\nset $2 0 0 1 foo\r\nx\r\nset $3 0 0 1 noreply extra\r\nx\r\n\
              set $4 0 0 1 2\r\nx\r\nset $5 0 0 1 noreply 2\r\nx\r\nget $1 $2 $3 $4 $5\r\n",
        ),
        one(
            "add_replace_append_prepend",
            b"add $r 1 0 1\r\na\r\nadd $r 2 0 1\r\nb\r\nreplace $r 3 0 1\r\nc\r\nreplace $s 3 0 1\r\nc\r\n\
              append $r 9 0 2\r\nxy\r\nprepend $r 9 100 2\r\nuv\r\nget $r\r\nappend $t 0 0 1\r\nx\r\n\
              prepend $t 0 0 1\r\nx\r\nget $t $s\r\nappend $r 0 0 0\r\n\r\nprepend $r 0 0 0\r\n\r\ngets $r\r\n",
        ),
        one(
            "cas_without_valid_unique",
            b"cas $c 0 0 1 5\r\nx\r\nset $c 0 0 1\r\nx\r\ncas $c 0 0 1 99999999\r\ny\r\ncas $c 0 0 1 abc\r\ny\r\n\
              cas $c 0 0 1\r\ny\r\ncas $c 0 0 1 -1\r\ny\r\ncas $c 0 0 1 0\r\ny\r\n\
              cas $c 0 0 1 18446744073709551615\r\ny\r\ncas $c 0 0 1 18446744073709551616\r\ny\r\n\
              cas $c 0 0 1 0 extra\r\ny\r\ncas $c 0 0 1 0 noreply\r\ny\r\ncas $d 0 0 1 1 noreply\r\ny\r\n\
              cas $c 0 0 1 1 noreply extra\r\ny\r\nget $c $d\r\n",
        ),
        one(
            "delete_variants",
            b"set $1 0 0 1\r\nx\r\nset $2 0 0 1\r\nx\r\nset $3 0 0 1\r\nx\r\ndelete $1 0\r\ndelete $2 0 noreply\r\n\
              delete $3 5\r\ndelete $3 5 noreply\r\nget $3\r\ndelete $3 noreply\r\nget $1 $2 $3\r\ndelete $3\r\n\
              delete\r\ndelete a b c d\r\ndelete $3 0 0\r\ndelete $3 noreply 0\r\ndelete $3 x\r\n\
              delete $3 noreply\r\ndelete  $3  \r\n",
        ),
        one(
            "incr_decr_arguments",
            b"set $i 0 0 2\r\n10\r\nincr $i 1\r\ndecr $i 1\r\nincr $i abc\r\nincr $i -1\r\nincr $i 1.5\r\n\
              incr $i 0x10\r\nincr $i +1\r\nincr $i 01\r\ndecr $i -0\r\nincr $nokey 1\r\ndecr $nokey 1\r\n\
              incr $i 1 noreply\r\ndecr $i 1 noreply\r\nincr $i abc noreply\r\nincr $nokey 1 noreply\r\n\
              incr $i 5 extra\r\nincr $i\r\nincr\r\nincr a b c d\r\ndecr $i 1 2 3\r\nget $i\r\n",
        ),
        one(
            "incr_64bit_wrap_pads_value",
            b"set $w 0 0 20\r\n18446744073709551615\r\nincr $w 1\r\nget $w\r\nset $v 0 0 3\r\n007\r\n\
              incr $v 18446744073709551615\r\nget $v\r\nincr $v 18446744073709551616\r\n\
              set $u 0 0 21\r\n184467440737095516150\r\nincr $u 1\r\n",
        ),
        one(
            "decr_shrinks_in_place_with_spaces",
            b"set $d 3 0 3\r\n100\r\ndecr $d 1\r\nget $d\r\nincr $d 1\r\nget $d\r\nincr $d 1000\r\nget $d\r\n\
              decr $d 1005\r\nget $d\r\ndecr $d 1000\r\nget $d\r\nset $e 0 0 1\r\n5\r\ndecr $e 10\r\nget $e\r\n\
              set $f 7 0 2\r\n99\r\nincr $f 1\r\nget $f\r\nset $g 7 0 1\r\n9\r\nincr $g 1\r\nget $g\r\n",
        ),
        one(
            "incr_on_odd_values",
            b"set $1 0 0 4\r\n  12\r\nincr $1 1\r\nget $1\r\nset $2 0 0 5\r\n12abc\r\nincr $2 1\r\n\
              set $3 0 0 4\r\n12  \r\nincr $3 1\r\nget $3\r\nset $4 0 0 3\r\n-12\r\nincr $4 1\r\n\
              set $5 0 0 2\r\n+5\r\nincr $5 1\r\nset $6 0 0 0\r\n\r\nincr $6 1\r\nset $7 0 0 3\r\n1 2\r\n\
              incr $7 1\r\nget $7\r\nset $8 0 0 4\r\n1\r\n2\r\nincr $8 1\r\nget $8\r\nset $9 0 0 3\r\n99 \r\n\
              incr $9 1\r\nget $9\r\nset $10 0 0 1\r\nx\r\ndecr $10 1\r\nset $11 0 0 2\r\n0x\r\nincr $11 1\r\n",
        ),
        one(
            "touch_variants",
            b"set $t 0 0 1\r\nx\r\ntouch $t 0\r\ntouch $t 100\r\ntouch $nokey 0\r\ntouch $t abc\r\n\
              touch $t 0 noreply\r\ntouch $t abc noreply\r\ntouch $t\r\ntouch $t 0 extra\r\n\
              touch $t 4294967296\r\nget $t\r\ntouch $t -1\r\nget $t\r\ntouch $t 0\r\n",
        ),
        one(
            "negative_exptime_is_immediately_gone",
            b"set $1 0 -1 1\r\na\r\nget $1\r\nadd $1 0 0 1\r\nb\r\nget $1\r\nset $2 0 -1 1\r\na\r\n\
              replace $2 0 0 1\r\nb\r\nincr $2 1\r\ntouch $2 0\r\nappend $2 0 0 1\r\nb\r\ndelete $2\r\n\
              set $3 0 0 1\r\n1\r\ntouch $3 -1\r\nincr $3 1\r\nset $4 0 0 1\r\n1\r\ngat -1 $4\r\nget $4\r\n",
        ),
        one(
            "binary_and_reply_like_values",
            cat(&[
                b"set $1 0 0 5\r\na\x00b\xffc\r\nset $2 0 0 12\r\nEND\r\nVALUE x\r\nset $3 0 0 100000\r\n",
                &repeat(b'v', 100000),
                b"\r\nget $1 $2\r\ngets $2\r\nget $3\r\n",
            ]),
        ),
        one(
            "key_of_250_bytes",
            cat(&[
                b"set ",
                &key(250),
                b" 0 0 1\r\n5\r\nget ",
                &key(250),
                b"\r\nincr ",
                &key(250),
                b" 2\r\ntouch ",
                &key(250),
                b" 0\r\ngat 0 ",
                &key(250),
                b"\r\nappend ",
                &key(250),
                b" 0 0 1\r\n0\r\ndelete ",
                &key(250),
                b"\r\nget ",
                &key(250),
                b"\r\n",
            ]),
        ),
        one(
            "keys_with_odd_bytes",
            b"set $\x01 0 0 1\r\na\r\nget $\x01\r\nset $a\rb 0 0 1\r\nb\r\nget $a\rb\r\nget $a\r\n\
              set $\x80\xff 0 0 1\r\nc\r\nget $\x80\xff $\x7f\r\n",
        ),
        one(
            "version_and_verbosity",
            b"version\r\nversion x\r\nverbosity\r\nverbosity 1\r\nverbosity noreply\r\nverbosity 1 noreply\r\n\
              verbosity abc\r\nverbosity 0\r\nverbosity 1 2\r\nverbosity 1 2 3\r\nverbosity 0\r\nversion noreply\r\n",
        ),
        one(
            "stats_reset_and_unknown_stats",
            b"stats reset\r\nstats nonsense\r\nstats reset x\r\nstats  reset\r\n",
        ),
    ]
}

fn error_scripts() -> Vec<Script> {
    let k251 = key(251);
    let big = repeat(b'a', 2_000_000);
    vec![
        one(
            "unknown_and_malformed_lines",
            b"foo\r\nGET $a\r\nSET $a 0 0 1\r\nx\r\n\r\n   \r\ng\r\nge\r\nget\r\nget \r\ngets\r\n\
              set $a 0 0 1 noreply extra\r\nx\r\nset $a 0 0\r\nset\r\nincr\r\ndecr $a\r\ndelete\r\n\
              touch $a\r\ncas $a 0 0 1\r\nbogus HTTP\r\nversion\r\n",
        ),
        one(
            "nul_byte_inside_command_line",
            b"set $a 0 0 1\r\nx\r\nget $a\x00zzz\r\nget $a \x00$b\r\nset $n\x00ul 0 0 1\r\nx\r\nget $n\r\n",
        ),
        one(
            "bare_newlines_and_double_cr",
            b"set $a 0 0 1\nx\r\nget $a\nset $b 0 0 2\r\nab\r\r\nget $b\r\r\nget $a\r\n\n\r\n\r\r\nversion\n",
        ),
        one(
            "tabs_and_extra_spaces",
            b"set $t 0 0 1\t\r\nx\r\nget $t\r\nget\t$t\r\n   get $t\r\nget  $t   $t  \r\nget $t\t\r\n\
              set $u\t0 0 1\r\nx\r\nset $v \t5 0 1\r\ny\r\nget $v\r\nincr $t\t1\r\n",
        ),
        one(
            "bad_data_chunk_then_empty_line",
            b"set $k 0 0 3\r\nabcde\r\nget $k\r\n",
        ),
        one(
            "bad_data_chunk_then_command_in_same_bytes",
            b"set $k 0 0 3\r\nabcdeget $k\r\nset $k 0 0 1\r\nxyz\r\nversion\r\n",
        ),
        one(
            "bad_data_chunk_keeps_old_value",
            b"set $k 0 0 1\r\nx\r\nset $k 0 0 3\r\nabcde\r\nget $k\r\n",
        ),
        one(
            "bad_data_chunk_noreply",
            b"set $k 0 0 3 noreply\r\nabcde\r\nget $k\r\n",
        ),
        one(
            "bad_data_chunk_bare_newline_terminator",
            b"set $k 0 0 1\r\nx\nversion\r\nset $j 0 0 3\r\nab\nde\r\nget $j\r\n",
        ),
        one(
            "value_too_large_swallowed",
            cat(&[
                b"set $k 0 0 1\r\nx\r\nset $k 0 0 2000000\r\n",
                &big,
                b"\r\nget $k\r\nversion\r\n",
            ]),
        ),
        one(
            "value_too_large_noreply_swallowed",
            cat(&[
                b"set $k 0 0 1\r\nx\r\nset $k 0 0 2000000 noreply\r\n",
                &big,
                b"\r\nget $k\r\n",
            ]),
        ),
        one(
            "value_too_large_swallow_counts_bytes",
            cat(&[b"set $k 0 0 2000000\r\n", &big, b"XY\r\nversion\r\n"]),
        ),
        one(
            "append_too_large_keeps_old_value",
            cat(&[
                b"set $k 0 0 1\r\nx\r\nappend $k 0 0 2000000\r\n",
                &big,
                b"\r\nget $k\r\n",
            ]),
        ),
        one(
            "huge_length_is_bad_format",
            b"set $k 0 0 2147483646\r\nversion\r\nset $k 0 0 2147483648\r\nversion\r\n",
        ),
        one(
            "set_key_251_data_line_is_a_command",
            cat(&[
                b"set ",
                &k251,
                b" 0 0 1\r\nx\r\nset ",
                &k251,
                b" 0 0 7\r\nversion\r\nset ",
                &k251,
                b" 0 0 1 noreply\r\nx\r\nadd ",
                &k251,
                b" 0 0 1\r\nx\r\nappend ",
                &k251,
                b" 0 0 1\r\nx\r\ncas ",
                &k251,
                b" 0 0 1 1\r\nx\r\n",
            ]),
        ),
        // Separate writes: a failed get also drops unsent earlier replies
        // (see reply_flush_points_match_memcached).
        Script::new("key_251_in_get_family")
            .send(cat(&[b"get ", &k251, b"\r\n"]))
            .pause(PAUSE_MS)
            .send(cat(&[b"gets ", &k251, b"\r\n"]))
            .pause(PAUSE_MS)
            .send(cat(&[b"gat 0 ", &k251, b"\r\n"]))
            .pause(PAUSE_MS)
            .send(cat(&[b"gats 0 ", &k251, b"\r\n"]))
            .pause(PAUSE_MS)
            .send(cat(&[b"get $a ", &key(1000), b"\r\n"])),
        one(
            "key_251_in_other_commands",
            cat(&[
                b"delete ",
                &k251,
                b"\r\ndelete ",
                &k251,
                b" noreply\r\nincr ",
                &k251,
                b" 1\r\ndecr ",
                &k251,
                b" 1 noreply\r\ntouch ",
                &k251,
                b" 1\r\ntouch ",
                &k251,
                b" 1 noreply\r\nversion\r\n",
            ]),
        ),
        Script::new("get_with_251_key_drops_values_of_that_get")
            .send(b"set $a 0 0 1\r\nx\r\nset $b 0 0 1\r\ny\r\n")
            .pause(PAUSE_MS)
            .send(cat(&[b"get $a ", &k251, b" $b\r\n"]))
            .pause(PAUSE_MS)
            .send(b"get $a\r\n")
            .pause(PAUSE_MS)
            .send(cat(&[b"gets $a $b ", &k251, b"\r\nget $b\r\n"])),
        one(
            "non_numeric_fields_with_data_line",
            b"set $k abc 0 1\r\nx\r\nset $k 0 abc 1\r\nx\r\nset $k 0 0 abc\r\nx\r\nset $k 0 0 -1\r\nx\r\n\
              cas $k 0 0 1 abc\r\nx\r\nget $k\r\n",
        ),
        one(
            "non_numeric_fields_noreply",
            b"set $k abc 0 1 noreply\r\nx\r\nset $k 0 abc 1 noreply\r\nx\r\nset $k 0 0 -1 noreply\r\nx\r\n\
              cas $k 0 0 1 abc noreply\r\nx\r\nset $k 0 0 1 noreply\r\nx\r\nget $k\r\n",
        ),
        one("http_request_closes", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        one("lowercase_get_http_is_a_get", b"get / HTTP/1.1\r\nversion\r\n"),
        one("unknown_command_http_token_closes", b"foo HTTP/1.0\r\nversion\r\n"),
        one(
            "http_token_on_s_command_is_error",
            b"sxx HTTP/1.0\r\nfoo xHTTP/\r\nversion\r\n",
        ),
        one("quit_closes", b"quit\r\nversion\r\n"),
        one(
            "quit_after_replies_and_with_args",
            b"version\r\nquit extra\r\nversion\r\n",
        ),
        Script::new("line_of_2048_without_newline_is_kept")
            .send(repeat(b'x', 2048))
            .pause(PAUSE_MS)
            .send(b"\r\nversion\r\n"),
        Script::new("line_of_2049_without_newline_closes")
            .send(repeat(b'x', 2049))
            .pause(PAUSE_MS)
            .send(b"\r\nversion\r\n"),
        Script::new("long_set_line_without_newline_closes")
            .send(cat(&[b"set $k 0 0 1 ", &repeat(b'x', 3000)]))
            .pause(PAUSE_MS)
            .send(b"\r\nx\r\nversion\r\n"),
        Script::new("long_delete_key_without_newline_closes")
            .send(cat(&[b"delete ", &key(3000)]))
            .pause(PAUSE_MS)
            .send(b"\r\nversion\r\n"),
        one(
            "long_lines_with_newline_in_same_write",
            cat(&[
                &repeat(b'x', 3000),
                b"\r\ndelete ",
                &key(3000),
                b"\r\nfoo ",
                &repeat(b'k', 5000),
                b"\r\nversion\r\n",
            ]),
        ),
        Script::new("long_multiget_without_newline_is_allowed")
            .send(cat(&[b"set $k 0 0 1\r\nx\r\nget ", &b"$k ".repeat(600)]))
            .pause(PAUSE_MS)
            .send(b"$k\r\nversion\r\n"),
        Script::new("long_gets_without_newline_is_allowed")
            .send(cat(&[b"gets ", &b"$z ".repeat(600)]))
            .pause(PAUSE_MS)
            .send(b"\r\nversion\r\n"),
        Script::new("long_gat_without_newline_closes")
            .send(cat(&[b"gat 0 ", &b"$z ".repeat(600)]))
            .pause(PAUSE_MS)
            .send(b"\r\nversion\r\n"),
        Script::new("long_uppercase_get_without_newline_closes")
            .send(cat(&[b"GET ", &b"$z ".repeat(600)]))
            .pause(PAUSE_MS)
            .send(b"\r\nversion\r\n"),
        Script::new("long_get_after_50_spaces_is_allowed")
            .send(cat(&[&repeat(b' ', 50), b"get ", &b"$z ".repeat(600)]))
            .pause(PAUSE_MS)
            .send(b"\r\nversion\r\n"),
        Script::new("long_get_after_101_spaces_closes")
            .send(cat(&[&repeat(b' ', 101), b"get ", &b"$z ".repeat(600)]))
            .pause(PAUSE_MS)
            .send(b"\r\nversion\r\n"),
        Script::new("long_get_of_spaces_only")
            .send(cat(&[b"get", &repeat(b' ', 3000)]))
            .pause(PAUSE_MS)
            .send(b"\r\nversion\r\n"),
        Script::new("long_get_with_one_huge_key")
            .send(cat(&[b"get ", &key(3000)]))
            .pause(PAUSE_MS)
            .send(b"\r\nversion\r\n"),
        Script::new("long_run_of_cr_closes")
            .send(repeat(b'\r', 3000))
            .pause(PAUSE_MS)
            .send(b"\r\nversion\r\n"),
        one(
            "shutdown_not_enabled",
            b"shutdown\r\nshutdown graceful\r\nshutdown x y\r\nversion\r\n",
        )
        .serial(),
    ]
}

fn split_scripts() -> Vec<Script> {
    let mut pipeline = Vec::new();
    for i in 0..60 {
        pipeline.extend_from_slice(
            format!("set $p{i} {i} 0 {}\r\n{i}\r\n", i.to_string().len()).as_bytes(),
        );
    }
    pipeline.extend_from_slice(b"get");
    for i in (0..60).step_by(7) {
        pipeline.extend_from_slice(format!(" $p{i}").as_bytes());
    }
    pipeline.extend_from_slice(b"\r\nincr $p9 1\r\ndelete $p8\r\nget $p8 $p9\r\n");
    vec![
        Script::new("command_split_mid_line")
            .send(b"ge")
            .pause(PAUSE_MS)
            .send(b"t $a\r\nset $a 0 ")
            .pause(PAUSE_MS)
            .send(b"0 1\r\nx\r\nget $a\r\n"),
        Script::new("split_between_cr_and_lf")
            .send(b"set $a 0 0 1\r")
            .pause(PAUSE_MS)
            .send(b"\nx\r")
            .pause(PAUSE_MS)
            .send(b"\nget $a\r")
            .pause(PAUSE_MS)
            .send(b"\n"),
        Script::new("value_split_mid_data")
            .send(b"set $a 0 0 10\r\nabc")
            .pause(PAUSE_MS)
            .send(b"defg")
            .pause(PAUSE_MS)
            .send(b"hij\r\nget $a\r\n"),
        Script::new("value_split_before_terminator")
            .send(b"set $a 0 0 3\r\nabc")
            .pause(PAUSE_MS)
            .send(b"\r")
            .pause(PAUSE_MS)
            .send(b"\nget $a\r\n"),
        Script::new("bad_data_chunk_split")
            .send(b"set $a 0 0 3\r\nab")
            .pause(PAUSE_MS)
            .send(b"cde\r\nget $a\r\n"),
        Script::new("header_and_value_in_separate_writes")
            .send(b"set $a 0 0 5\r\n")
            .pause(PAUSE_MS)
            .send(b"hello\r\n")
            .pause(PAUSE_MS)
            .send(b"get $a\r\n"),
        Script::new("bytewise_set_and_get").bytewise(b"set $a 1 0 2\r\nhi\r\nget $a\r\n"),
        Script::new("bytewise_incr_noreply_and_get")
            .send(b"set $a 0 0 1\r\n5\r\n")
            .pause(PAUSE_MS)
            .bytewise(b"incr $a 2 noreply\r\nget $a\r\n"),
        one("pipelined_sixty_sets_and_gets", pipeline),
        one(
            "pipelined_mixed_commands",
            b"set $a 0 0 1\r\n1\r\nadd $a 0 0 1\r\n2\r\nincr $a 5\r\nappend $a 0 0 1\r\n0\r\nget $a\r\n\
              delete $a noreply\r\nget $a\r\ntouch $a 0\r\nbogus\r\nversion\r\nset $b 0 0 2 noreply\r\nbb\r\n\
              gets $b\r\ndecr $b 1\r\n",
        ),
        one(
            "pipelined_errors_between_commands",
            b"set $a 0 0 1\r\nx\r\nfoo\r\nget $a\r\nset $a 0 0 3\r\nabcde\r\nget $a\r\nincr $a x\r\nget $a\r\n",
        ),
        Script::new("too_large_value_split_mid_swallow")
            .send(b"set $a 0 0 1\r\nx\r\n")
            .pause(PAUSE_MS)
            .send(b"set $a 0 0 2000000\r\n")
            .pause(PAUSE_MS)
            .send(repeat(b'a', 1_000_000))
            .pause(PAUSE_MS)
            .send(cat(&[&repeat(b'a', 1_000_000), b"\r\nget $a\r\n"])),
        Script::new("long_multiget_split_in_pieces")
            .send(b"set $k 0 0 1\r\nx\r\n")
            .pause(PAUSE_MS)
            .send(cat(&[b"get ", &b"$k ".repeat(400)]))
            .pause(PAUSE_MS)
            .send(b"$k ".repeat(400))
            .pause(PAUSE_MS)
            .send(b"$k\r\n"),
        Script::new("many_small_writes_pipelined")
            .send(b"set $a 0 0 1\r\n1\r\ninc")
            .pause(20)
            .send(b"r $a 1\r\nget $a\r")
            .pause(20)
            .send(b"\ndecr $a 1\r\nget")
            .pause(20)
            .send(b" $a\r\n"),
    ]
}

fn flush_scripts() -> Vec<Script> {
    vec![
        one(
            "flush_all_plain",
            b"set $a 0 0 1\r\nx\r\nflush_all\r\nget $a\r\nset $a 0 0 1\r\ny\r\nget $a\r\n",
        ),
        one(
            "flush_all_zero_and_negative",
            b"set $a 0 0 1\r\nx\r\nflush_all 0\r\nget $a\r\nset $a 0 0 1\r\nx\r\nflush_all -1\r\nget $a\r\n",
        ),
        one(
            "flush_all_noreply",
            b"set $a 0 0 1\r\nx\r\nflush_all noreply\r\nget $a\r\nset $a 0 0 1\r\nx\r\nflush_all 0 noreply\r\nget $a\r\n",
        ),
        one(
            "flush_all_bad_arguments",
            b"set $a 0 0 1\r\nx\r\nflush_all abc\r\nget $a\r\nflush_all 0 0 0\r\nget $a\r\n\
              flush_all noreply noreply\r\nget $a\r\nflush_all 1.5\r\nget $a\r\n",
        ),
        one(
            "flush_all_with_delay",
            b"set $a 0 0 1\r\nx\r\nflush_all 3600\r\nget $a\r\nflush_all 3600 20\r\nget $a\r\nflush_all\r\nget $a\r\n",
        ),
    ]
    .into_iter()
    .map(Script::serial)
    .collect()
}

/// Where memcached flushes buffered replies matters when a later command
/// kills the connection or fails a get: replies not yet written are dropped.
fn flush_point_scripts() -> Vec<Script> {
    let k251 = key(251);
    vec![
        one(
            "failed_get_drops_earlier_pipelined_replies",
            cat(&[
                b"set $a 0 0 1\r\nx\r\nversion\r\nget ",
                &k251,
                b"\r\nget $a\r\n",
            ]),
        ),
        one(
            "failed_get_keeps_replies_before_a_completed_get",
            cat(&[
                b"set $a 0 0 1\r\nx\r\nget $a\r\ntouch $a 0\r\nget $z\r\nversion\r\ngets $a ",
                &k251,
                b"\r\nversion\r\n",
            ]),
        ),
        one(
            "failed_gat_drops_earlier_replies",
            cat(&[
                b"set $a 0 0 1\r\nx\r\ndelete $b\r\ngat 0 $a ",
                &k251,
                b"\r\n",
            ]),
        ),
        one(
            "get_without_keys_does_not_flush",
            cat(&[b"version\r\nget\r\nversion\r\nget ", &k251, b"\r\n"]),
        ),
        one(
            "failed_delete_does_not_drop_replies",
            cat(&[b"version\r\nset $a 0 0 1\r\nx\r\ndelete ", &k251, b"\r\n"]),
        ),
        Script::new("replies_from_earlier_writes_are_kept")
            .send(b"set $a 0 0 1\r\nx\r\nversion\r\nver")
            .pause(PAUSE_MS)
            .send(cat(&[b"sion\r\nget ", &k251, b"\r\n"])),
        one(
            "http_close_drops_pending_replies",
            b"version\r\nset $a 0 0 1\r\nx\r\nGET / HTTP/1.1\r\n",
        ),
        one(
            "http_close_keeps_replies_flushed_by_get",
            b"set $a 0 0 1\r\nx\r\nget $a\r\nversion\r\nGET / HTTP/1.1\r\n",
        ),
        Script::new("http_close_after_separate_write_keeps_reply")
            .send(b"version\r\n")
            .pause(PAUSE_MS)
            .send(b"GET / HTTP/1.1\r\n"),
        one(
            "overlong_line_close_drops_pending_replies",
            cat(&[b"version\r\n", &repeat(b'x', 3000)]),
        ),
        one("bget_is_get", b"set $a 0 0 1\r\nx\r\nbget $a $b\r\n"),
        one(
            "largest_storable_value",
            cat(&[
                b"set $ 0 0 1048513\r\n",
                &repeat(b'a', 1_048_513),
                b"\r\nset $ 0 0 1048514\r\n",
                &repeat(b'b', 1_048_514),
                b"\r\nset $f 1 0 1048508\r\n",
                &repeat(b'c', 1_048_508),
                b"\r\nset $f 1 0 1048509\r\n",
                &repeat(b'd', 1_048_509),
                b"\r\nappend $f 0 0 1\r\ne\r\nappend $f 0 0 2\r\nee\r\n",
            ]),
        ),
        // An item at the size limit takes no append or prepend, and keeps its value.
        one(
            "append_past_the_limit",
            cat(&[
                b"set $ 0 0 1048513\r\n",
                &repeat(b'a', 1_048_513),
                b"\r\nappend $ 0 0 1\r\nz\r\nprepend $ 0 0 1\r\nz\r\n",
                b"set $s 0 0 1048512\r\n",
                &repeat(b'b', 1_048_512),
                b"\r\nappend $s 0 0 1\r\nz\r\nappend $s 0 0 1\r\nz\r\nget $\r\n",
            ]),
        ),
    ]
}

/// memcached's `stats` fields mckv does not report: the version of
/// libevent, which mckv does not use.
const STATS_LEFT_OUT: &[&str] = &["libevent"];

/// memcached's `stats settings` mckv does not report: its slab allocator,
/// LRU, crawler, extstore, TLS, UDP and log settings, none of which mckv
/// has, and `verbosity`, which mckv takes and ignores.
const SETTINGS_LEFT_OUT: &[&str] = &[
    "verbosity",
    "oldest",
    "umask",
    "growth_factor",
    "chunk_size",
    "num_threads_per_udp",
    "reqs_per_event",
    "hashpower_init",
    "slab_reassign",
    "slab_automove",
    "slab_automove_ratio",
    "slab_automove_window",
    "slab_chunk_max",
    "lru_crawler_sleep",
    "lru_crawler_tocrawl",
    "tail_repair_time",
    "hash_algorithm",
    "hot_lru_pct",
    "warm_lru_pct",
    "hot_max_factor",
    "warm_max_factor",
    "temp_lru",
    "temporary_ttl",
    "watcher_logbuf_size",
    "worker_logbuf_size",
    "inline_ascii_response",
    "ext_item_size",
    "ext_item_age",
    "ext_low_ttl",
    "ext_recache_rate",
    "ext_wbuf_size",
    "ext_compact_under",
    "ext_drop_under",
    "ext_max_sleep",
    "ext_max_frag",
    "slab_automove_freeratio",
    "ext_drop_unread",
    "ssl_chain_cert",
    "ssl_key",
    "ssl_verify_mode",
    "ssl_keyformat",
    "ssl_ciphers",
    "ssl_ca_cert",
    "ssl_wbuf_size",
    "ssl_session_cache",
    "ssl_kernel_tls",
    "ssl_min_version",
    "num_napi_ids",
    "memory_file",
];

/// `stats` and its groups, `cache_memlimit` and `slabs`. Only the serial
/// scripts at the end store items: the groups about slab classes are
/// compared on a store memcached has no slab page for yet, which is how
/// mckv's store (it has none) always answers.
fn stats_scripts() -> Vec<Script> {
    vec![
        one("stats_general_fields", b"stats\r\n").shape(STATS_LEFT_OUT),
        one("stats_settings_fields", b"stats settings\r\n").shape(SETTINGS_LEFT_OUT),
        one(
            "stats_groups_with_no_slab_page",
            b"stats slabs\r\nstats items\r\nstats sizes\r\nstats cachedump 1 0\r\n\
              stats cachedump 0 5\r\nstats cachedump 63 4294967297\r\nstats cachedump 1 2 3\r\n\
              stats extstore\r\nstats  items  x\r\n",
        ),
        one(
            "malformed_stats_groups",
            b"stats detail\r\nstats detail x\r\nstats detail onx\r\nstats cachedump\r\n\
              stats cachedump 1\r\nstats cachedump x 1\r\nstats cachedump 1 x\r\n\
              stats cachedump 1 -1\r\nstats cachedump -1 0\r\nstats cachedump 64 0\r\n\
              stats foo\r\nstats noreply\r\nstats SLABS\r\nSTATS\r\nstats proxy\r\nversion\r\n",
        ),
        one(
            "slabs_automove_and_reassign",
            b"slabs\r\nslabs automove\r\nslabs automove 0\r\nslabs automove 2\r\n\
              slabs automove 3\r\nslabs automove x\r\nslabs automove -1\r\nslabs automove 1 2\r\n\
              slabs automove x noreply\r\nslabs automove 3 noreply\r\nslabs automove ratio\r\n\
              slabs automove ratio 0.5\r\nslabs automove ratio x 1\r\nslabs  automove  1 \r\n\
              slabs reassign\r\nslabs reassign 1\r\nslabs reassign 1 2\r\nslabs reassign 1 1\r\n\
              slabs reassign -1 2\r\nslabs reassign 1 40\r\nslabs reassign 0 39\r\n\
              slabs reassign x y\r\nslabs reassign 1 2 3\r\nslabs reassign 1 2 noreply\r\n\
              slabs reassign 4294967297 1\r\nslabs reassign 2147483648 1\r\nslabs foo bar\r\n\
              SLABS automove 1\r\nslabs Automove 1\r\nversion\r\n",
        ),
        // Nothing but the script's own connection and the listener is open.
        Script::new("stats_conns")
            .pause(300)
            .send(b"stats conns\r\n")
            .shape(&[])
            .serial(),
        // memcached keeps the limit at 8 MB or more; `noreply` silences its errors.
        Script::new("cache_memlimit_rules")
            .send(
                b"cache_memlimit\r\ncache_memlimit x\r\ncache_memlimit 0\r\ncache_memlimit 7\r\n\
                  cache_memlimit 8\r\ncache_memlimit 1 noreply\r\ncache_memlimit 64 noreply\r\n\
                  cache_memlimit -1\r\ncache_memlimit 1 2\r\ncache_memlimit 1 2 3\r\n\
                  cache_memlimit 1000000001\r\ncache_memlimit 4294967295\r\n\
                  cache_memlimit 4294967296\r\ncache_memlimit 1x\r\ncache_memlimit +064\r\n\
                  cache_memlimit 64 x\r\nversion\r\n",
            )
            .serial(),
        Script::new("stats_detail_counts_by_prefix")
            .send(
                b"stats reset\r\nstats detail dump\r\nstats detail on extra\r\n\
                  set $p:a 0 0 1\r\n1\r\nget $p:a $p:b $nodelim\r\ndelete $p:z\r\nincr $p:a 1\r\n\
                  touch $p:a 0\r\nstats detail dump\r\nstats detail off\r\nget $p:a\r\n\
                  stats detail dump\r\nstats reset\r\nstats detail dump\r\n",
            )
            .serial(),
    ]
}

/// The meta commands: every flag mckv implements, quiet mode with
/// pipelining, opaques, base64 keys, malformed lines, and the classic
/// commands reading what meta commands wrote (and the reverse). A compare
/// meant to fail names a unique neither server hands out in a test
/// (9999999999): a small one is the unique of whichever item the parallel
/// scripts happened to store first or fifth.
fn meta_scripts() -> Vec<Script> {
    let long_opaque = format!("O{}", "o".repeat(32));
    vec![
        one("mn_answers_and_ignores_arguments", "mn\r\nmn extra words\r\nmx $k\r\n"),
        one(
            "mg_hit_returns_flags_in_order",
            "set $a 5 0 3\r\nabc\r\nmg $a\r\nmg $a v\r\nmg $a v f t c s k Oabc\r\n\
             mg $a s k f O1 t\r\nmg $a q\r\nmg $a u P L\r\n",
        ),
        one(
            "mg_miss_returns_only_opaque_and_key",
            "mg $x\r\nmg $x k Oq v c s f t\r\nmg $x T30 k\r\n",
        ),
        one(
            "quiet_mode_holds_back_nominal_replies_until_mn",
            "mg $x q\r\nmg $y q k O1\r\nms $a 1 q\r\n1\r\nmg $a q v\r\nmd $x q\r\n\
             md $a q\r\nma $a q\r\nma $x q\r\nmn\r\n",
        ),
        one(
            "mg_touch_changes_the_ttl_from_its_flag_on",
            "set $t 0 0 1\r\nx\r\nmg $t t T1000 t c\r\nmg $t T0 t\r\n\
             mg $t T-1\r\nmg $t v\r\n",
        ),
        one(
            "mg_errors",
            cat(&[
                b"mg\r\nmg $k x\r\nmg $k v v\r\nmg $k Tx\r\nmg $k Fx\r\nmg $k T\r\n",
                b"mg $k ",
                long_opaque.as_bytes(),
                b"\r\nmg $k O1 ",
                long_opaque.as_bytes(),
                b" k\r\nmg ",
                &key(251),
                b" v\r\nmg $k 1 2 3 4 5 6 7 8 9 a b c d e f g h i\r\n",
                b"mg $k 1 2 3 4 5 6 7 8 9 a b c d e f g\r\nmg $k \xff\r\n",
            ]),
        ),
        one(
            "base64_keys",
            "ms bWV0YTE= 2 b k\r\nhi\r\nme bWV0YTE= b\r\nmg bWV0YTE= b k v\r\n\
             md bWV0YTE= b k q\r\nmg bWV0YTE= b k\r\nmg a2V5= b\r\nmg !!!! b\r\n\
             md !!!! b\r\nms !!!! 2 b\r\nhi\r\nmg bWV0YTI= b b\r\nma bWV0YTM= b N0 k v\r\n",
        ),
        one(
            "ms_sets_with_flags_ttl_and_returns",
            "ms $k 2\r\nhi\r\nms $k 2 c k O123 T0 F7\r\nhi\r\nmg $k v f c t\r\n\
             ms $k 3 T1000 F4294967295\r\nabc\r\nmg $k f s\r\nmg $k T1000 t\r\nms $k 0\r\n\r\n\
             mg $k v s\r\n",
        ),
        one(
            "ms_modes",
            "ms $k 2 ME c k\r\nhi\r\nms $k 2 ME c\r\nhi\r\nms $k 2 MA\r\n!!\r\n\
             ms $k 2 MP\r\n<<\r\nms $k 2 MR F9\r\nyo\r\nms $n 2 MR c\r\nhi\r\n\
             ms $n 2 MA c\r\nhi\r\nms $n 2 MP\r\nhi\r\nms $k 2 MS\r\nhi\r\nmg $k v f\r\n\
             ms $k 2 I\r\nhi\r\nms $k 2 ME C1 I\r\nhi\r\n",
        ),
        one(
            "ms_cas_compare",
            "ms $k 2\r\nhi\r\nms $k 2 C9999999999 c\r\nhi\r\nms $n 2 C9999999999 c\r\nhi\r\n\
             ms $k 2 MA C9999999999\r\nhi\r\nms $k 2 MA C0\r\nhi\r\nms $k 2 ME C9999999999\r\nhi\r\n\
             ms $k 2 MR C9999999999 q\r\nhi\r\nmg $k v\r\n",
        ),
        one(
            "ms_errors_and_what_they_swallow",
            cat(&[
                b"ms\r\nms $k\r\nms $k abc\r\nhi\r\nms $k -1\r\nhi\r\nms $k 2 MX\r\nhi\r\n",
                b"ms $k 2 MEE\r\nhi\r\nms $k 2 q Z\r\nhi\r\nms $k 2 ",
                long_opaque.as_bytes(),
                b"\r\nhi\r\nms $k 3\r\nabcde\r\nms $k 2 q\r\nabcd\r\nms $k 2 Fx Ty\r\nhi\r\n",
                b"ms $k 2 Ty Fx\r\nhi\r\nms $k 2 F1 F2\r\nhi\r\nms $k 2 MS MS\r\nhi\r\n",
                b"ms ",
                &key(251),
                b" 2\r\nhi\r\nmg $k\r\n",
            ]),
        ),
        one(
            "ms_too_large_drops_the_old_value",
            cat(&[
                b"set $k 0 0 1\r\n1\r\nms $k 1048600 MA\r\n",
                &repeat(b'v', 1_048_600),
                b"\r\nmg $k v\r\n",
            ]),
        ),
        one(
            "md_deletes_with_cas_compare_and_quiet",
            "md $nk q O1 k\r\nmd $nk C1 x\r\nset $d 0 0 1\r\nx\r\nmd $d C9999999999 O9 k q\r\n\
             md $d C0\r\nmd $d T5\r\nmg $d\r\nmd $d\r\nset $e 0 0 1\r\nx\r\nmd $e q\r\n\
             md $e q\r\nmd $e x\r\nmd\r\nmn\r\n",
        ),
        one(
            "ma_counts_with_modes_deltas_and_returns",
            "set $n 3 0 2\r\n10\r\nma $n\r\nma $n v\r\nma $n MI D5 v t c k Oo\r\n\
             ma $n M- D100 v\r\nma $n M+\r\nma $n MD v\r\nma $n Md\r\nma $n D18446744073709551615 v\r\n\
             ma $n q v\r\nmn\r\nget $n\r\n",
        ),
        one(
            "ma_vivifies_with_initial_value_and_ttl",
            "ma $v N0 J5 v\r\nma $v v t c\r\nma $v MD D10 v\r\nma $w N100 J7 t v T5\r\n\
             ma $w T0 t N9\r\nma $x N0 q\r\nma $y N0\r\nmg $y v f t\r\nmn\r\n",
        ),
        one(
            "ma_misses_errors_and_cas_compare",
            "ma $n\r\nma $n k Oz v\r\nset $s 0 0 2\r\nab\r\nma $s\r\nma $s q\r\n\
             set $c 0 0 2\r\n10\r\nma $c C9999999999 q\r\nma $c C0 v\r\nma $c MX\r\nma $c Mx\r\n\
             ma $c Dx\r\nma $c Jx\r\nma $c z\r\nma $c v v\r\nma\r\n",
        ),
        one(
            "me_of_a_missing_key_and_bad_lines",
            // Not of a stored item: memcached's `la` counts seconds since
            // the last access by its own clock, which may tick between two
            // commands, and mckv keeps no access time (README, Commands).
            "me\r\nme $k\r\nme $k x y\r\n",
        ),
        one(
            "classic_and_meta_commands_share_items",
            "set $k 9 0 2\r\nhi\r\nmg $k v f c\r\nms $k 3 F5\r\nabc\r\ngets $k\r\n\
             ms $n 2\r\n10\r\nincr $n 5\r\nma $n v\r\ndelete $k\r\nmg $k\r\nappend $n 0 0 1\r\n0\r\n\
             mg $n v\r\n",
        ),
        Script::new("split_meta_set")
            .send("ms $k 5 T0 c\r\nab")
            .pause(PAUSE_MS)
            .send("cde\r")
            .pause(PAUSE_MS)
            .send("\nmg $k v\r\n"),
        Script::new("a_bytewise_meta_get").send("set $k 0 0 1\r\nx\r\n").bytewise("mg $k v k\r\n"),
    ]
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

type Group = (char, &'static str, fn() -> Vec<Script>);

/// Every script group: its key prefix, title and scripts.
const GROUPS: [Group; 9] = [
    ('a', "storage commands", storage_scripts),
    ('b', "errors and swallowing", error_scripts),
    ('c', "split and pipelined requests", split_scripts),
    ('d', "flush_all", flush_scripts),
    ('e', "reply flush points", flush_point_scripts),
    ('f', "stats, cache_memlimit and slabs", stats_scripts),
    ('g', "meta commands", meta_scripts),
    ('h', "binary protocol", binary::scripts),
    ('i', "binary stat groups", binary::stats_scripts),
];

/// Every script group against node 1 of a 3-node cluster in `mode`: the
/// cluster must answer exactly as a single memcached does, but for
/// `cache_memlimit`, which a strong cluster's node refuses: its replicas
/// share the cluster's memory limit (tests/memcached_tools.rs checks that
/// answer).
fn every_group_on_a_cluster(mode: &str) {
    for (group, title, scripts) in GROUPS {
        let cluster = common::start_cluster(3, mode, "");
        let title = format!("{title} ({mode} cluster)");
        let scripts = scripts().into_iter();
        let scripts = scripts.filter(|s| s.name != "cache_memlimit_rules");
        run_group_on(group, &title, scripts.collect(), Server::Cluster(cluster));
    }
}

/// Every script group against a node whose data lives in a memcached of
/// its own: the header mckv keeps in front of each value must never show.
/// Keys that are not UTF-8 are a documented limit of that backend
/// (tests/memcache_backend.rs checks their error), so the scripts made of
/// them are left out; so is `cache_memlimit`, which the node does not
/// pass to a memcached whose memory is its own (tests/memcached_tools.rs
/// checks its answer there).
#[test]
fn a_node_on_memcached_answers_like_memcached() {
    for (group, title, scripts) in GROUPS {
        let title = format!("{title} (memcache backend)");
        let utf8_keys = scripts().into_iter().filter(|s| {
            !matches!(
                s.name,
                "keys_with_odd_bytes" | "cache_memlimit_rules" | "keys_of_any_bytes"
            )
        });
        run_group_on(group, &title, utf8_keys.collect(), start_on_memcached());
    }
}

#[test]
fn a_linearizable_cluster_answers_like_memcached() {
    every_group_on_a_cluster("linearizable");
}

#[test]
fn a_sequential_cluster_answers_like_memcached() {
    every_group_on_a_cluster("sequential");
}

#[test]
fn storage_commands_match_memcached() {
    run_group('a', "storage commands", storage_scripts());
}

#[test]
fn errors_and_swallowing_match_memcached() {
    run_group('b', "errors and swallowing", error_scripts());
}

#[test]
fn split_and_pipelined_match_memcached() {
    run_group('c', "split and pipelined requests", split_scripts());
}

#[test]
fn meta_commands_match_memcached() {
    run_group('g', "meta commands", meta_scripts());
}

#[test]
fn binary_protocol_matches_memcached() {
    run_group('h', "binary protocol", binary::scripts());
}

#[test]
fn binary_stat_groups_match_memcached() {
    run_group('i', "binary stat groups", binary::stats_scripts());
}

/// A store's error response (a miss) is a flush point for memcached, and
/// on one node, whose store answers at once, for mckv too.
#[test]
fn binary_flush_points_of_one_node_match_memcached() {
    run_group('j', "binary flush points", binary::one_node_scripts());
}

/// Eventual mode applies a binary write as it applies any other: node 1
/// of a 3-node eventual cluster answers the binary scripts as memcached.
#[test]
fn an_eventual_cluster_answers_binary_requests_like_memcached() {
    let cluster = common::start_cluster(3, "eventual", "");
    let title = "binary protocol (eventual cluster)";
    run_group_on('h', title, binary::scripts(), Server::Cluster(cluster));
}

/// mckv's `-o no_lru_crawler`: no background drop of the expired items
/// the counter scripts look up.
const NO_SWEEP: &str = "expiry_sweep = off";

/// Binary commands count as memcached counts them, on one node and on the
/// node of a cluster that took them, but in two counters: a binary request
/// is the meta command that does its work, and counts as that one does, so
/// a `delete` refused for its cas is a `delete_misses` (as `md`'s is) and
/// a value too large a `store_too_large` (as a text one is), where
/// memcached 1.6.18's binary handlers count neither.
#[test]
fn binary_command_counters_match_memcached() {
    let memcached = common::start_memcached_with(&["-o", "no_lru_maintainer,no_lru_crawler"]);
    let mut want = binary::counters_after(memcached.port, COUNTERS_COMPARED);
    for (name, value) in &mut want {
        if matches!(name.as_str(), "delete_misses" | "store_too_large") {
            *value = (value.parse::<u64>().unwrap() + 1).to_string();
        }
    }
    let node = common::start_mckv_with(NO_SWEEP, "", &[]);
    assert_eq!(
        binary::counters_after(node.port(), COUNTERS_COMPARED),
        want,
        "one node"
    );
    let cluster = common::start_cluster(3, "linearizable", NO_SWEEP);
    let got = binary::counters_after(cluster.port(1), COUNTERS_COMPARED);
    assert_eq!(got, want, "node 1 of a cluster");
}

/// Binary requests' cas uniques relate as memcached's do (a cas on set,
/// add, replace, append, incr and delete; what touch, gat and a create
/// give), and are the ones text commands show, on one node and on a
/// linearizable cluster.
#[test]
fn binary_cas_uniques_behave_like_memcached() {
    let memcached = common::start_memcached();
    let want = binary::cas_dialogue(memcached.port);
    let node = common::start_mckv("", &[]);
    assert_eq!(binary::cas_dialogue(node.port()), want, "one node");
    let cluster = common::start_cluster(3, "linearizable", "");
    assert_eq!(
        binary::cas_dialogue(cluster.port(1)),
        want,
        "node 1 of a cluster"
    );
}

#[test]
fn stats_groups_cache_memlimit_and_slabs_match_memcached() {
    run_group('f', "stats, cache_memlimit and slabs", stats_scripts());
}

/// The commands whose counts [`counters_after`] compares, and the counts
/// memcached's `stats` keeps of them.
const COUNTED: &[&[u8]] = &[
    b"set a 0 0 1\r\n1\r\n",
    b"get a b c\r\n",
    b"gets a\r\n",
    b"gat 0 a b\r\n",
    b"gats 0 a\r\n",
    b"touch a 0\r\n",
    b"touch zz 0\r\n",
    b"incr a 5\r\n",
    b"incr zz 1\r\n",
    b"decr a 1\r\n",
    b"decr zz 1\r\n",
    b"set s 0 0 1\r\nx\r\n",
    b"incr s 1\r\n",
    b"decr s 1\r\n",
    b"cas a 0 0 1 999\r\nx\r\n",
    b"cas zz 0 0 1 1\r\nx\r\n",
    b"add a 0 0 1\r\nx\r\n",
    b"replace zz 0 0 1\r\nx\r\n",
    b"append a 0 0 1\r\nx\r\n",
    b"prepend zz 0 0 1\r\nx\r\n",
    b"delete a\r\n",
    b"delete a\r\n",
    b"set e 0 -1 1\r\nx\r\n",
    b"get e\r\n",
    // A write finds the expired item too, as memcached's lookups do.
    b"set e2 0 -1 1\r\nx\r\n",
    b"set e2 0 0 1\r\nx\r\n",
    b"verbosity 1\r\n",
    b"flush_all\r\n",
    b"flush_all 0 noreply\r\n",
];

/// The counters that must read the same on both servers after [`COUNTED`]:
/// all that count commands and their outcomes. Times, connection totals
/// (memcached counts its listener), bytes written (cas uniques differ in
/// length) and what memcached's background threads change are left out.
const COUNTERS_COMPARED: &[&str] = &[
    "curr_connections",
    "cmd_get",
    "cmd_set",
    "cmd_flush",
    "cmd_touch",
    "cmd_meta",
    "get_hits",
    "get_misses",
    "get_expired",
    "get_flushed",
    "delete_misses",
    "delete_hits",
    "incr_misses",
    "incr_hits",
    "decr_misses",
    "decr_hits",
    "cas_misses",
    "cas_hits",
    "cas_badval",
    "touch_hits",
    "touch_misses",
    "store_too_large",
    "store_no_memory",
    "auth_cmds",
    "auth_errors",
    "bytes_read",
    "limit_maxbytes",
    "threads",
    "total_items",
    "evictions",
];

/// Sends [`COUNTED`] (and a value too large to store) on one connection to
/// `port`, after `stats reset` (a cluster's start-up asked its nodes for
/// `show`), then reads `stats`: the [`COUNTERS_COMPARED`] by name.
fn counters_after(port: u16) -> Vec<(String, String)> {
    let mut c = common::connect(port);
    assert_eq!(common::request(&mut c, b"stats reset\r\n"), "RESET\r\n");
    let too_large = cat(&[
        b"set big 0 0 2000000\r\n",
        &repeat(b'x', 2_000_000),
        b"\r\n",
    ]);
    let commands = COUNTED.iter().copied().chain([too_large.as_slice()]);
    for command in commands {
        if command.ends_with(b"noreply\r\n") {
            c.write_all(command).unwrap();
        } else {
            common::request(&mut c, command);
        }
    }
    let stats = common::request(&mut c, b"stats\r\n");
    let values: std::collections::HashMap<&str, &str> = stats
        .lines()
        .filter_map(|l| l.strip_prefix("STAT ")?.split_once(' '))
        .collect();
    COUNTERS_COMPARED
        .iter()
        .map(|name| {
            (
                name.to_string(),
                values.get(name).unwrap_or(&"-").to_string(),
            )
        })
        .collect()
}

/// After the same commands, a node counts what memcached counts: the
/// same numbers in `cmd_*`, every hit and miss counter, `total_items`.
/// On a cluster, node 1 took every request and counts all of them.
/// memcached runs here without its LRU maintainer and crawler threads,
/// which in the background may drop an expired item before a command finds
/// it (`get_expired`), or hold an item a moment so that `incr` copies it
/// instead of changing it in place (`total_items`); mckv without its
/// expiry sweep, which may do the first.
#[test]
fn command_counters_match_memcached() {
    let memcached = common::start_memcached_with(&["-o", "no_lru_maintainer,no_lru_crawler"]);
    let want = counters_after(memcached.port);
    let node = common::start_mckv_with(NO_SWEEP, "", &[]);
    assert_eq!(counters_after(node.port()), want, "one node");
    let cluster = common::start_cluster(3, "linearizable", NO_SWEEP);
    assert_eq!(counters_after(cluster.port(1)), want, "node 1 of a cluster");
}

#[test]
fn flush_all_matches_memcached() {
    run_group('d', "flush_all", flush_scripts());
}

#[test]
fn reply_flush_points_match_memcached() {
    run_group('e', "reply flush points", flush_point_scripts());
}

/// The one documented difference in reply timing: memcached holds replies
/// while a value is still arriving (or an oversized one is being swallowed)
/// and sends `object too large` only after the whole value was swallowed;
/// mckv sends each reply as soon as it is ready. Once the value is complete
/// both have sent the same bytes.
#[test]
fn replies_are_not_held_while_a_value_is_still_arriving() {
    let node = start_candidate();
    let cases: [(&str, Vec<u8>, &[u8]); 2] = [
        (
            "value_incomplete",
            b"version\r\nset $a 0 0 10\r\nabc".to_vec(),
            b"VERSION x\r\n",
        ),
        (
            "swallowing",
            cat(&[b"version\r\nset $a 0 0 2000000\r\n", &repeat(b'a', 1000)]),
            b"VERSION x\r\nSERVER_ERROR object too large for cache\r\n",
        ),
    ];
    for (i, (name, bytes, want)) in cases.into_iter().enumerate() {
        let script = one(name, bytes);
        let outcome = run_script(node.port(), &script, &prefix_for('f', i));
        assert_eq!(
            show(&normalize(&outcome.bytes)),
            show(want),
            "{name}: mckv should answer at once"
        );
        assert!(outcome.ending == Ending::Open, "{name}: connection closed");
    }
}

// ---------------------------------------------------------------------------
// cas uniques: compared by relation, not by number
// ---------------------------------------------------------------------------

/// One connection replaying a request/reply dialogue, remembering uniques.
struct Dialogue {
    stream: TcpStream,
    transcript: Vec<String>,
}

impl Dialogue {
    fn new(port: u16) -> Dialogue {
        Dialogue {
            stream: common::connect(port),
            transcript: Vec::new(),
        }
    }

    /// Sends `request`, reads until the reply ends with `suffix`, records it.
    fn ask(&mut self, request: &str, suffix: &str) -> Vec<u8> {
        self.ask_shown(request, request, suffix)
    }

    /// Like `ask`, but records `shown` (the request with uniques named
    /// instead of numbered, as numbers differ between servers).
    fn ask_shown(&mut self, request: &str, shown: &str, suffix: &str) -> Vec<u8> {
        let reply = common::roundtrip(&mut self.stream, request.as_bytes(), suffix.as_bytes());
        self.transcript.push(format!(
            "{} -> {}",
            escape(shown.as_bytes()),
            escape(&normalize(&reply))
        ));
        reply
    }

    /// `cas key flags 0 len <unique> [extra]` with `data`; `name` labels the
    /// unique in the transcript.
    fn cas(&mut self, key: &str, unique: u64, name: &str, extra: &str, data: &str, suffix: &str) {
        let request = format!("cas {key} 0 0 {} {unique}{extra}\r\n{data}\r\n", data.len());
        let shown = format!("cas {key} 0 0 {} <{name}>{extra}\r\n{data}\r\n", data.len());
        self.ask_shown(&request, &shown, suffix);
    }

    /// `gets key`, returning the unique (0 if the reply has none).
    fn unique(&mut self, key: &str) -> u64 {
        let reply = self.ask(&format!("gets {key}\r\n"), "END\r\n");
        let line_end = find_crlf(&reply, 0).unwrap_or(reply.len());
        let fields: Vec<&[u8]> = reply[..line_end].split(|&b| b == b' ').collect();
        if fields.len() == 5 && fields[0] == b"VALUE" {
            std::str::from_utf8(fields[4])
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        } else {
            0
        }
    }

    fn note(&mut self, what: &str, holds: bool) {
        self.transcript.push(format!("{what}: {holds}"));
    }
}

fn cas_dialogue(port: u16) -> Vec<String> {
    let mut d = Dialogue::new(port);
    d.ask("set ca 3 0 1\r\nx\r\n", "\r\n");
    let u1 = d.unique("ca");
    d.note("unique is nonzero", u1 != 0);
    let u1b = d.unique("ca");
    d.note("gets twice gives the same unique", u1 == u1b);
    d.cas("ca", u1, "u1", "", "y", "\r\n");
    d.cas("ca", u1, "u1", "", "z", "\r\n");
    d.ask("get ca\r\n", "END\r\n");
    let u2 = d.unique("ca");
    d.note("cas changed the unique", u2 != u1);

    d.ask("touch ca 1000\r\n", "\r\n");
    let u3 = d.unique("ca");
    d.note("touch keeps the unique", u3 == u2);
    d.ask("gat 0 ca\r\n", "END\r\n");
    let reply = d.ask("gats 0 ca\r\n", "END\r\n");
    d.note(
        "gats shows the same unique as gets",
        String::from_utf8_lossy(&reply).contains(&format!(" {u3}\r\n")),
    );
    let u4 = d.unique("ca");
    d.note("gat keeps the unique", u4 == u3);

    d.cas("ca", u4, "u4", " noreply", "nr", "");
    d.ask("get ca\r\n", "END\r\n");
    let u5 = d.unique("ca");
    d.note("cas noreply changed the unique", u5 != u4);

    d.ask("set cn 0 0 2\r\n10\r\n", "\r\n");
    let n1 = d.unique("cn");
    d.note("different keys have different uniques", n1 != u5);
    d.ask("incr cn 1\r\n", "\r\n");
    let n2 = d.unique("cn");
    d.note("incr changes the unique", n2 != n1);
    d.cas("cn", n1, "n1", "", "7", "\r\n");
    d.ask("decr cn 1\r\n", "\r\n");
    let n3 = d.unique("cn");
    d.note("decr (in place) changes the unique", n3 != n2);
    d.ask("append cn 0 0 1\r\n0\r\n", "\r\n");
    let n4 = d.unique("cn");
    d.note("append changes the unique", n4 != n3);
    d.ask("add cn 0 0 1\r\nq\r\n", "\r\n");
    let n5 = d.unique("cn");
    d.note("failed add keeps the unique", n5 == n4);
    d.cas("cn", n5, "n5", "", "q", "\r\n");
    d.cas("cn", n5, "n5", "", "r", "\r\n");

    d.ask("set cd 0 0 1\r\nx\r\n", "\r\n");
    let c1 = d.unique("cd");
    d.ask("delete cd\r\n", "\r\n");
    d.cas("cd", c1, "c1", "", "y", "\r\n");
    d.ask("set cd 0 0 1\r\nx\r\n", "\r\n");
    let c2 = d.unique("cd");
    d.note("re-set after delete gets a new unique", c2 != c1);
    d.cas("cd", c1, "c1", "", "y", "\r\n");
    d.cas("cd", c2, "c2", " extra", "y", "\r\n");
    d.ask("get cd\r\n", "END\r\n");
    let reply = d.ask("gets ca cn cd\r\n", "END\r\n");
    let text = String::from_utf8_lossy(&reply).into_owned();
    let c3 = d.unique("cd");
    d.note(
        "multi-key gets shows each key's unique",
        text.contains(&format!(" {c3}\r\n")),
    );
    meta_cas_dialogue(&mut d);
    d.transcript
}

/// The `c<n>` flag of a meta reply's first line (0 if it has none).
fn meta_unique(reply: &[u8]) -> u64 {
    let line_end = find_crlf(reply, 0).unwrap_or(reply.len());
    reply[..line_end]
        .split(|&b| b == b' ')
        .skip(1)
        .find_map(|f| f.strip_prefix(b"c"))
        .and_then(|n| std::str::from_utf8(n).ok()?.parse().ok())
        .unwrap_or(0)
}

/// Meta commands and classic ones agree on uniques: `ms ... c` returns
/// what `gets` shows, `mg c` what a `set` gave, and the `C` compares of
/// `ms md ma` pass with the current unique and fail with an old one.
fn meta_cas_dialogue(d: &mut Dialogue) {
    let m1 = meta_unique(&d.ask("ms ma 2 c\r\nhi\r\n", "\r\n"));
    let shown = d.unique("ma");
    d.note("ms returns the unique gets shows", m1 != 0 && m1 == shown);
    d.ask("set mb 0 0 1\r\nx\r\n", "\r\n");
    let b1 = d.unique("mb");
    let b1m = meta_unique(&d.ask("mg mb c\r\n", "\r\n"));
    d.note("mg c shows the unique set gave", b1 == b1m);
    let ask = |d: &mut Dialogue, request: String, shown: &str| {
        d.ask_shown(&request, shown, "\r\n");
    };
    ask(d, format!("ms ma 2 C{m1} c\r\nyo\r\n"), "ms ma 2 C<m1> c");
    let m2 = d.unique("ma");
    d.note("ms with C changed the unique", m2 != m1);
    ask(d, format!("ms ma 2 C{m1}\r\nno\r\n"), "ms ma 2 C<m1>");
    ask(d, format!("ms ma 1 MA C{m1}\r\n!\r\n"), "ms ma 1 MA C<m1>");
    ask(d, format!("ms ma 1 MA C{m2}\r\n!\r\n"), "ms ma 1 MA C<m2>");
    d.ask("mg ma v\r\n", "\r\n");
    ask(d, format!("md mb C{} q\r\n", b1 + 1), "md mb C<b1+1> q");
    ask(d, format!("md mb C{b1}\r\n"), "md mb C<b1>");
    d.ask("set mc 0 0 1\r\n5\r\n", "\r\n");
    let c1 = d.unique("mc");
    ask(d, format!("ma mc C{} v\r\n", c1 + 1), "ma mc C<c1+1> v");
    let reply = d.ask_shown(&format!("ma mc C{c1} v c\r\n"), "ma mc C<c1> v c", "\r\n");
    let c2 = meta_unique(&reply);
    let shown = d.unique("mc");
    d.note("ma returns the new unique", c2 != c1 && c2 == shown);
    d.ask("mg mc T100 c\r\n", "\r\n");
    let shown = d.unique("mc");
    d.note("mg T keeps the unique", shown == c2);
}

#[test]
fn cas_uniques_behave_like_memcached() {
    cas_dialogue_matches(start_candidate());
}

#[test]
fn cas_uniques_on_a_memcache_backend_behave_like_memcached() {
    cas_dialogue_matches(start_on_memcached());
}

fn cas_dialogue_matches(candidate: Server) {
    let reference = common::start_memcached();
    let expected = cas_dialogue(reference.port);
    let got = cas_dialogue(candidate.port());
    if std::env::var_os("DIFF_DUMP").is_some() {
        eprintln!("[cas dialogue] memcached:\n  {}", expected.join("\n  "));
    }
    let diffs: Vec<String> = expected
        .iter()
        .zip(got.iter().chain(std::iter::repeat(&String::new())))
        .filter(|(e, g)| e != g)
        .map(|(e, g)| format!("  memcached: {e}\n  {}: {g}", candidate.label()))
        .collect();
    assert!(
        diffs.is_empty() && expected.len() == got.len(),
        "cas dialogue differs from memcached:\n{}\n{}",
        diffs.join("\n"),
        candidate.log_tail()
    );
}
