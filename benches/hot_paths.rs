//! Micro-benchmarks of the pieces every request goes through, with criterion.
//!
//! ```sh
//! cargo bench --bench hot_paths            # ~1 minute
//! cargo bench --bench hot_paths -- parse   # only the benches whose name contains "parse"
//! ```
//!
//! - `parse/*`: `mckv::protocol::parse` over a 16 KB buffer of mixed requests
//!   (get, multi-get, set with a 100-byte value, delete, incr), request after
//!   request, as the reactor does with what one read brought;
//! - `reply/*`: composing a `VALUE` reply for a 100-byte value, and an
//!   `incr`/`decr` number, into a reused buffer;
//! - `store/*`: `mckv::store::execute` on a `MemoryStore` holding 10,000 keys,
//!   get/set mixes as the load generator (`benches/load.rs`) sends them, and
//!   a 100-key `get` parsed from its bytes and executed (`parse_execute_get_100_keys`).
//!
//! Measurement is kept short (1 s warm-up, 2 s per bench) so the whole file
//! runs in about a minute; criterion's own flags (`--measurement-time`, ...)
//! override that.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use mckv::cluster::membership::Load;
use mckv::cluster::total_order::TotalOrder;
use mckv::cluster::{wire, Engine, Frame, PeerEvent, PeerMessage, ReplyTo, View};
use mckv::config::Consistency;
use mckv::protocol::{self, reply, Action, Command, Get, Limits, Request, StorageMode};
use mckv::store::memory::MemoryStore;
use mckv::store::{self, Store};

/// As in `benches/load.rs`: 10,000 keys of 32 bytes, 100-byte values.
const KEYS: usize = 10_000;
const VALUE_LEN: usize = 100;
const PARSE_BUFFER: usize = 16 * 1024;

fn key(i: usize) -> Vec<u8> {
    let k = format!("key:{i:028}").into_bytes();
    debug_assert_eq!(k.len(), 32);
    k
}

fn value() -> Vec<u8> {
    (0..VALUE_LEN).map(|i| b'a' + (i % 26) as u8).collect()
}

/// A deterministic xorshift, so every run measures the same requests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// About 16 KB of whole requests: 60% single gets, 10% 10-key multi-gets,
/// 20% sets (100-byte values), 5% deletes, 5% incrs.
fn mixed_requests() -> (Vec<u8>, usize) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let value = value();
    let mut buf = Vec::with_capacity(PARSE_BUFFER + 1024);
    let mut count = 0;
    while buf.len() < PARSE_BUFFER {
        let k = key(rng.below(KEYS));
        match rng.below(100) {
            0..=59 => {
                buf.extend_from_slice(b"get ");
                buf.extend_from_slice(&k);
            }
            60..=69 => {
                buf.extend_from_slice(b"get");
                for _ in 0..10 {
                    buf.push(b' ');
                    buf.extend_from_slice(&key(rng.below(KEYS)));
                }
            }
            70..=89 => {
                buf.extend_from_slice(b"set ");
                buf.extend_from_slice(&k);
                buf.extend_from_slice(format!(" 0 0 {VALUE_LEN}\r\n").as_bytes());
                buf.extend_from_slice(&value);
            }
            90..=94 => {
                buf.extend_from_slice(b"delete ");
                buf.extend_from_slice(&k);
            }
            _ => {
                buf.extend_from_slice(b"incr ");
                buf.extend_from_slice(&k);
                buf.extend_from_slice(b" 1");
            }
        }
        buf.extend_from_slice(b"\r\n");
        count += 1;
    }
    (buf, count)
}

/// Parses every request of `buf`; returns how many there were.
fn parse_all(buf: &[u8], limits: &Limits) -> usize {
    let mut at = 0;
    let mut n = 0;
    while at < buf.len() {
        let parsed = protocol::parse(&buf[at..], limits).expect("whole requests");
        at += parsed.consumed;
        n += 1;
        black_box(parsed.action);
    }
    n
}

