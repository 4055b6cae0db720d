//! Histories of real clusters: concurrent clients on every node of a 3-node
//! cluster do random get / set / gets+cas on a few keys; the recorded history
//! must be linearizable (linearizable mode) or sequentially consistent
//! (sequential mode), checked by the same checker as the simulation, and the
//! replicas must be identical at the end.
//!
//! The same under faults, while the clients keep going: a node is killed
//! (kill -9) and restarted with empty memory, paused (SIGSTOP) and resumed,
//! cut off by a peer link that delivers nothing (a black hole), or stopped
//! with SIGTERM and restarted. What a client is told decides what the
//! history records: a reply ending in `; not applied` leaves the operation
//! out (so a refused write that did take effect shows as a value nobody
//! wrote, and the check fails); a write without a definite answer (no
//! reply, a closed connection, `timeout; the operation may have been
//! applied`) may take effect at any later time; a read without an answer
//! had no effect and is left out. Each run prints how long the other two
//! took to serve again and the faulted node to rejoin.

mod common;
#[path = "common/history.rs"]
mod history;
#[path = "common/proxy.rs"]
mod proxy;

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::rng::Rng;
use common::{poll, read_until, start_cluster, start_cluster_node, Cluster};
use history::{check_linearizable, check_sequential, Event, History, KvOp, KvRet};

const KEYS: usize = 3;
const CLIENTS: usize = 6;
const OPS_PER_CLIENT: usize = 40;

/// How long a client waits for a reply: well past `backend_timeout_ms`,
/// so only a paused or vanished node leaves it without one.
const REPLY_WAIT: Duration = Duration::from_secs(3);

/// `(value, cas unique)` of a `gets` reply, or `None` for a miss.
fn parse_gets(reply: &str) -> Result<Option<(String, String)>, ()> {
    if reply == "END\r\n" {
        return Ok(None);
    }
    let mut lines = reply.split("\r\n");
    let header = lines.next().ok_or(())?;
    let unique = header.split(' ').nth(4).ok_or(())?.to_string();
    let value = lines.next().ok_or(())?.to_string();
    if !header.starts_with("VALUE ") {
        return Err(());
    }
    Ok(Some((value, unique)))
}

fn store_ret(reply: &str) -> KvRet {
    match reply {
        "STORED\r\n" => KvRet::Stored,
        "EXISTS\r\n" => KvRet::Exists,
        "NOT_FOUND\r\n" => KvRet::NotFound,
        _ => KvRet::Failed,
    }
}

/// A client's connection to one node, redialed after a failure.
struct Connection {
    port: u16,
    stream: Option<TcpStream>,
}

/// What came of one request.
enum Answer {
    /// No connection: nothing was sent.
    Unsent,
    /// No complete reply within [`REPLY_WAIT`], or the connection closed:
    /// the request may or may not have been taken.
    Unknown,
    Reply(String),
}

impl Connection {
    fn new(port: u16) -> Connection {
        Connection { port, stream: None }
    }

    fn exchange(&mut self, bytes: &[u8]) -> Answer {
        if self.stream.is_none() {
            self.stream = TcpStream::connect(("127.0.0.1", self.port)).ok();
            if let Some(s) = &self.stream {
                s.set_nodelay(true).unwrap();
                s.set_write_timeout(Some(REPLY_WAIT)).unwrap();
            }
        }
        let Some(stream) = &mut self.stream else {
            return Answer::Unsent;
        };
        let complete = |got: &[u8]| {
            got.ends_with(b"END\r\n") || (got.ends_with(b"\r\n") && !got.starts_with(b"VALUE"))
        };
        let reply = match stream.write_all(bytes) {
            Ok(()) => read_until(stream, REPLY_WAIT, complete),
            Err(_) => Vec::new(),
        };
        if !complete(&reply) {
            self.stream = None;
            return Answer::Unknown;
        }
        Answer::Reply(String::from_utf8_lossy(&reply).into_owned())
    }
}

/// One operation as its client saw it, for the timing report.
struct Served {
    node: usize,
    invoked: Instant,
    returned: Instant,
    /// Answered as asked (not refused, no unknown outcome).
    ok: bool,
}

/// One client's record: its timed history events and its operations.
#[derive(Default)]
struct ClientLog {
    events: Vec<(Instant, Event)>,
    served: Vec<Served>,
    refused: usize,
    unknown: usize,
}

