//! The causal-consistency checker of `common/causal.rs`, checked itself, so
//! that a causal-mode history it accepts means something: for each bad
//! pattern of Bouajjani et al. (POPL 2017) a small hand-made history that
//! has it (rejected, with that pattern named) and one that does not
//! (accepted); the classic anomalies (x then y seen as y without x,
//! writes-follow-reads across three sessions, a causal history that is not
//! sequentially consistent); writes of unknown outcome; the convergence
//! check.

#[path = "common/causal.rs"]
mod causal;
#[path = "common/history.rs"]
mod history;

use causal::{
    check_cc, check_ccv, check_converged, CausalError, CausalHistory, Contents, Divergence, Model,
    OpId, Pattern,
};

/// Accepted as both CC and CCv.
fn assert_causal(h: &CausalHistory) {
    if let Err(e) = check_cc(h) {
        panic!("rejected as CC:\n{h}{e}");
    }
    if let Err(e) = check_ccv(h) {
        panic!("rejected as CCv:\n{h}{e}");
    }
}

/// Rejected under `model` with exactly `pattern`; returns the error.
fn assert_caught(h: &CausalHistory, model: Model, pattern: Pattern) -> CausalError {
    let result = causal::check(h, model);
    let Err(e) = result else {
        panic!("accepted as {model:?}, expected {pattern}:\n{h}");
    };
    assert_eq!(e.patterns(), vec![pattern], "as {model:?}:\n{h}{e}");
    e
}

/// Rejected with `pattern` as CC, hence also as CCv.
fn assert_not_cc(h: &CausalHistory, pattern: Pattern) -> CausalError {
    assert_caught(h, Model::Ccv, pattern);
    assert_caught(h, Model::Cc, pattern)
}

fn id(session: usize, index: usize) -> OpId {
    OpId { session, index }
}

// --- ThinAirRead ---------------------------------------------------------------

#[test]
fn a_read_of_a_value_nobody_wrote_is_a_thin_air_read() {
    let mut h = CausalHistory::new();
    h.write(0, "x", "1");
    h.read(1, "x", Some("2"));
    let e = assert_not_cc(&h, Pattern::ThinAirRead);
    assert_eq!(e.violations()[0].ops, vec![id(1, 0)]);
    // The value exists, but under another key.
    let mut h = CausalHistory::new();
    h.write(0, "y", "1");
    h.read(1, "x", Some("1"));
    assert_not_cc(&h, Pattern::ThinAirRead);
}

#[test]
fn a_read_of_a_value_written_elsewhere_is_not_a_thin_air_read() {
    let mut h = CausalHistory::new();
    h.write(0, "x", "1");
    h.read(1, "x", Some("1"));
    h.read(1, "y", None);
    assert_causal(&h);
}

// --- CyclicCO --------------------------------------------------------------------

#[test]
fn two_reads_each_causing_the_write_the_other_read_is_cyclic_causal_order() {
    // Each session reads the value the other writes only after its read:
    // each write is both cause and effect of the other (out of thin air).
    let mut h = CausalHistory::new();
    h.read(0, "x", Some("1"));
    h.write(0, "y", "1");
    h.read(1, "y", Some("1"));
    h.write(1, "x", "1");
    let e = assert_not_cc(&h, Pattern::CyclicCO);
    let mut ops = e.violations()[0].ops.clone();
    ops.sort();
    assert_eq!(ops, vec![id(0, 0), id(0, 1), id(1, 0), id(1, 1)]);
}

#[test]
fn a_session_reading_its_own_later_write_is_cyclic_causal_order() {
    let mut h = CausalHistory::new();
    h.read(0, "x", Some("1"));
    h.write(0, "x", "1");
    assert_not_cc(&h, Pattern::CyclicCO);
}

#[test]
fn reads_of_each_others_earlier_writes_are_acyclic() {
    let mut h = CausalHistory::new();
    h.write(0, "y", "1");
    h.read(0, "x", Some("1"));
    h.write(1, "x", "1");
    h.read(1, "y", Some("1"));
    assert_causal(&h);
}

