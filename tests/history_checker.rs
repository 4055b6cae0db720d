//! The consistency checkers of `common/history.rs`, checked themselves, so
//! that a simulation or cluster history they accept means something:
//! negative controls (hand-made histories that must be rejected: a stale
//! read, two writes seen in opposite orders, a lost cas update, a failed
//! write seen then unseen, malformed histories) and the matching positive
//! cases; how `History::merge` orders per-client logs; and agreement with
//! stateright's linearizability and sequential-consistency testers, an
//! independent oracle, on thousands of small random histories (valid by
//! construction, half of them corrupted). The agreement on histories the
//! total-order engine actually produces is checked in `tests/simulation.rs`.
//!
//! `CROSS_CHECK_ROUNDS` and `CROSS_CHECK_MAX_OPS` make the random cross-check
//! longer or its histories larger.

#[path = "common/history.rs"]
mod history;
#[allow(dead_code)] // the simulations use the rest of it
#[path = "harness/rng.rs"]
mod rng;

use history::{check_linearizable, check_sequential, History, KvOp, KvRet};
use rng::Rng;

// --- Hand-made histories -----------------------------------------------------

fn set(key: &str, value: &str) -> KvOp {
    KvOp::Set(key.into(), value.into())
}

fn get(key: &str) -> KvOp {
    KvOp::Get(key.into())
}

fn value(v: Option<&str>) -> KvRet {
    KvRet::Value(v.map(String::from))
}

#[test]
fn checker_negative_control_a_stale_read_after_a_completed_write_is_sequential_but_not_linearizable(
) {
    let mut h = History::new();
    h.invoke(0, set("x", "a"));
    h.ret(0, KvRet::Stored);
    h.invoke(1, get("x")); // invoked after the write completed...
    h.ret(1, value(None)); // ...and did not see it
    assert!(
        check_linearizable(&h).is_err(),
        "a stale read must not be linearizable"
    );
    assert_eq!(
        check_sequential(&h),
        Ok(()),
        "the read may be ordered first"
    );
}

#[test]
fn checker_negative_control_two_writes_seen_in_opposite_orders_are_not_sequentially_consistent() {
    // Independent reads of independent writes (IRIW).
    let mut h = History::new();
    h.invoke(0, set("x", "a"));
    h.invoke(1, set("y", "b"));
    h.ret(0, KvRet::Stored);
    h.ret(1, KvRet::Stored);
    h.invoke(2, get("x"));
    h.ret(2, value(Some("a")));
    h.invoke(2, get("y"));
    h.ret(2, value(None)); // client 2: x before y
    h.invoke(3, get("y"));
    h.ret(3, value(Some("b")));
    h.invoke(3, get("x"));
    h.ret(3, value(None)); // client 3: y before x
    assert!(check_sequential(&h).is_err());
    // Also on one key: two clients see two writes in opposite orders.
    let mut h = History::new();
    h.invoke(0, set("x", "a"));
    h.ret(0, KvRet::Stored);
    h.invoke(1, set("x", "b"));
    h.ret(1, KvRet::Stored);
    for (client, first, second) in [(2, "a", "b"), (3, "b", "a")] {
        h.invoke(client, get("x"));
        h.ret(client, value(Some(first)));
        h.invoke(client, get("x"));
        h.ret(client, value(Some(second)));
    }
    assert!(check_sequential(&h).is_err());
    assert!(check_linearizable(&h).is_err());
}

#[test]
fn checker_accepts_overlapping_operations_in_either_order() {
    let mut h = History::new();
    h.invoke(0, set("x", "a"));
    h.invoke(1, get("x"));
    h.invoke(2, get("x"));
    h.ret(1, value(Some("a"))); // the write took effect before this read...
    h.ret(2, value(None)); // ...but this one may have been linearized earlier
    h.ret(0, KvRet::Stored);
    assert_eq!(check_linearizable(&h), Ok(()));
    assert_eq!(check_sequential(&h), Ok(()));
}

#[test]
fn checker_cas_succeeds_only_on_the_value_seen() {
    let mut h = History::new();
    h.invoke(0, set("x", "a"));
    h.ret(0, KvRet::Stored);
    let cas = |expected: &str, new: &str| KvOp::Cas {
        key: "x".into(),
        expected: expected.into(),
        new: new.into(),
    };
    h.invoke(1, cas("a", "b"));
    h.ret(1, KvRet::Stored);
    h.invoke(2, cas("a", "c"));
    h.ret(2, KvRet::Exists);
    h.invoke(2, get("x"));
    h.ret(2, value(Some("b")));
    assert_eq!(check_linearizable(&h), Ok(()));
    // Both cas of the same seen value succeeding is a lost update.
    let mut lost = History::new();
    lost.invoke(0, set("x", "a"));
    lost.ret(0, KvRet::Stored);
    lost.invoke(1, cas("a", "b"));
    lost.invoke(2, cas("a", "c"));
    lost.ret(1, KvRet::Stored);
    lost.ret(2, KvRet::Stored);
    assert!(check_linearizable(&lost).is_err());
    assert!(check_sequential(&lost).is_err());
}

