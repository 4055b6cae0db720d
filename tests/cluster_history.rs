//! Histories of real clusters: concurrent clients on every node of a 3-node
//! cluster do random get / set / gets+cas on a few keys; the recorded history
//! must be linearizable (linearizable mode) or sequentially consistent
//! (sequential mode), checked by the same checker as the simulation, and the
//! replicas must be identical at the end.

mod common;
#[path = "common/history.rs"]
mod history;

use std::time::Instant;

use common::rng::Rng;
use common::{connect, request, start_cluster, Cluster};
use history::{check_linearizable, check_sequential, Event, History, KvOp, KvRet};

const KEYS: usize = 3;
const CLIENTS: usize = 6;
const OPS_PER_CLIENT: usize = 40;

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

/// One client's closed loop; returns its timed log of events.
fn client(port: u16, id: usize) -> Vec<(Instant, Event)> {
    let mut c = connect(port);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (id as u64 + 1));
    let mut log = Vec::new();
    for seq in 0..OPS_PER_CLIENT {
        let key = format!("h{}", rng.below(KEYS));
        let fresh = format!("c{id}s{seq}");
        match rng.below(10) {
            0..=3 => {
                log.push((Instant::now(), Event::Invoke(KvOp::Get(key.clone()))));
                let reply = request(&mut c, format!("gets {key}\r\n").as_bytes());
                let ret = match parse_gets(&reply) {
                    Ok(found) => KvRet::Value(found.map(|(v, _)| v)),
                    Err(()) => KvRet::Failed,
                };
                log.push((Instant::now(), Event::Ret(ret)));
            }
            4..=6 => {
                log.push((
                    Instant::now(),
                    Event::Invoke(KvOp::Set(key.clone(), fresh.clone())),
                ));
                let set = format!("set {key} 0 0 {}\r\n{fresh}\r\n", fresh.len());
                let ret = store_ret(&request(&mut c, set.as_bytes()));
                log.push((Instant::now(), Event::Ret(ret)));
            }
            _ => {
                log.push((Instant::now(), Event::Invoke(KvOp::Get(key.clone()))));
                let seen = parse_gets(&request(&mut c, format!("gets {key}\r\n").as_bytes()));
                let ret = match &seen {
                    Ok(found) => KvRet::Value(found.as_ref().map(|(v, _)| v.clone())),
                    Err(()) => KvRet::Failed,
                };
                log.push((Instant::now(), Event::Ret(ret)));
                let Ok(Some((expected, unique))) = seen else {
                    continue;
                };
                let op = KvOp::Cas {
                    key: key.clone(),
                    expected,
                    new: fresh.clone(),
                };
                log.push((Instant::now(), Event::Invoke(op)));
                let cas = format!("cas {key} 0 0 {} {unique}\r\n{fresh}\r\n", fresh.len());
                let ret = store_ret(&request(&mut c, cas.as_bytes()));
                log.push((Instant::now(), Event::Ret(ret)));
            }
        }
    }
    log
}

fn run_history(cluster: &Cluster) -> History {
    let logs = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|id| {
                let port = cluster.port(id % 3);
                s.spawn(move || (id, client(port, id)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    History::merge(logs)
}

fn assert_replicas_converge(cluster: &Cluster) {
    let keys: Vec<String> = (0..KEYS).map(|k| format!("h{k}")).collect();
    cluster.converged(&keys);
}

#[test]
fn a_linearizable_cluster_gives_linearizable_histories() {
    for _ in 0..10 {
        let cluster = start_cluster(3, "linearizable", "backend_timeout_ms = 5000");
        let history = run_history(&cluster);
        assert!(history.len() >= CLIENTS * OPS_PER_CLIENT);
        if let Err(why) = check_linearizable(&history) {
            panic!("not linearizable: {why}");
        }
        assert_replicas_converge(&cluster);
    }
}

#[test]
fn a_sequential_cluster_gives_sequentially_consistent_histories() {
    for _ in 0..10 {
        let cluster = start_cluster(3, "sequential", "backend_timeout_ms = 5000");
        let history = run_history(&cluster);
        if let Err(why) = check_sequential(&history) {
            panic!("not sequentially consistent: {why}");
        }
        assert_replicas_converge(&cluster);
    }
}
