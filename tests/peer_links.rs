//! What a node does with what arrives on its peer port from a peer that
//! misbehaves: it vanishes mid-frame, sends bytes that are no message,
//! declares a huge first message before saying who it is, replays a
//! recorded hello, proves a wrong secret, claims another node's id, or
//! alters or injects a frame after a valid hello. Each time the link is
//! dropped, the node keeps serving its clients, and a well-formed peer is
//! taken again afterwards.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::{
    cluster_config, connect, peer_port_of, poll, roundtrip, rss_kib, start_cluster_node,
    ProcessGuard, TempDir,
};
use mckv::cluster::eventual::version::{State, Version};
use mckv::cluster::eventual::Gossip;
use mckv::cluster::handshake::{self, ClusterKey, Exchange, Session};
use mckv::cluster::membership::Load;
use mckv::cluster::total_order::Broadcast;
use mckv::cluster::wire::Message;
use mckv::cluster::{wire, Frame, Hello, NodeId, PeerMessage, Stamp};
use mckv::config::{ClusterConfig, Consistency};
use mckv::store::{Entry, Expiry};

/// Node 0 of a two-node cluster whose node 1 is played by the test.
struct Lone {
    node: ProcessGuard,
    peer_port: u16,
    dir: TempDir,
    /// Node 0's link to the test's node 1, whose hello the test answered
    /// (welcomed, unless a test says otherwise): node 0 counts node 1 as
    /// up only once it has.
    _welcomed: TcpStream,
}

/// The node notices a silent peer after 400 ms.
const QUICK: &str = "peer_timeout_ms = 400";
/// It would take a minute: what closes a link sooner is not the timeout.
const PATIENT: &str = "peer_timeout_ms = 60000";

/// The run of node 1 the test plays (in its hello and its welcome).
const NODE1_RUN: u64 = 7;

/// The key of the test's clusters (eventual for gossip, linearizable for
/// the total order), whose store settings are the defaults.
fn key<M: Message>() -> ClusterKey {
    let consistency = match M::PROTOCOL == Gossip::PROTOCOL {
        true => Consistency::Eventual,
        false => Consistency::Linearizable,
    };
    let cluster = ClusterConfig {
        consistency,
        ..ClusterConfig::default()
    };
    ClusterKey::new::<M>("test", "test-secret").with_terms(&cluster.replica_terms())
}

/// The key of a node started in `mode`.
fn key_of(mode: &str) -> ClusterKey {
    match mode {
        "eventual" => key::<Gossip>(),
        _ => key::<Broadcast>(),
    }
}

/// Reads one whole message (within 5 s).
fn read_message(link: &mut TcpStream) -> Vec<u8> {
    link.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut message = vec![0u8; 4];
    link.read_exact(&mut message).unwrap();
    let length = u32::from_be_bytes(message[..4].try_into().unwrap()) as usize;
    message.resize(4 + length, 0);
    link.read_exact(&mut message[4..]).unwrap();
    message
}

fn decoded<M: Message>(message: &[u8]) -> PeerMessage<M> {
    match wire::decode::<M>(message) {
        Ok(Some((decoded, _))) => decoded,
        _ => panic!("not one message: {message:?}"),
    }
}

/// Plays node 1's listener: takes node 0's link (within 10 s), challenges
/// it and checks its hello.
fn take_dialer(listener: &TcpListener, key: &ClusterKey) -> (TcpStream, Exchange) {
    listener.set_nonblocking(true).unwrap();
    let mut accepted = None;
    poll(
        Duration::from_secs(10),
        Duration::from_millis(10),
        || match listener.accept() {
            Ok((link, _)) => {
                accepted = Some(link);
                Ok(())
            }
            Err(e) => Err(format!("node 0 never dialed node 1: {e}")),
        },
    );
    let mut link = accepted.expect("accepted");
    link.set_nonblocking(false).unwrap();
    let challenge = handshake::fresh_nonce().unwrap();
    link.write_all(&encoded::<Broadcast>(&PeerMessage::Challenge(challenge)))
        .unwrap();
    let PeerMessage::Hello(hello) = decoded::<Broadcast>(&read_message(&mut link)) else {
        panic!("node 0 did not answer the challenge with a hello");
    };
    let exchange =
        Exchange::check_hello(key, 1, challenge, &hello).expect("node 0's hello proves the secret");
    (link, exchange)
}