#[test]
fn checker_a_failed_operation_may_or_may_not_have_taken_effect() {
    for seen in [None, Some("a")] {
        let mut h = History::new();
        h.invoke(0, set("x", "a"));
        h.ret(0, KvRet::Failed);
        h.invoke(0, get("x")); // the same client goes on
        h.ret(0, value(seen));
        h.invoke(1, get("x"));
        h.ret(1, value(seen));
        assert_eq!(check_linearizable(&h), Ok(()), "seen {seen:?}");
        assert_eq!(check_sequential(&h), Ok(()), "seen {seen:?}");
    }
    // But once seen, it stays: a later read cannot go back.
    let mut h = History::new();
    h.invoke(0, set("x", "a"));
    h.ret(0, KvRet::Failed);
    h.invoke(1, get("x"));
    h.ret(1, value(Some("a")));
    h.invoke(1, get("x"));
    h.ret(1, value(None));
    assert!(check_linearizable(&h).is_err());
}

#[test]
fn checker_rejects_malformed_histories() {
    let mut h = History::new();
    h.ret(0, KvRet::Stored);
    assert!(check_linearizable(&h).is_err());
    let mut h = History::new();
    h.invoke(0, get("x"));
    h.invoke(0, get("y"));
    assert!(check_sequential(&h).is_err());
}

// --- The checkers against stateright's testers ------------------------------

/// A random history of `clients` clients doing `ops` operations on `keys`
/// keys, valid by construction, then, half the time, with one or two
/// returns corrupted. `linear`: each operation takes effect at a random
/// moment while it is outstanding (linearizable); otherwise they take effect
/// in a random order that keeps each client's order, and invocations and
/// returns are then spread at random over real time (sequentially
/// consistent, often not linearizable). An operation that fails (one in
/// ten) takes effect or not. `unique`: every write writes a new value
/// (otherwise values come from a pool of three).
fn random_history(
    rng: &mut Rng,
    clients: usize,
    ops: usize,
    keys: usize,
    linear: bool,
    unique: bool,
) -> History {
    use stateright::semantics::SequentialSpec;
    let mut map = history::KvSpec::default();
    let mut written: Vec<Vec<String>> = vec![Vec::new(); keys];
    let mut fresh = 0;
    let mut new_op = |rng: &mut Rng, written: &mut Vec<Vec<String>>| {
        let k = rng.below(keys as u64) as usize;
        let key = format!("k{k}");
        fresh += 1;
        let value = match unique {
            true => format!("v{fresh}"),
            false => format!("v{}", rng.below(3)),
        };
        let op = match rng.below(3) {
            0 => KvOp::Get(key),
            1 => KvOp::Set(key, value.clone()),
            _ => {
                let expected = match written[k].len() {
                    0 => "none".to_string(),
                    n => written[k][rng.below(n as u64) as usize].clone(),
                };
                KvOp::Cas {
                    key,
                    expected,
                    new: value.clone(),
                }
            }
        };
        if !matches!(op, KvOp::Get(_)) {
            written[k].push(value);
        }
        op
    };
    let mut h = History::new();
    if linear {
        // Per client: (op, its result once it took effect, whether it fails).
        let mut out: Vec<Option<(KvOp, Option<KvRet>, bool)>> = vec![None; clients];
        let mut budget = ops;
        while budget > 0 || out.iter().any(Option::is_some) {
            let c = rng.below(clients as u64) as usize;
            match &mut out[c] {
                None if budget > 0 => {
                    budget -= 1;
                    let op = new_op(rng, &mut written);
                    h.invoke(c, op.clone());
                    out[c] = Some((op, None, rng.chance(10)));
                }
                None => {}
                Some((op, effect @ None, fails)) => {
                    if *fails && rng.chance(50) {
                        h.ret(c, KvRet::Failed); // never took effect
                        out[c] = None;
                    } else {
                        *effect = Some(map.invoke(op));
                    }
                }
                Some((_, Some(ret), fails)) => {
                    h.ret(c, if *fails { KvRet::Failed } else { ret.clone() });
                    out[c] = None;
                }
            }
        }
    } else {
        // The order operations take effect in, then each client's results.
        let mut left: Vec<usize> = vec![0; clients];
        for _ in 0..ops {
            left[rng.below(clients as u64) as usize] += 1;
        }
        let mut done: Vec<Vec<(KvOp, KvRet)>> = vec![Vec::new(); clients];
        while let Some(c) = {
            let busy: Vec<usize> = (0..clients).filter(|&c| left[c] > 0).collect();
            (!busy.is_empty()).then(|| busy[rng.below(busy.len() as u64) as usize])
        } {
            left[c] -= 1;
            let op = new_op(rng, &mut written);
            let ret = match rng.chance(10) {
                true if rng.chance(50) => KvRet::Failed,
                true => {
                    map.invoke(&op);
                    KvRet::Failed
                }
                false => map.invoke(&op),
            };
            done[c].push((op, ret));
        }
        // Spread over real time, each client's in order.
        let mut next: Vec<(usize, bool)> = vec![(0, false); clients];
        loop {
            let open: Vec<usize> = (0..clients)
                .filter(|&c| next[c].0 < done[c].len())
                .collect();
            if open.is_empty() {
                break;
            }
            let c = open[rng.below(open.len() as u64) as usize];
            let (i, invoked) = next[c];
            if invoked {
                h.ret(c, done[c][i].1.clone());
                next[c] = (i + 1, false);
            } else {
                h.invoke(c, done[c][i].0.clone());
                next[c] = (i, true);
            }
        }
    }
    for _ in 0..rng.below(3) {
        corrupt(rng, &mut h, &written);
    }
    h
}