// --- WriteCOInitRead --------------------------------------------------------------

#[test]
fn x_then_y_seen_as_y_without_x_is_write_co_init_read() {
    // Session 0 writes x then y; session 1 sees the new y, then the old x.
    let mut h = CausalHistory::new();
    h.write(0, "x", "1");
    h.write(0, "y", "1");
    h.read(1, "y", Some("1"));
    h.read(1, "x", None);
    let e = assert_not_cc(&h, Pattern::WriteCOInitRead);
    assert_eq!(e.violations()[0].ops, vec![id(0, 0), id(1, 1)]);
    let text = e.to_string();
    assert!(
        text.contains("WriteCOInitRead")
            && text.contains("s0.0 write x=1")
            && text.contains("s1.1 read x -> init"),
        "a failure names its pattern and operations: {text}"
    );
}

#[test]
fn x_then_y_seen_as_x_without_y_or_as_both_is_causal() {
    for (first, second) in [
        (("x", Some("1")), ("y", None)),
        (("y", Some("1")), ("x", Some("1"))),
    ] {
        let mut h = CausalHistory::new();
        h.write(0, "x", "1");
        h.write(0, "y", "1");
        h.read(1, first.0, first.1);
        h.read(1, second.0, second.1);
        // A third session that has seen nothing of session 0.
        h.read(2, "y", None);
        h.read(2, "x", None);
        assert_causal(&h);
    }
}

#[test]
fn a_session_not_reading_its_own_write_is_write_co_init_read() {
    let mut h = CausalHistory::new();
    h.write(0, "x", "1");
    h.read(0, "x", None);
    assert_not_cc(&h, Pattern::WriteCOInitRead);
}

#[test]
fn writes_follow_reads_across_three_sessions() {
    // Session 1 reads session 0's x and then writes y: y depends on x, so
    // session 2, having seen y, must see x.
    let mut h = CausalHistory::new();
    h.write(0, "x", "1");
    h.read(1, "x", Some("1"));
    h.write(1, "y", "1");
    h.read(2, "y", Some("1"));
    h.read(2, "x", None);
    let e = assert_not_cc(&h, Pattern::WriteCOInitRead);
    assert_eq!(e.violations()[0].ops, vec![id(0, 0), id(2, 1)]);
    // Had session 1 not read x first, y would not depend on it.
    let mut h = CausalHistory::new();
    h.write(0, "x", "1");
    h.write(1, "y", "1");
    h.read(1, "x", Some("1"));
    h.read(2, "y", Some("1"));
    h.read(2, "x", None);
    assert_causal(&h);
}

// --- WriteCORead -------------------------------------------------------------------

#[test]
fn a_read_going_back_to_an_overwritten_value_is_write_co_read() {
    // Session 0 writes x twice; session 1 sees the second, then the first.
    let mut h = CausalHistory::new();
    h.write(0, "x", "1");
    h.write(0, "x", "2");
    h.read(1, "x", Some("2"));
    h.read(1, "x", Some("1"));
    let e = assert_not_cc(&h, Pattern::WriteCORead);
    assert_eq!(e.violations()[0].ops, vec![id(0, 0), id(0, 1), id(1, 1)]);
    // Or a session reading its own overwritten write.
    let mut h = CausalHistory::new();
    h.write(0, "x", "1");
    h.write(1, "y", "1");
    h.read(1, "x", Some("1"));
    h.write(1, "x", "2");
    h.read(1, "x", Some("1"));
    assert_not_cc(&h, Pattern::WriteCORead);
}

#[test]
fn reads_of_overwrites_in_order_are_causal() {
    let mut h = CausalHistory::new();
    h.write(0, "x", "1");
    h.write(0, "x", "2");
    h.read(1, "x", Some("1"));
    h.read(1, "x", Some("2"));
    h.read(2, "x", Some("2"));
    assert_causal(&h);
}