impl ClientLog {
    /// Records `op`, sent now, and what came of it (`ret` turns a reply
    /// into the operation's result); returns the reply.
    fn run(
        &mut self,
        node: usize,
        conn: &mut Connection,
        op: KvOp,
        request: &[u8],
        ret: impl Fn(&str) -> KvRet,
    ) -> Option<String> {
        let invoked = Instant::now();
        let read = matches!(op, KvOp::Get(_));
        self.events.push((invoked, Event::Invoke(op)));
        let answer = conn.exchange(request);
        let returned = Instant::now();
        let sent = !matches!(answer, Answer::Unsent);
        let (outcome, reply) = match answer {
            Answer::Unsent => (None, None),
            Answer::Unknown => (Some(KvRet::Failed), None),
            Answer::Reply(r) if r.ends_with("; not applied\r\n") => {
                self.refused += 1;
                (None, Some(r))
            }
            Answer::Reply(r) => (Some(ret(&r)), Some(r)),
        };
        let ok = !matches!(outcome, None | Some(KvRet::Failed));
        match outcome {
            // Known to have had no effect, or a read without an answer.
            None => drop(self.events.pop()),
            Some(KvRet::Failed) if read => drop(self.events.pop()),
            Some(ret) => {
                self.unknown += usize::from(ret == KvRet::Failed);
                self.events.push((returned, Event::Ret(ret)));
            }
        }
        if sent {
            self.served.push(Served {
                node,
                invoked,
                returned,
                ok,
            });
        }
        reply
    }
}

/// What bounds a client's closed loop: an operation count, a flag, a pace.
struct Load<'a> {
    ops: usize,
    stop: &'a AtomicBool,
    pace: Duration,
}

/// One client's closed loop on node `node`.
fn client(port: u16, node: usize, id: usize, load: &Load) -> ClientLog {
    let mut conn = Connection::new(port);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (id as u64 + 1));
    let mut log = ClientLog::default();
    for seq in 0..load.ops {
        if load.stop.load(Ordering::Relaxed) {
            break;
        }
        std::thread::sleep(load.pace);
        let key = format!("h{}", rng.below(KEYS));
        let fresh = format!("c{id}s{seq}");
        let gets = format!("gets {key}\r\n");
        let read = |r: &str| match parse_gets(r) {
            Ok(found) => KvRet::Value(found.map(|(v, _)| v)),
            Err(()) => KvRet::Failed,
        };
        match rng.below(10) {
            0..=3 => {
                log.run(node, &mut conn, KvOp::Get(key), gets.as_bytes(), read);
            }
            4..=6 => {
                let set = format!("set {key} 0 0 {}\r\n{fresh}\r\n", fresh.len());
                let op = KvOp::Set(key, fresh);
                log.run(node, &mut conn, op, set.as_bytes(), store_ret);
            }
            _ => {
                let op = KvOp::Get(key.clone());
                let seen = log.run(node, &mut conn, op, gets.as_bytes(), read);
                let Some(Ok(Some((expected, unique)))) = seen.as_deref().map(parse_gets) else {
                    continue;
                };
                let cas = format!("cas {key} 0 0 {} {unique}\r\n{fresh}\r\n", fresh.len());
                let op = KvOp::Cas {
                    key,
                    expected,
                    new: fresh,
                };
                log.run(node, &mut conn, op, cas.as_bytes(), store_ret);
            }
        }
    }
    log
}

/// Runs [`CLIENTS`] clients spread over the nodes of `ports` while
/// `script` runs on this thread (with the cluster); returns their logs
/// once each made `ops` operations or saw the flag `script` is handed set.
fn run_clients(
    ports: &[u16],
    ops: usize,
    pace: Duration,
    script: impl FnOnce(&AtomicBool),
) -> Vec<ClientLog> {
    let stop = AtomicBool::new(false);
    let load = Load {
        ops,
        stop: &stop,
        pace,
    };
    let load = &load;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|id| {
                let (node, port) = (id % ports.len(), ports[id % ports.len()]);
                s.spawn(move || client(port, node, id, load))
            })
            .collect();
        script(&stop);
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn history_of(logs: &[ClientLog]) -> History {
    let timed = logs
        .iter()
        .enumerate()
        .map(|(id, log)| (id, log.events.clone()))
        .collect();
    History::merge(timed)
}