/// Plays node 1's listener and welcomes node 0's link.
fn welcome_dialer(listener: &TcpListener, key: &ClusterKey) -> TcpStream {
    let (mut link, exchange) = take_dialer(listener, key);
    let welcome = PeerMessage::<Broadcast>::Welcome {
        incarnation: NODE1_RUN,
        proof: exchange.welcome_proof(key, NODE1_RUN),
    };
    link.write_all(&encoded(&welcome)).unwrap();
    link
}

/// Plays node 1's listener and refuses node 0's link, with the acceptor's
/// proof or a forged one.
fn refuse_dialer(listener: &TcpListener, key: &ClusterKey, proven: bool) -> TcpStream {
    let (mut link, exchange) = take_dialer(listener, key);
    let why = "you are not welcome";
    let proof = match proven {
        true => exchange.refusal_proof(key, why),
        false => vec![0; 32],
    };
    let refusal = PeerMessage::<Broadcast>::Refused {
        why: why.into(),
        proof,
    };
    link.write_all(&encoded(&refusal)).unwrap();
    link
}

fn start_lone_node(mode: &str, peer_timeout: &str) -> Lone {
    start_lone_node_answering(mode, peer_timeout, welcome_dialer)
}

/// Like [`start_lone_node`], node 1's listener answering node 0's first
/// link with `answer`.
fn start_lone_node_answering(
    mode: &str,
    peer_timeout: &str,
    answer: impl FnOnce(&TcpListener, &ClusterKey) -> TcpStream,
) -> Lone {
    let dir = TempDir::new("peer-links");
    let (text, ports) = cluster_config(2, mode, "");
    let text = text.replace("peer_timeout_ms = 400", peer_timeout);
    let config = dir.0.join("config.ini");
    std::fs::write(&config, &text).unwrap();
    let node1 = TcpListener::bind(("127.0.0.1", peer_port_of(&text, 1))).unwrap();
    let node = start_cluster_node(&config, &dir.0, 0, ports[0]);
    let peer_port = peer_port_of(&text, 0);
    // The peer port is bound just after the client port.
    common::wait_for_port(peer_port, Duration::from_secs(10));
    Lone {
        node,
        peer_port,
        dir,
        _welcomed: answer(&node1, &key_of(mode)),
    }
}

impl Lone {
    fn show(&self) -> String {
        let mut c = connect(self.node.port);
        String::from_utf8_lossy(&roundtrip(&mut c, b"show\r\n", b"END\r\n")).into_owned()
    }

    fn assert_serving(&self) {
        let mut c = connect(self.node.port);
        let version = roundtrip(&mut c, b"version\r\n", b"\r\n");
        assert!(version.starts_with(b"VERSION "), "{version:?}");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("node0.log")).unwrap_or_default()
    }

    /// Waits (at most 10 s) until node 0 shows node 1 in `state`.
    fn wait_for_node1(&self, state: &str) {
        poll(Duration::from_secs(10), Duration::from_millis(20), || {
            let show = self.show();
            let line = show.lines().find(|l| l.starts_with("NODE 1 "));
            match line.and_then(|l| l.split(' ').nth(3)) == Some(state) {
                true => Ok(()),
                false => Err(format!("node 1 never {state}:\n{show}")),
            }
        })
    }

    fn dial(&self) -> TcpStream {
        let stream = TcpStream::connect(("127.0.0.1", self.peer_port)).expect("peer port");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
    }
}