/// Replaces one return by another plausible one.
fn corrupt(rng: &mut Rng, h: &mut History, written: &[Vec<String>]) {
    let mut events: Vec<(usize, history::Event)> = h.events().to_vec();
    let rets: Vec<usize> = (0..events.len())
        .filter(|&i| matches!(events[i].1, history::Event::Ret(ref r) if *r != KvRet::Failed))
        .collect();
    if rets.is_empty() {
        return;
    }
    let i = rets[rng.below(rets.len() as u64) as usize];
    let new = match &events[i].1 {
        history::Event::Ret(KvRet::Value(_)) => {
            let all: Vec<&String> = written.iter().flatten().collect();
            match rng.below(all.len() as u64 + 1) as usize {
                0 => KvRet::Value(None),
                n => KvRet::Value(Some(all[n - 1].clone())),
            }
        }
        history::Event::Ret(KvRet::Stored) => KvRet::Exists,
        _ => KvRet::Stored,
    };
    events[i].1 = history::Event::Ret(new);
    *h = History::new();
    for (client, event) in events {
        match event {
            history::Event::Invoke(op) => h.invoke(client, op),
            history::Event::Ret(ret) => h.ret(client, ret),
        }
    }
}

#[test]
fn checkers_agree_with_stateright_testers_on_random_small_histories() {
    let rounds: u64 = std::env::var("CROSS_CHECK_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(2000);
    let max_ops: u64 = std::env::var("CROSS_CHECK_MAX_OPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10);
    let mut rng = Rng::new(42);
    let (mut lin, mut seq_only, mut neither) = (0, 0, 0);
    for round in 0..rounds {
        let clients = 2 + rng.below(4) as usize;
        let ops = 4 + rng.below(max_ops - 3) as usize;
        let keys = 1 + rng.below(3) as usize;
        let (linear, unique) = (rng.chance(50), rng.chance(80));
        let h = random_history(&mut rng, clients, ops, keys, linear, unique);
        let ours = (check_linearizable(&h).is_ok(), check_sequential(&h).is_ok());
        let theirs = (
            history::stateright_linearizable(&h).expect("well formed"),
            history::stateright_sequential(&h).expect("well formed"),
        );
        assert_eq!(
            ours, theirs,
            "round {round}: (linearizable, sequential) differ from stateright's on\n{h}"
        );
        match ours {
            (true, true) => lin += 1,
            (false, true) => seq_only += 1,
            (false, false) => neither += 1,
            (true, false) => panic!("round {round}: linearizable but not sequential:\n{h}"),
        }
    }
    eprintln!("{lin} linearizable, {seq_only} only sequential, {neither} neither");
    let some = rounds as usize / 20;
    assert!(
        lin > some && seq_only > some && neither > some,
        "{lin} {seq_only} {neither}"
    );
}
// --- Histories merged from per-client logs -----------------------------------

#[test]
fn merge_orders_per_client_logs_by_time_invocations_first_at_ties() {
    use history::Event;
    let logs = vec![
        (
            0,
            vec![
                (1, Event::Invoke(set("x", "a"))),
                (3, Event::Ret(KvRet::Stored)),
                (3, Event::Invoke(get("x"))),
                (6, Event::Ret(value(Some("a")))),
            ],
        ),
        (
            1,
            vec![(3, Event::Invoke(get("x"))), (4, Event::Ret(value(None)))],
        ),
    ];
    let h = History::merge(logs);
    let order: Vec<(usize, bool)> = h
        .events()
        .iter()
        .map(|(c, e)| (*c, matches!(e, Event::Invoke(_))))
        .collect();
    // At time 3 client 1's read is invoked before client 0's write returns
    // (overlapping: no real-time order claimed), and client 0's own return
    // still precedes its next invocation.
    assert_eq!(
        order,
        vec![
            (0, true),
            (1, true),
            (0, false),
            (0, true),
            (1, false),
            (0, false)
        ]
    );
    assert_eq!(check_linearizable(&h), Ok(()));
}