fn check(mode: &str, history: &History) {
    let checked = match mode {
        "linearizable" => check_linearizable(history),
        _ => check_sequential(history),
    };
    if let Err(why) = checked {
        panic!("{mode} history fails its check: {why}");
    }
}

fn keys() -> Vec<String> {
    (0..KEYS).map(|k| format!("h{k}")).collect()
}

fn ports(cluster: &Cluster) -> Vec<u16> {
    (0..cluster.nodes.len()).map(|n| cluster.port(n)).collect()
}

#[test]
fn a_linearizable_cluster_gives_linearizable_histories() {
    for _ in 0..10 {
        let cluster = start_cluster(3, "linearizable", "backend_timeout_ms = 5000");
        let logs = run_clients(&ports(&cluster), OPS_PER_CLIENT, Duration::ZERO, |_| {});
        let history = history_of(&logs);
        assert!(history.len() >= CLIENTS * OPS_PER_CLIENT);
        check("linearizable", &history);
        cluster.converged(&keys());
    }
}

#[test]
fn a_sequential_cluster_gives_sequentially_consistent_histories() {
    for _ in 0..10 {
        let cluster = start_cluster(3, "sequential", "backend_timeout_ms = 5000");
        let logs = run_clients(&ports(&cluster), OPS_PER_CLIENT, Duration::ZERO, |_| {});
        check("sequential", &history_of(&logs));
        cluster.converged(&keys());
    }
}

// --- Under faults ------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// kill -9, then a restart with empty memory.
    Kill,
    /// SIGSTOP, then SIGCONT.
    Pause,
    /// The links into the node deliver nothing, then deliver again.
    BlackHole,
    /// SIGTERM (the node says it leaves and exits 0), then a restart.
    Terminate,
}

/// Load before the fault, while it lasts, and after the node serves again.
const BEFORE: Duration = Duration::from_millis(800);
const DURING: Duration = Duration::from_millis(2500);
const AFTER: Duration = Duration::from_millis(800);
/// Longer than any operation takes in a healthy cluster on loopback.
const DISTURBED: Duration = Duration::from_millis(100);
/// Think time between a client's operations (keeps the histories small
/// enough to check).
const PACE: Duration = Duration::from_millis(20);

/// Runs the clients on a 3-node `mode` cluster while `fault` strikes one
/// node and heals; checks the history, that the other two served during
/// the fault, and that every node ends identical, the faulted one included.
fn under_fault(mode: &str, fault: Fault) {
    let extra = "backend_timeout_ms = 1000";
    let (mut cluster, proxy) = match fault {
        Fault::BlackHole => {
            let (cluster, proxy) = proxy::cluster_behind_proxy(mode, extra);
            (cluster, Some(proxy))
        }
        _ => (start_cluster(3, mode, extra), None),
    };
    let victim = match fault {
        Fault::Kill => 0, // the lowest id: the usual coordinator
        Fault::Pause | Fault::BlackHole => 1,
        Fault::Terminate => 2,
    };
    let ports = ports(&cluster);
    let (mut struck, mut healed) = (Instant::now(), Instant::now());
    let logs = run_clients(&ports, usize::MAX, PACE, |stop| {
        std::thread::sleep(BEFORE);
        struck = Instant::now();
        match fault {
            Fault::Kill => cluster.nodes[victim].signal("KILL"),
            Fault::Pause => cluster.nodes[victim].signal("STOP"),
            Fault::BlackHole => proxy.as_ref().expect("a proxy").black_hole(true),
            Fault::Terminate => {
                cluster.nodes[victim].signal("TERM");
                let exit = exit_status(&mut cluster, victim);
                assert!(exit.success(), "exit after SIGTERM: {exit}");
            }
        }
        std::thread::sleep(DURING);
        healed = Instant::now();
        match fault {
            Fault::Kill | Fault::Terminate => {
                let (config, dir) = (&cluster.config, &cluster.dir.0);
                cluster.nodes[victim] = start_cluster_node(config, dir, victim, ports[victim]);
            }
            Fault::Pause => cluster.nodes[victim].signal("CONT"),
            Fault::BlackHole => proxy.as_ref().expect("a proxy").black_hole(false),
        }
        wait_until_serving(ports[victim]);
        std::thread::sleep(AFTER);
        stop.store(true, Ordering::Relaxed);
    });
    let history = history_of(&logs);
    check(mode, &history);
    let agreed = cluster.converged(&keys());
    report(
        mode,
        fault,
        victim,
        &logs,
        (struck, healed),
        &history,
        &agreed,
    );
}