fn encoded<M: Message>(message: &PeerMessage<M>) -> Vec<u8> {
    let mut out = Vec::new();
    wire::encode(message, &mut out);
    out
}

/// Reads node 0's challenge on `link` and makes node `node`'s hello
/// answering it (not yet sent), with the session that seals what follows.
fn hello_as<M: Message>(link: &mut TcpStream, node: NodeId) -> (Hello, Session) {
    let PeerMessage::Challenge(challenge) = decoded::<M>(&read_message(link)) else {
        panic!("node 0 did not open the link with a challenge");
    };
    let exchange = Exchange {
        dialer: node,
        acceptor: 0,
        challenge,
        answer: handshake::fresh_nonce().unwrap(),
    };
    (
        exchange.hello(&key::<M>(), NODE1_RUN),
        exchange.session(&key::<M>()),
    )
}

/// Node 1's hello on `link`, as bytes to send, and the session after it.
fn hello<M: Message>(link: &mut TcpStream) -> (Vec<u8>, Session) {
    let (hello, session) = hello_as::<M>(link, 1);
    (encoded::<M>(&PeerMessage::Hello(hello)), session)
}

fn sealed<M: Message>(session: &mut Session, message: &PeerMessage<M>) -> Vec<u8> {
    let mut out = encoded(message);
    session.seal(&mut out, 0);
    out
}

fn heartbeat() -> PeerMessage<Broadcast> {
    PeerMessage::Frame(Frame {
        load: Load::default(),
        body: Broadcast {
            clock: 3,
            ..Broadcast::default()
        },
    })
}

/// The node's reply to a hello on `link`: whether it was a welcome, and
/// the text of a refusal.
fn verdict(link: &mut TcpStream) -> Result<(), String> {
    match decoded::<Broadcast>(&read_message(link)) {
        PeerMessage::Welcome { .. } => Ok(()),
        PeerMessage::Refused { why, .. } => Err(why),
        other => panic!("a hello answered with {other:?}"),
    }
}

/// Whether the node closed the link (EOF or reset) before 5 s passed.
fn closed_by_node(mut link: TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match link.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // a frame of the node's own
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            }
        }
    }
}

#[test]
fn a_peer_that_vanishes_mid_frame_is_dropped_and_taken_again() {
    let lone = start_lone_node("linearizable", QUICK);
    let mut link = lone.dial();
    let (mut sent, mut session) = hello::<Broadcast>(&mut link);
    let frame = sealed(&mut session, &heartbeat());
    sent.extend_from_slice(&frame[..frame.len() / 2]);
    link.write_all(&sent).unwrap();
    lone.wait_for_node1("up");
    // Read the welcome, so the close below is a FIN, not a reset for unread data.
    assert_eq!(verdict(&mut link), Ok(()));
    drop(link);
    lone.wait_for_node1("down");
    lone.assert_serving();
    assert!(
        lone.log()
            .contains("node 0: link from node 1 closed: closed by peer"),
        "the half frame ends with its link: {}",
        lone.log()
    );

    let mut again = lone.dial();
    let (mut sent, mut session) = hello::<Broadcast>(&mut again);
    sent.extend_from_slice(&sealed(&mut session, &heartbeat()));
    again.write_all(&sent).unwrap();
    lone.wait_for_node1("up");
    lone.assert_serving();
}

#[test]
fn bytes_that_are_no_message_close_the_link() {
    let lone = start_lone_node("linearizable", PATIENT);
    let mut link = lone.dial();
    // An HTTP request: its first four bytes read as a 1.2 GB length.
    link.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(closed_by_node(link), "{}", lone.log());
    let mut link = lone.dial();
    // A hello-sized message that is no hello.
    link.write_all(&[0, 0, 0, 3, 9, 9, 9]).unwrap();
    assert!(closed_by_node(link), "{}", lone.log());
    lone.assert_serving();
    assert!(lone.log().contains("refused: "), "{}", lone.log());
    common::assert_rss_bounded(lone.node.child.id(), "bytes that are no message");
}

