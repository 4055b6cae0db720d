//! A test-owned TCP proxy for the links into one node of a real cluster,
//! which can stop forwarding without closing (a black hole: no RST, no FIN)
//! or forward slowly (a thin link),
//! and a 3-node cluster whose links into node 1 pass through it (nodes 0 and
//! 2 dial node 1 through the proxy, as their config says; node 1's own
//! config names its real address), or only the link one node dials to
//! another (which carries all the first node's frames to the second), or
//! several such links, each through a proxy of its own.
//! Shared by `tests/faults.rs`, `tests/cluster_history.rs` and
//! `tests/causal.rs`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::common::{cluster_config, peer_port_of, start_cluster_node, Cluster, TempDir};

/// A TCP proxy to `target` that forwards while `forwarding` holds and
/// otherwise reads nothing (so what is sent waits in the kernel, as on a
/// black-holed path), at most `rate` bytes a second each way if set; it
/// stops when dropped.
pub struct Proxy {
    pub port: u16,
    forwarding: Arc<AtomicBool>,
    rate: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Proxy {
    pub fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy port");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let forwarding = Arc::new(AtomicBool::new(true));
        let rate = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (fwd, limit, halt) = (forwarding.clone(), rate.clone(), stop.clone());
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
                            let link = Link {
                                forwarding: fwd.clone(),
                                rate: limit.clone(),
                                stop: halt.clone(),
                            };
                            pumps.push(std::thread::spawn(move || pump(from, to, &link)));
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
            rate,
            stop,
            threads: vec![acceptor],
        }
    }

    pub fn black_hole(&self, on: bool) {
        self.forwarding.store(!on, Ordering::SeqCst);
    }

    /// Forwards at most `bytes_per_second` each way from now on (0: as
    /// fast as it can).
    pub fn throttle(&self, bytes_per_second: u64) {
        self.rate.store(bytes_per_second, Ordering::SeqCst);
    }
}

/// What one direction of a proxied connection obeys.
struct Link {
    forwarding: Arc<AtomicBool>,
    rate: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Copies `from` to `to` while `forwarding`, pausing after each write long
/// enough to keep to `rate`; ends on EOF, an error or `stop`. Bytes read
/// while the black hole opened wait for it to close, so nothing sent after
/// [`Proxy::black_hole`] returned gets through (a read already waiting when
/// it was called would otherwise pass what it gets).
fn pump(mut from: TcpStream, mut to: TcpStream, link: &Link) {
    let (forwarding, stop) = (&link.forwarding, &link.stop);
    from.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut buf = [0u8; 16 * 1024];
    let held = || {
        while !forwarding.load(Ordering::SeqCst) {
            if stop.load(Ordering::Relaxed) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    };
    while !stop.load(Ordering::Relaxed) {
        if held() {
            break;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if held() || to.write_all(&buf[..n]).is_err() {
                    break;
                }
                let rate = link.rate.load(Ordering::SeqCst);
                if rate > 0 {
                    std::thread::sleep(Duration::from_secs_f64(n as f64 / rate as f64));
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

/// A 3-node cluster of `consistency` (`extra` added to `[cluster]`) whose
/// links into node 1 pass through a proxy, and that proxy.
pub fn cluster_behind_proxy(consistency: &str, extra: &str) -> (Cluster, Proxy) {
    cluster_with_proxied_links(consistency, extra, 1, &[0, 2])
}

/// A 3-node cluster of `consistency` (`extra` added to `[cluster]`) in
/// which every node of `dialers` dials node `target` through one proxy (as
/// its config says; the other nodes' config names `target`'s real address),
/// and that proxy. A node sends its frames only on the links it dialed, so
/// the proxy carries everything the dialers send `target`, and of what
/// `target` sends them only its side of each link's handshake.
pub fn cluster_with_proxied_links(
    consistency: &str,
    extra: &str,
    target: usize,
    dialers: &[usize],
) -> (Cluster, Proxy) {
    let (direct, ports) = cluster_config(3, consistency, extra);
    let real = peer_port_of(&direct, target);
    let proxy = Proxy::start(real);
    let proxied = through(&direct, real, proxy.port);
    let dir = TempDir::new("faults");
    let (config, config_direct) = (dir.0.join("config.ini"), dir.0.join("config-direct.ini"));
    std::fs::write(&config, proxied).unwrap();
    std::fs::write(&config_direct, direct).unwrap();
    let files: Vec<PathBuf> = (0..3)
        .map(|id| match dialers.contains(&id) {
            true => config.clone(),
            false => config_direct.clone(),
        })
        .collect();
    (launch(dir, &files, &ports, config), proxy)
}

/// A 3-node cluster of `consistency` (`extra` added to `[cluster]`) in
/// which each link of `links`, `(dialer, target)`, passes through a proxy
/// of its own (the link one node dials to another carries every frame the
/// first sends the second), and those proxies, in the order of `links`.
/// The cluster's `config` is that of the nodes that dial no proxy.
pub fn cluster_with_proxy_per_link(
    consistency: &str,
    extra: &str,
    links: &[(usize, usize)],
) -> (Cluster, Vec<Proxy>) {
    let (direct, ports) = cluster_config(3, consistency, extra);
    let proxies: Vec<Proxy> = links
        .iter()
        .map(|&(_, target)| Proxy::start(peer_port_of(&direct, target)))
        .collect();
    let dir = TempDir::new("faults");
    let files: Vec<PathBuf> = (0..3)
        .map(|id| {
            let text = links
                .iter()
                .zip(&proxies)
                .filter(|((dialer, _), _)| *dialer == id)
                .fold(direct.clone(), |text, ((_, target), proxy)| {
                    through(&text, peer_port_of(&direct, *target), proxy.port)
                });
            let file = dir.0.join(format!("config-{id}.ini"));
            std::fs::write(&file, text).unwrap();
            file
        })
        .collect();
    let config = dir.0.join("config-direct.ini");
    std::fs::write(&config, &direct).unwrap();
    (launch(dir, &files, &ports, config), proxies)
}

/// `config` with the peer address on port `real` moved to the proxy's port.
fn through(config: &str, real: u16, proxy: u16) -> String {
    config.replacen(
        &format!("peer = 127.0.0.1:{real}"),
        &format!("peer = 127.0.0.1:{proxy}"),
        1,
    )
}

/// Starts node `id` with the config at `files[id]` on client port
/// `ports[id]`, and waits until every node sees every other one.
fn launch(dir: TempDir, files: &[PathBuf], ports: &[u16], config: PathBuf) -> Cluster {
    let nodes = (0..3)
        .map(|id| start_cluster_node(&files[id], &dir.0, id, ports[id]))
        .collect();
    let cluster = Cluster {
        nodes,
        backends: Vec::new(),
        dir,
        config,
    };
    cluster.wait_all_up();
    cluster
}