/// The exit status of node `id`, which must exit within 10 s.
fn exit_status(cluster: &mut Cluster, id: usize) -> std::process::ExitStatus {
    let child = &mut cluster.nodes[id].child;
    poll(
        Duration::from_secs(10),
        Duration::from_millis(10),
        || match child.try_wait().expect("wait") {
            Some(status) => Ok(status),
            None => Err("the node did not exit after SIGTERM".to_string()),
        },
    )
}

/// Waits (at most 10 s) until the node at `port` answers a write.
fn wait_until_serving(port: u16) {
    let mut conn = Connection::new(port);
    poll(
        Duration::from_secs(10),
        Duration::from_millis(20),
        || match conn.exchange(b"set probe 0 0 1\r\nx\r\n") {
            Answer::Reply(r) if r == "STORED\r\n" => Ok(()),
            Answer::Reply(r) => Err(format!("the node never served again: {r:?}")),
            _ => Err("the node never answered again".into()),
        },
    );
}

/// Prints what the run measured and checks that nodes other than `victim`
/// served while it was out.
fn report(
    mode: &str,
    fault: Fault,
    victim: usize,
    logs: &[ClientLog],
    (struck, healed): (Instant, Instant),
    history: &History,
    agreed: &str,
) {
    let ops: Vec<&Served> = logs.iter().flat_map(|l| &l.served).collect();
    let others = |s: &&&Served| s.node != victim && s.invoked >= struck && s.returned < healed;
    // The end of the others' last operation during the fault that failed
    // or waited (for the view change) far longer than they take in health.
    let disturbed = |s: &&&Served| !s.ok || s.returned - s.invoked > DISTURBED;
    let served_again = ops
        .iter()
        .filter(others)
        .filter(disturbed)
        .map(|s| s.returned)
        .max()
        .unwrap_or(struck);
    let served_during = ops
        .iter()
        .filter(others)
        .filter(|s| s.ok && s.invoked >= served_again)
        .count();
    assert!(
        served_during > 0,
        "{mode}, {fault:?} of node {victim}: the others served nothing during the fault"
    );
    let rejoined = ops
        .iter()
        .filter(|s| s.node == victim && s.ok && s.invoked >= healed)
        .map(|s| s.returned)
        .min();
    eprintln!(
        "{mode}, {fault:?} of node {victim}: {} ops checked ({} refused as not applied, {} \
         unknown); the others served again {:?} after the fault ({served_during} ops until \
         it healed); node {victim} served {:?} after the heal; every node reads {} bytes \
         of {KEYS} keys alike",
        history.len(),
        logs.iter().map(|l| l.refused).sum::<usize>(),
        logs.iter().map(|l| l.unknown).sum::<usize>(),
        served_again - struck,
        rejoined.map(|at| at - healed),
        agreed.len()
    );
}

#[test]
fn linearizable_histories_hold_across_a_kill_and_restart() {
    under_fault("linearizable", Fault::Kill);
}

#[test]
fn sequential_histories_hold_across_a_kill_and_restart() {
    under_fault("sequential", Fault::Kill);
}

#[test]
fn linearizable_histories_hold_across_a_pause() {
    under_fault("linearizable", Fault::Pause);
}

#[test]
fn sequential_histories_hold_across_a_pause() {
    under_fault("sequential", Fault::Pause);
}

#[test]
fn linearizable_histories_hold_across_a_black_holed_link() {
    under_fault("linearizable", Fault::BlackHole);
}

#[test]
fn sequential_histories_hold_across_a_black_holed_link() {
    under_fault("sequential", Fault::BlackHole);
}

#[test]
fn linearizable_histories_hold_across_a_sigterm_and_restart() {
    under_fault("linearizable", Fault::Terminate);
}

#[test]
fn sequential_histories_hold_across_a_sigterm_and_restart() {
    under_fault("sequential", Fault::Terminate);
}