#[test]
fn a_stranger_that_says_nothing_is_dropped_after_peer_timeout() {
    let lone = start_lone_node("linearizable", QUICK);
    let link = lone.dial();
    assert!(closed_by_node(link), "{}", lone.log());
    assert!(
        lone.log().contains("no hello in the handshake time"),
        "{}",
        lone.log()
    );
    lone.assert_serving();
}

#[test]
fn a_stranger_cannot_announce_a_huge_first_message() {
    let lone = start_lone_node("linearizable", PATIENT);
    let mut link = lone.dial();
    // 200 MiB declared (under the 256 MiB a trusted peer may send), then a start.
    let mut sent = (200u32 << 20).to_be_bytes().to_vec();
    sent.extend_from_slice(&[0u8; 4096]);
    link.write_all(&sent).unwrap();
    assert!(closed_by_node(link), "{}", lone.log());
    let log = lone.log();
    assert!(log.contains("209715200 bytes exceeds the limit"), "{log}");
    lone.assert_serving();
}

/// A hello and, in the same write, a frame bigger than a hello: the node
/// reads a stranger's link only up to its hello, so it must read on once
/// the hello is taken (readiness is not reported again for bytes that
/// already arrived).
#[test]
fn what_follows_a_hello_in_the_same_write_is_read() {
    let lone = start_lone_node("eventual", PATIENT);
    let value = vec![b'v'; 100 << 10];
    let version = Version {
        key: b"big".to_vec(),
        stamp: Stamp { ts: 5, node: 1 },
        state: State::Present(Entry {
            flags: 0,
            expiry: Expiry::Never,
            value: value.clone(),
        }),
        cause: None,
    };
    let mut link = lone.dial();
    let (mut sent, mut session) = hello::<Gossip>(&mut link);
    let frame = PeerMessage::Frame(Frame {
        load: Load::default(),
        body: Gossip {
            clock: 5,
            versions: vec![version],
            ..Gossip::default()
        },
    });
    sent.extend(sealed(&mut session, &frame));
    link.write_all(&sent).unwrap();
    let mut want = b"VALUE big 0 102400\r\n".to_vec();
    want.extend_from_slice(&value);
    want.extend_from_slice(b"\r\nEND\r\n");
    poll(Duration::from_secs(5), Duration::from_millis(20), || {
        let mut c = connect(lone.node.port);
        match roundtrip(&mut c, b"get big\r\n", b"END\r\n") == want {
            true => Ok(()),
            false => Err("the frame after the hello was never read".to_string()),
        }
    });
    drop(link);
}

/// A hello recorded from a link that was welcomed answers no other link's
/// challenge: replayed on a new link, it is refused.
#[test]
fn a_recorded_hello_is_refused_on_another_link() {
    let lone = start_lone_node("linearizable", PATIENT);
    let mut link = lone.dial();
    let (recorded, _) = hello::<Broadcast>(&mut link);
    link.write_all(&recorded).unwrap();
    assert_eq!(verdict(&mut link), Ok(()));

    let mut replay = lone.dial();
    let _challenge = read_message(&mut replay);
    replay.write_all(&recorded).unwrap();
    // A hello without a valid proof is closed unanswered (and logged).
    assert!(closed_by_node(replay), "{}", lone.log());
    assert!(
        lone.log().contains("wrong cluster secret"),
        "{}",
        lone.log()
    );
    lone.assert_serving();
    common::assert_rss_bounded(lone.node.child.id(), "a replayed hello");
}