#[test]
fn a_write_made_after_reading_a_value_overwrites_it_for_every_session() {
    // Writes follow reads on one key: session 1 read 1 and wrote 2, so 2
    // overwrites 1 for everyone; session 2 sees 2 then 1.
    let mut h = CausalHistory::new();
    h.write(0, "x", "1");
    h.read(1, "x", Some("1"));
    h.write(1, "x", "2");
    h.read(2, "x", Some("2"));
    h.read(2, "x", Some("1"));
    assert_not_cc(&h, Pattern::WriteCORead);
    // Concurrent writes (session 1 had not read 1) may be seen either way
    // round: the later read's past has both, arbitrated 2 before 1.
    let mut h = CausalHistory::new();
    h.write(0, "x", "1");
    h.write(1, "x", "2");
    h.read(2, "x", Some("2"));
    h.read(2, "x", Some("1"));
    assert_causal(&h);
}

// --- CyclicCF (CCv only) --------------------------------------------------------

#[test]
fn two_sessions_ordering_concurrent_writes_differently_is_cyclic_cf() {
    // Each session sees both writes, in opposite orders: causal, but no one
    // order of the two writes (the stamp order replicas converge by)
    // explains both sessions.
    let mut h = CausalHistory::new();
    h.write(0, "x", "1");
    h.write(1, "x", "2");
    h.read(2, "x", Some("1"));
    h.read(2, "x", Some("2"));
    h.read(3, "x", Some("2"));
    h.read(3, "x", Some("1"));
    assert_eq!(check_cc(&h), Ok(()));
    let e = assert_caught(&h, Model::Ccv, Pattern::CyclicCF);
    let text = e.to_string();
    assert!(
        text.contains("CyclicCF") && text.contains("arbitrated before"),
        "{text}"
    );
}

#[test]
fn a_session_contradicting_the_order_it_inherited_through_a_write_is_cyclic_cf() {
    // Session 2 sees x=1 then x=2 (so x=1 is arbitrated before x=2), then
    // writes y=1; session 3 reads y=1, inheriting that past, and then reads
    // x=1: its past has x=2, which must then be arbitrated before x=1. CC
    // allows it (each read has its own order); one order does not.
    let mut h = CausalHistory::new();
    h.write(0, "x", "1");
    h.write(1, "x", "2");
    h.read(2, "x", Some("1"));
    h.read(2, "x", Some("2"));
    h.write(2, "y", "1");
    h.read(3, "y", Some("1"));
    h.read(3, "x", Some("1"));
    assert_eq!(check_cc(&h), Ok(()));
    assert_caught(&h, Model::Ccv, Pattern::CyclicCF);
    // Had session 1 read x=1 before writing x=2, it would be WriteCORead.
    let mut h = CausalHistory::new();
    h.write(0, "x", "1");
    h.read(1, "x", Some("1"));
    h.write(1, "x", "2");
    h.read(2, "x", Some("2"));
    h.write(2, "y", "1");
    h.read(3, "y", Some("1"));
    h.read(3, "x", Some("1"));
    assert_not_cc(&h, Pattern::WriteCORead);
}

#[test]
fn sessions_agreeing_on_the_order_of_concurrent_writes_converge() {
    let mut h = CausalHistory::new();
    h.write(0, "x", "1");
    h.write(1, "x", "2");
    h.read(2, "x", Some("1"));
    h.read(2, "x", Some("2"));
    h.read(3, "x", Some("2"));
    h.read(4, "x", Some("1"));
    assert_causal(&h);
}

// --- Causal, not sequential ----------------------------------------------------------

#[test]
fn store_buffering_is_causal_but_not_sequentially_consistent() {
    // Each session writes, then reads the other's key and misses it.
    let mut h = CausalHistory::new();
    h.write(0, "x", "1");
    h.read(0, "y", None);
    h.write(1, "y", "1");
    h.read(1, "x", None);
    assert_causal(&h);
    assert!(
        history::check_sequential(&as_timed(&h)).is_err(),
        "the control: the sequential checker rejects it"
    );
}