fn bench_parse(c: &mut Criterion) {
    let limits = Limits::default();
    let (buf, count) = mixed_requests();
    // Every request in the buffer must be a valid one, or we measure error paths.
    let mut at = 0;
    while at < buf.len() {
        let parsed = protocol::parse(&buf[at..], &limits).unwrap();
        assert!(matches!(parsed.action, Action::Execute(_)), "{parsed:?}");
        at += parsed.consumed;
    }
    assert_eq!(parse_all(&buf, &limits), count);

    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Bytes(buf.len() as u64));
    group.bench_function(format!("mixed_16k_buffer ({count} requests)"), |b| {
        b.iter(|| parse_all(black_box(&buf), &limits))
    });
    group.finish();

    // Single requests, for the per-request cost of the two commands the load
    // generator sends.
    let mut group = c.benchmark_group("parse_one");
    let get = [b"get ".as_slice(), &key(42), b"\r\n"].concat();
    let set = [
        b"set ".as_slice(),
        &key(42),
        format!(" 0 0 {VALUE_LEN}\r\n").as_bytes(),
        &value(),
        b"\r\n",
    ]
    .concat();
    group.bench_function("get", |b| {
        b.iter(|| protocol::parse(black_box(&get), &limits))
    });
    group.bench_function("set_100B", |b| {
        b.iter(|| protocol::parse(black_box(&set), &limits))
    });
    group.finish();
}

fn bench_reply(c: &mut Criterion) {
    let mut group = c.benchmark_group("reply");
    let k = key(42);
    let v = value();
    let mut out = Vec::with_capacity(4096);
    group.bench_function("value_100B", |b| {
        b.iter(|| {
            out.clear();
            reply::value(&mut out, black_box(&k), black_box(0), black_box(&v), None);
            black_box(out.len())
        })
    });
    group.bench_function("value_100B_with_cas", |b| {
        b.iter(|| {
            out.clear();
            reply::value(
                &mut out,
                black_box(&k),
                black_box(7),
                black_box(&v),
                Some(black_box(123_456_789)),
            );
            black_box(out.len())
        })
    });
    group.bench_function("number", |b| {
        b.iter(|| {
            out.clear();
            reply::number(&mut out, black_box(18_446_744_073_709_551_000));
            black_box(out.len())
        })
    });
    group.finish();
}

fn get_request(k: Vec<u8>) -> Request {
    Request {
        command: Command::Get(Get {
            keys: [k].into_iter().collect(),
            with_cas: false,
            touch: None,
        }),
        noreply: false,
    }
}

fn set_request(k: Vec<u8>, v: &[u8]) -> Request {
    Request {
        command: Command::Storage(protocol::Storage {
            mode: StorageMode::Set,
            key: k,
            flags: 0,
            exptime: 0,
            value: v.to_vec(),
        }),
        noreply: false,
    }
}

/// A memory store holding the 10,000 keys.
fn populated_store() -> MemoryStore {
    let mut store = MemoryStore::new(64 * 1024 * 1024, Limits::default());
    let now = store::unix_now();
    let v = value();
    let mut out = Vec::new();
    for i in 0..KEYS {
        out.clear();
        store::execute(
            &mut store,
            &set_request(key(i), &v),
            now,
            i as u64 + 1,
            &mut out,
        );
        assert_eq!(out, reply::STORED);
    }
    assert_eq!(store.stats().items, KEYS as u64);
    store
}

/// 4096 requests, `get_percent` of them gets, over random keys.
fn request_mix(get_percent: usize) -> Vec<Request> {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let v = value();
    (0..4096)
        .map(|_| {
            let k = key(rng.below(KEYS));
            if rng.below(100) < get_percent {
                get_request(k)
            } else {
                set_request(k, &v)
            }
        })
        .collect()
}

fn bench_store(c: &mut Criterion) {
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(1));
    for get_percent in [90, 50] {
        let mut store = populated_store();
        let requests = request_mix(get_percent);
        let mut out = Vec::with_capacity(4096);
        let mut i = 0;
        let now = store::unix_now();
        group.bench_function(
            format!("memory_execute_get{get_percent}_set{}", 100 - get_percent),
            |b| {
                b.iter(|| {
                    out.clear();
                    let request = &requests[i % requests.len()];
                    i += 1;
                    // Every write gets a fresh cas unique, as the backend gives it.
                    store::execute(
                        &mut store,
                        black_box(request),
                        now,
                        (KEYS + i) as u64,
                        &mut out,
                    );
                    black_box(out.len())
                })
            },
        );
    }
    // What the backend worker pays per job on top of `execute`: the reply
    // goes out in a fresh Vec (src/backend.rs Worker::handle) and the owned
    // request (key and value Vecs) is dropped after it.
    let mut store = populated_store();
    let requests = request_mix(90);
    let mut i = 0;
    let mut cas = KEYS as u64;
    let now = store::unix_now();
    group.bench_function(
        "memory_execute_get90_set10_fresh_reply_and_request_drop",
        |b| {
            b.iter_batched(
                || {
                    i += 1;
                    requests[i % requests.len()].clone()
                },
                |request| {
                    cas += 1;
                    let mut out = Vec::new();
                    store::execute(&mut store, &request, now, cas, &mut out);
                    out
                },
                BatchSize::SmallInput,
            )
        },
    );
    group.finish();
}