/// A hello proving a guessed secret is closed unanswered; with the secret
/// but the wrong node id (the node's own, or one the config does not name)
/// it is refused.
#[test]
fn a_hello_claiming_the_nodes_own_id_or_an_unknown_one_is_refused() {
    let lone = start_lone_node("linearizable", PATIENT);
    for (claimed, why) in [(0, "not a member"), (5, "not a member")] {
        let mut link = lone.dial();
        let (hello, _) = hello_as::<Broadcast>(&mut link, claimed);
        link.write_all(&encoded::<Broadcast>(&PeerMessage::Hello(hello)))
            .unwrap();
        let refused = verdict(&mut link).expect_err("refused");
        assert!(refused.contains(why), "node {claimed}: {refused}");
    }
    let mut wrong = lone.dial();
    let (hello, _) = hello_as::<Broadcast>(&mut wrong, 1);
    let mut forged = hello.clone();
    forged.proof = Exchange {
        dialer: 1,
        acceptor: 0,
        challenge: [0; handshake::NONCE_LEN],
        answer: hello.nonce,
    }
    .hello(
        &ClusterKey::new::<Broadcast>("test", "guessed")
            .with_terms(&ClusterConfig::default().replica_terms()),
        NODE1_RUN,
    )
    .proof;
    wrong
        .write_all(&encoded::<Broadcast>(&PeerMessage::Hello(forged)))
        .unwrap();
    assert!(closed_by_node(wrong), "{}", lone.log());
    assert!(
        lone.log().contains("wrong cluster secret"),
        "{}",
        lone.log()
    );
    lone.assert_serving();
    common::assert_rss_bounded(
        lone.node.child.id(),
        "hellos with wrong ids and a guessed secret",
    );
}

/// What a tampering test sends after a valid hello, sealing with its session.
type Tamper = fn(&mut Session) -> Vec<u8>;

/// After a valid hello, a frame altered on the way, a frame injected
/// without a tag, and a sealed frame replayed each close the link.
#[test]
fn an_altered_injected_or_replayed_frame_closes_the_link() {
    let lone = start_lone_node("linearizable", PATIENT);
    let tamper: [(&str, Tamper); 3] = [
        ("altered", |session| {
            let mut frame = sealed(session, &heartbeat());
            frame[6] ^= 1;
            frame
        }),
        ("injected", |_| encoded(&heartbeat())),
        ("replayed", |session| {
            let frame = sealed(session, &heartbeat());
            [frame.clone(), frame].concat()
        }),
    ];
    for (what, tampered) in tamper {
        let mut link = lone.dial();
        let (mut sent, mut session) = hello::<Broadcast>(&mut link);
        sent.extend(tampered(&mut session));
        link.write_all(&sent).unwrap();
        assert!(closed_by_node(link), "{what}: {}", lone.log());
        lone.assert_serving();
    }
    let log = lone.log();
    let bad_tag = "link from node 1 closed: a message with a bad tag";
    assert_eq!(log.matches(bad_tag).count(), 3, "{log}");
    common::assert_rss_bounded(lone.node.child.id(), "tampered frames");
}

/// A peer that takes the link and then never reads costs the node a
/// bounded amount of memory, however much it has to push: here 300 writes
/// of 1 MB to one key (the store holds 1 MB), pushed to a node 1 that
/// reads nothing. The node keeps serving meanwhile.
#[test]
fn a_peer_that_stops_reading_costs_bounded_memory() {
    const RSS_LIMIT_KIB: u64 = 64 * 1024;
    let lone = start_lone_node("eventual", PATIENT);
    let pid = lone.node.child.id();
    let value = vec![b'v'; 1_000_000];
    let mut set = format!("set k 0 0 {}\r\n", value.len()).into_bytes();
    set.extend_from_slice(&value);
    set.extend_from_slice(b"\r\n");
    let mut client = connect(lone.node.port);
    let mut peak = 0;
    for _ in 0..300 {
        assert_eq!(roundtrip(&mut client, &set, b"\r\n"), b"STORED\r\n");
        peak = peak.max(rss_kib(pid));
    }
    lone.assert_serving();
    println!("node 0's RSS peaked at {peak} KiB");
    assert!(common::stat(lone.node.port, "mckv_pushes_dropped") > 0);
    assert!(
        peak < RSS_LIMIT_KIB,
        "node 0's RSS peaked at {peak} KiB with 300 MB pushed to a peer that reads nothing"
    );
}