/// `h` as a history of `common/history.rs`, each session one client whose
/// operations complete one after another.
fn as_timed(h: &CausalHistory) -> history::History {
    use history::{KvOp, KvRet};
    let mut timed = history::History::new();
    for (client, ops) in h.sessions().iter().enumerate() {
        for op in ops {
            match op {
                causal::Op::Write(k, v) => {
                    timed.invoke(client, KvOp::Set(k.clone(), v.clone()));
                    timed.ret(client, KvRet::Stored);
                }
                causal::Op::MaybeWrite(k, v) => {
                    timed.invoke(client, KvOp::Set(k.clone(), v.clone()));
                    timed.ret(client, KvRet::Failed);
                }
                causal::Op::Read(k, seen) => {
                    timed.invoke(client, KvOp::Get(k.clone()));
                    timed.ret(client, KvRet::Value(seen.clone()));
                }
            }
        }
    }
    timed
}

// --- Writes of unknown outcome ----------------------------------------------------

#[test]
fn a_write_of_unknown_outcome_may_be_seen_or_not() {
    let mut h = CausalHistory::new();
    h.maybe_write(0, "x", "1");
    h.read(0, "x", None); // not yet, or never, applied
    h.read(1, "x", Some("1")); // applied after all
    h.read(2, "x", None);
    assert_causal(&h);
}

#[test]
fn a_write_of_unknown_outcome_once_seen_stays_seen() {
    let mut h = CausalHistory::new();
    h.maybe_write(0, "x", "1");
    h.read(1, "x", Some("1"));
    h.read(1, "x", None);
    assert_not_cc(&h, Pattern::WriteCOInitRead);
}

#[test]
fn a_write_of_unknown_outcome_follows_its_session_but_nothing_follows_it() {
    // It was sent after y=1, so whoever sees it sees y=1.
    let mut h = CausalHistory::new();
    h.write(0, "y", "1");
    h.maybe_write(0, "x", "1");
    h.read(1, "x", Some("1"));
    h.read(1, "y", None);
    assert_not_cc(&h, Pattern::WriteCOInitRead);
    // The session's later write does not depend on it: the client never
    // learnt it took effect.
    let mut h = CausalHistory::new();
    h.maybe_write(0, "x", "1");
    h.write(0, "y", "1");
    h.read(1, "y", Some("1"));
    h.read(1, "x", None);
    assert_causal(&h);
}

// --- Malformed histories -------------------------------------------------------

#[test]
fn a_value_written_twice_to_one_key_is_refused() {
    let mut h = CausalHistory::new();
    h.write(0, "x", "1");
    h.write(0, "y", "1"); // another key: fine
    h.maybe_write(1, "x", "1");
    let e = check_cc(&h).expect_err("two writes of x=1");
    assert_eq!(
        e,
        CausalError::NotDifferentiated {
            key: "x".into(),
            value: "1".into(),
            first: id(0, 0),
            second: id(1, 0),
        }
    );
    assert!(
        e.to_string().contains("not a differentiated history"),
        "{e}"
    );
}

// --- Convergence ---------------------------------------------------------------------

fn contents(pairs: &[(&str, Option<&str>)]) -> Contents {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.map(String::from)))
        .collect()
}

#[test]
fn replicas_holding_the_same_contents_have_converged() {
    let a = contents(&[("x", Some("1")), ("y", None)]);
    let b = contents(&[("x", Some("1"))]); // no entry is absent, as None
    assert_eq!(check_converged(&[a.clone(), b, a]), Ok(()));
    assert_eq!(check_converged(&[]), Ok(()));
}

#[test]
fn the_first_differing_key_and_replica_are_named() {
    let a = contents(&[("a", Some("1")), ("x", Some("1")), ("z", Some("9"))]);
    let b = contents(&[("a", Some("1")), ("x", Some("1")), ("z", Some("8"))]);
    let c = contents(&[("a", Some("1")), ("z", Some("9"))]);
    let d = check_converged(&[a, b, c]).expect_err("they differ");
    assert_eq!(
        d,
        Divergence {
            key: "x".into(),
            first: (0, Some("1".into())),
            second: (2, None),
        }
    );
    assert!(d.to_string().contains("replica 2 holds None"), "{d}");
}