/// The total-order engine's delivery queue: one node with no peers delivers
/// every operation as soon as it is stamped (push, check, pop).
/// A `get` of 100 keys, parsed from its bytes and executed against the
/// memory store holding them, its request then dropped: what a multi-get
/// costs from a read buffer to its reply (README, "Big values, multi-gets").
fn bench_multi_get(c: &mut Criterion) {
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(1));
    let limits = Limits::default();
    let mut store = populated_store();
    let now = store::unix_now();
    let mut line = b"get".to_vec();
    for i in 0..100 {
        line.push(b' ');
        line.extend_from_slice(&key(i * 97 % KEYS));
    }
    line.extend_from_slice(b"\r\n");
    let mut out = Vec::with_capacity(64 * 1024);
    group.bench_function("parse_execute_get_100_keys", |b| {
        b.iter(|| {
            out.clear();
            let parsed = protocol::parse(black_box(&line), &limits).expect("a whole request");
            let Action::Execute(request) = parsed.action else {
                panic!("a get executes");
            };
            store::execute(&mut store, &request, now, 0, &mut out);
            black_box(out.len())
        })
    });
    assert_eq!(out.windows(5).filter(|w| w == b"VALUE").count(), 100);
    group.finish();
}

fn bench_delivery_queue(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(1000));
    let requests: Vec<Request> = (0..1000)
        .map(|i| set_request(key(i), &[b'v'; 100]))
        .collect();
    group.bench_function("deliver_1000_single_node", |b| {
        b.iter_batched(
            || {
                (
                    TotalOrder::new(0, View::new(0, vec![0]), Consistency::Linearizable),
                    requests.clone(),
                )
            },
            |(mut engine, requests)| {
                let mut effects = Vec::with_capacity(1000);
                for (i, request) in requests.into_iter().enumerate() {
                    engine.on_client(reply_to(i), request, 0, &mut effects);
                }
                effects
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn reply_to(i: usize) -> ReplyTo {
    ReplyTo {
        session: 1,
        slot: i as u64,
    }
}

/// One round of a simulated 3-node cluster: 64 writes at node 0, then every
/// frame (proposals, acks) carried, wire-encoded, until nothing moves and
/// every node has applied them.
fn bench_cluster_round(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(64));
    let requests: Vec<Request> = (0..64).map(|i| set_request(key(i), &[b'v'; 100])).collect();
    group.bench_function("three_node_round_64_writes", |b| {
        b.iter_batched(
            || requests.clone(),
            |requests| {
                let view = View::new(0, vec![0, 1, 2]);
                let mut nodes: Vec<TotalOrder> = (0..3)
                    .map(|id| TotalOrder::new(id, view.clone(), Consistency::Linearizable))
                    .collect();
                for (id, node) in nodes.iter_mut().enumerate() {
                    for peer in view.others(id as u32) {
                        node.on_peer(peer, PeerEvent::Up);
                    }
                }
                let mut effects = Vec::new();
                for (i, request) in requests.into_iter().enumerate() {
                    nodes[0].on_client(reply_to(i), request, 0, &mut effects);
                }
                let mut wire_buf = Vec::new();
                loop {
                    let mut moved = false;
                    for from in 0..3u32 {
                        for to in view.others(from) {
                            if let Some(body) = nodes[from as usize].outgoing(to) {
                                moved = true;
                                wire_buf.clear();
                                let load = Load::default();
                                wire::encode(
                                    &PeerMessage::Frame(Frame { load, body }),
                                    &mut wire_buf,
                                );
                                if let Ok(Some((PeerMessage::Frame(frame), _))) =
                                    wire::decode(&wire_buf)
                                {
                                    nodes[to as usize].on_message(from, frame.body, &mut effects);
                                }
                            }
                        }
                    }
                    if !moved {
                        break;
                    }
                }
                assert_eq!(effects.len(), 3 * 64, "every node applies every write");
                effects
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_parse, bench_reply, bench_store, bench_multi_get, bench_delivery_queue, bench_cluster_round
}
criterion_main!(benches);