/// A stranger holding many links open to the peer port keeps neither the
/// node's clients nor a peer's new link out: past 256 waiting for a hello,
/// each new link closes the oldest.
#[test]
fn strangers_holding_links_open_do_not_keep_a_peer_out() {
    let lone = start_lone_node("linearizable", PATIENT);
    let strangers: Vec<TcpStream> = (0..300).map(|_| lone.dial()).collect();
    poll(
        Duration::from_secs(10),
        Duration::from_millis(20),
        || match common::stat(lone.node.port, "mckv_peer_links_refused") >= 44 {
            true => Ok(()),
            false => Err(format!("strangers not closed: {}", lone.log())),
        },
    );
    lone.assert_serving();
    let mut link = lone.dial();
    let (hello, _) = hello::<Broadcast>(&mut link);
    link.write_all(&hello).unwrap();
    assert_eq!(verdict(&mut link), Ok(()));
    assert!(
        lone.log().contains("too many links waiting to say hello"),
        "{}",
        lone.log()
    );
    drop(strangers);
    common::assert_rss_bounded(lone.node.child.id(), "300 strangers on the peer port");
}

/// A refusal fences the refused node (it stops serving), so only the
/// acceptor's, proven for the link, counts: a forged one (a stranger on a
/// peer's address, or injected on the path) only closes the link.
#[test]
fn only_a_proven_refusal_fences_the_node() {
    let set = b"set k 0 0 1\r\nv\r\n";
    let forged = start_lone_node_answering("eventual", PATIENT, |listener, key| {
        refuse_dialer(listener, key, false)
    });
    poll(
        Duration::from_secs(5),
        Duration::from_millis(20),
        || match forged.log().contains("a refusal without a valid proof") {
            true => Ok(()),
            false => Err(format!("the forged refusal was not seen: {}", forged.log())),
        },
    );
    let mut c = connect(forged.node.port);
    assert_eq!(roundtrip(&mut c, set, b"\r\n"), b"STORED\r\n");

    let proven = start_lone_node_answering("eventual", PATIENT, |listener, key| {
        refuse_dialer(listener, key, true)
    });
    poll(Duration::from_secs(5), Duration::from_millis(20), || {
        let mut c = connect(proven.node.port);
        let reply = roundtrip(&mut c, set, b"\r\n");
        match reply.starts_with(b"SERVER_ERROR node unavailable: node 1 refused this node") {
            true => Ok(()),
            false => Err(format!("not fenced: {}", String::from_utf8_lossy(&reply))),
        }
    });
}

/// A listener on a peer's address that never challenges (a half-open
/// link, or no mckv at all) is left after peer_timeout and redialed.
#[test]
fn a_dialed_link_never_welcomed_is_redialed_after_peer_timeout() {
    let lone = start_lone_node_answering("linearizable", QUICK, |listener, _| {
        listener.set_nonblocking(true).unwrap();
        let mut silent = None;
        poll(
            Duration::from_secs(10),
            Duration::from_millis(10),
            || match listener.accept() {
                Ok((link, _)) => {
                    silent = Some(link);
                    Ok(())
                }
                Err(e) => Err(format!("node 0 never dialed: {e}")),
            },
        );
        silent.unwrap()
    });
    poll(
        Duration::from_secs(10),
        Duration::from_millis(20),
        || match lone.log().contains("no welcome in the handshake time") {
            true => Ok(()),
            false => Err(format!("the silent link was kept: {}", lone.log())),
        },
    );
    lone.assert_serving();
}
