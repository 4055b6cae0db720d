//! What clients of a real 3-node cluster see when a peer link fails in a
//! way a socket error does not reveal: a link that stays open but delivers
//! nothing (a black hole: no RST, no FIN). A test-owned TCP proxy sits on
//! every link into node 1 (nodes 0 and 2 dial node 1 through it, as their
//! config says; node 1's own config names its real address) and stops
//! forwarding without closing, holding the bytes as a network path that
//! drops packets makes TCP hold them, then forwards them again.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{cluster_config, connect, poll, request, start_cluster_node, Cluster, TempDir};

/// A TCP proxy to `target` that forwards while `forwarding` holds and
/// otherwise reads nothing (so what is sent waits in the kernel, as on a
/// black-holed path); it stops when dropped.
struct Proxy {
    port: u16,
    forwarding: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Proxy {
    fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy port");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let forwarding = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let (fwd, halt) = (forwarding.clone(), stop.clone());
        let acceptor = std::thread::spawn(move || {
            let mut pumps = Vec::new();
            while !halt.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                            continue;
                        };
                        for (from, to) in [
                            (client.try_clone().unwrap(), server.try_clone().unwrap()),
                            (server, client),
                        ] {
                            let (fwd, halt) = (fwd.clone(), halt.clone());
                            pumps.push(std::thread::spawn(move || pump(from, to, &fwd, &halt)));
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            for pump in pumps {
                let _ = pump.join();
            }
        });
        Proxy {
            port,
            forwarding,
            stop,
            threads: vec![acceptor],
        }
    }

    fn black_hole(&self, on: bool) {
        self.forwarding.store(!on, Ordering::Relaxed);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Copies `from` to `to` while `forwarding`; ends on EOF, an error or `stop`.
fn pump(mut from: TcpStream, mut to: TcpStream, forwarding: &AtomicBool, stop: &AtomicBool) {
    from.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut buf = [0u8; 16 * 1024];
    while !stop.load(Ordering::Relaxed) {
        if !forwarding.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}

/// The port after `peer = 127.0.0.1:` in node `id`'s section of `text`.
fn peer_port(text: &str, id: usize) -> u16 {
    text.split(&format!("[node.{id}]"))
        .nth(1)
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("peer = 127.0.0.1:")))
        .and_then(|p| p.trim().parse().ok())
        .expect("a peer port")
}

/// A 3-node linearizable cluster whose links into node 1 pass through a
/// proxy, and that proxy.
fn cluster_behind_proxy() -> (Cluster, Proxy) {
    let extra = "backend_timeout_ms = 1000";
    let (direct, ports) = cluster_config(3, "linearizable", extra);
    let node1 = peer_port(&direct, 1);
    let proxy = Proxy::start(node1);
    let proxied = direct.replacen(
        &format!("peer = 127.0.0.1:{node1}"),
        &format!("peer = 127.0.0.1:{}", proxy.port),
        1,
    );
    let dir = TempDir::new("faults");
    let (config, config1) = (dir.0.join("config.ini"), dir.0.join("config-node1.ini"));
    std::fs::write(&config, proxied).unwrap();
    std::fs::write(&config1, direct).unwrap();
    let nodes = (0..3)
        .map(|id| {
            let file = if id == 1 { &config1 } else { &config };
            start_cluster_node(file, &dir.0, id, ports[id])
        })
        .collect();
    let cluster = Cluster {
        nodes,
        backends: Vec::new(),
        dir,
        config,
    };
    cluster.wait_all_up();
    (cluster, proxy)
}

/// While the links into node 1 deliver nothing, node 1 notices its peers'
/// silence within `peer_timeout_ms` and refuses its clients with `no
/// quorum`, saying nothing was applied; nodes 0 and 2, which still hear node
/// 1 but get no answer from it, form a view without it and serve again
/// (node 0's write during the change may end either way; it is answered
/// within `backend_timeout_ms`, never held for ever). Once the path delivers
/// again, node 1 rejoins, is handed the state, and every node agrees.
#[test]
fn a_black_holed_link_leaves_the_majority_serving_and_the_node_rejoins_after() {
    let (cluster, proxy) = cluster_behind_proxy();
    let mut c0 = connect(cluster.port(0));
    assert_eq!(request(&mut c0, b"set k 0 0 1\r\na\r\n"), "STORED\r\n");

    proxy.black_hole(true);
    let holed = Instant::now();
    let mut c1 = connect(cluster.port(1));
    poll(
        Duration::from_secs(10),
        Duration::from_millis(20),
        || match request(&mut c1, b"get k\r\n").as_str() {
            "SERVER_ERROR no quorum; not applied\r\n" => Ok(()),
            other => Err(format!("node 1 never noticed the silence: {other:?}")),
        },
    );
    let log = cluster.log(1);
    assert!(log.contains("node 0 is silent for over 400 ms"), "{log}");
    assert!(
        !log.contains("link from node 0 closed"),
        "the link stayed open: {log}"
    );

    poll(Duration::from_secs(10), Duration::from_millis(20), || {
        let asked = Instant::now();
        let answer = request(&mut c0, b"set k 0 0 1\r\nb\r\n");
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "bounded by backend_timeout_ms"
        );
        match answer.as_str() {
            "STORED\r\n" => Ok(()),
            other => Err(format!(
                "nodes 0 and 2 never served without node 1: {other:?}"
            )),
        }
    });
    eprintln!("served again {:?} after the black hole", holed.elapsed());

    proxy.black_hole(false);
    poll(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || match request(&mut c1, b"get k\r\n").as_str() {
            "VALUE k 0 1\r\nb\r\nEND\r\n" => Ok(()),
            a if a.starts_with("SERVER_ERROR ") => Err(format!("node 1 never rejoined: {a:?}")),
            a => panic!("node 1 answered {a:?}"),
        },
    );
    cluster.wait_all_up();
    let agreed = cluster.converged(&["k".to_string()]);
    assert!(agreed.ends_with("\r\nb\r\nEND\r\n"), "{agreed}");
    drop(cluster);
}
