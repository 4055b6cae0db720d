//! TLS through the real binary: a cluster whose peer links run over TLS
//! with mutual certificates, and a node with a certificate from another CA
//! or without TLS at all kept out; a node whose clients speak TLS
//! (`client_tls`) serving real TLS clients (`openssl s_client`, pymemcache)
//! and closing a plain-text one. Certificates are made with the `openssl`
//! command for each test.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::tls::{peer_tls, start_cluster_over_peer_tls, Certs};

use common::{
    cluster_config_with, connect, poll, read_to_eof, request, start_cluster_node, start_mckv_with,
    Cluster, MckvNode, TempDir,
};

fn replicates(cluster: &Cluster, key: &str) {
    let mut c = connect(cluster.port(0));
    let set = format!("set {key} 0 0 5\r\nhello\r\n");
    assert_eq!(request(&mut c, set.as_bytes()), "STORED\r\n");
    let want = format!("VALUE {key} 0 5\r\nhello\r\nEND\r\n");
    for node in 1..cluster.nodes.len() {
        cluster.wait_for_value(node, key, &want);
    }
}

#[test]
fn a_cluster_over_peer_tls_replicates_in_every_mode() {
    for mode in ["linearizable", "sequential", "eventual"] {
        let (cluster, _certs) = start_cluster_over_peer_tls(3, mode, "");
        replicates(&cluster, mode);
    }
}

/// Node 1 of a two-node TLS cluster runs with `node1_keys` in its section
/// and `node1_cluster_keys` for the TLS keys of `[cluster]` in its own copy
/// of the config: node 0 refuses its links, and its log says `why`. (Each
/// side may refuse first, and node 0 logs one refusal a minute from an
/// address: its log is read until it says why, not when it refused.)
fn node1_kept_out(node1_keys: &str, node1_cluster_keys: &str, good: &Certs, why: &str) {
    let dir = TempDir::new("peer-tls-out");
    let (text, ports) =
        cluster_config_with(2, "linearizable", &peer_tls(&good.ca), |_| good.node_keys());
    let config = dir.0.join("config.ini");
    std::fs::write(&config, &text).unwrap();
    let (shared, node1_section) = text.split_at(text.rfind("[node.1]").unwrap());
    let node1_text = shared.replace(&peer_tls(&good.ca), node1_cluster_keys)
        + &node1_section.replace(&good.node_keys(), node1_keys);
    let node1_config = dir.0.join("node1.ini");
    std::fs::write(&node1_config, node1_text).unwrap();
    let node0 = start_cluster_node(&config, &dir.0, 0, ports[0]);
    let _node1 = start_cluster_node(&node1_config, &dir.0, 1, ports[1]);
    let log = || std::fs::read_to_string(dir.0.join("node0.log")).unwrap_or_default();
    poll(Duration::from_secs(10), Duration::from_millis(50), || {
        let refused = common::stat(node0.port, "mckv_peer_links_refused");
        match (refused >= 2, log().contains(why)) {
            (true, true) => Ok(()),
            _ => Err(format!(
                "node 0 refused {refused} links of node 1; its log:\n{}",
                log()
            )),
        }
    });
    let show = request(&mut connect(node0.port), b"show\r\n");
    assert!(
        show.contains("\r\nNODE 1 ") && show.contains(" down peer "),
        "{show}"
    );
}

#[test]
fn a_node_whose_certificate_another_ca_signed_is_kept_out() {
    let dir = TempDir::new("peer-tls-ca");
    let good = Certs::new(&dir.0, "good");
    let rogue = Certs::new(&dir.0, "rogue");
    node1_kept_out(
        &rogue.node_keys(),
        &peer_tls(&rogue.ca),
        &good,
        "UnknownIssuer",
    );
}

#[test]
fn a_node_without_peer_tls_is_kept_out_of_a_tls_cluster() {
    let dir = TempDir::new("peer-tls-plain");
    let good = Certs::new(&dir.0, "good");
    // It waits for a plain challenge, node 0 for its TLS hello: neither
    // comes, and whichever gives up first closes the link.
    node1_kept_out("", "", &good, "] node 0: peer link from 127.0.0.1");
}

/// A one-node server whose clients must speak TLS.
fn tls_node(certs: &Certs) -> MckvNode {
    start_mckv_with("client_tls = on", &certs.node_keys(), &[])
}

/// What `openssl s_client`, checking the node's certificate against the
/// CA, prints of the node's replies to `script` (the script ends in `quit`,
/// so the node closes and s_client ends).
fn s_client(port: u16, ca: &Path, script: &[u8]) -> String {
    let mut child = common::spawn(
        Command::new("openssl")
            .args(["s_client", "-quiet", "-verify_return_error", "-CAfile"])
            .arg(ca)
            .args(["-connect", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    )
    .expect("openssl s_client");
    child.stdin.take().unwrap().write_all(script).unwrap();
    let mut out = String::new();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let _ = stdout.read_to_string(&mut out);
        out
    });
    poll(
        Duration::from_secs(10),
        Duration::from_millis(20),
        || match child.try_wait().unwrap() {
            Some(_) => Ok(()),
            None => Err("s_client did not end after quit".to_string()),
        },
    );
    reader.join().unwrap()
}

#[test]
fn a_tls_client_is_served_and_a_plain_text_one_closed() {
    let dir = TempDir::new("client-tls");
    let certs = Certs::new(&dir.0, "good");
    let node = tls_node(&certs);
    let script = b"set greeting 0 0 5\r\nhello\r\nget greeting\r\nquit\r\n";
    assert_eq!(
        s_client(node.port(), &certs.ca, script),
        "STORED\r\nVALUE greeting 0 5\r\nhello\r\nEND\r\n"
    );

    let mut plain = connect(node.port());
    plain.write_all(b"version\r\n").unwrap();
    let (got, closed) = read_to_eof(&mut plain, Duration::from_secs(5));
    assert!(closed, "a plain-text client is closed, not left waiting");
    assert!(
        !String::from_utf8_lossy(&got).contains("VERSION"),
        "{got:?}"
    );

    let again = s_client(node.port(), &certs.ca, b"get greeting\r\nquit\r\n");
    assert_eq!(again, "VALUE greeting 0 5\r\nhello\r\nEND\r\n");
}

/// pymemcache, the Python client, over TLS with the CA: the same answers.
#[test]
fn pymemcache_talks_to_a_tls_node() {
    let probe = common::output(Command::new("python3").args(["-c", "import pymemcache"]));
    if !probe.is_ok_and(|o| o.status.success()) {
        println!("skipped: pymemcache not installed (python3 -m pip install pymemcache)");
        return;
    }
    let dir = TempDir::new("client-tls-py");
    let certs = Certs::new(&dir.0, "good");
    let node = tls_node(&certs);
    let script = "
import ssl, sys
from pymemcache.client.base import Client
context = ssl.create_default_context(cafile=sys.argv[2])
c = Client(('127.0.0.1', int(sys.argv[1])), tls_context=context, connect_timeout=5, timeout=5)
c.set('k', b'over tls', noreply=False)
print(c.get('k').decode(), c.incr('n', 1), c.add('n', b'1', noreply=False))
";
    let out = common::output(
        Command::new("python3")
            .args(["-c", script])
            .arg(node.port().to_string())
            .arg(&certs.ca),
    )
    .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "over tls None True\n");
}

/// Peers named by host name in the config: each checks the other's
/// certificate names that host (it names no address here).
#[test]
fn peers_named_by_host_name_check_the_name_in_the_certificate() {
    let dir = TempDir::new("peer-tls-dns");
    let certs = Certs::naming(&dir.0, "good", "DNS:localhost");
    let (text, ports) = cluster_config_with(2, "linearizable", &peer_tls(&certs.ca), |_| {
        certs.node_keys()
    });
    let text = text.replace("peer = 127.0.0.1:", "peer = localhost:");
    let cluster = common::launch_cluster_text(text, ports);
    replicates(&cluster, "by-name");
}

/// A TLS client config trusting the CA `ca`.
fn trusting(ca: &Path) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    std::sync::Arc::new(config)
}

/// 300 TLS clients connecting at once are taken a batch per loop pass
/// (each costs a handshake on the event loop): none is lost, each is
/// answered, and a client already connected is served meanwhile.
#[test]
fn a_storm_of_tls_clients_is_taken_in_batches_and_every_one_served() {
    let dir = TempDir::new("client-tls-storm");
    let certs = Certs::new(&dir.0, "good");
    let node = tls_node(&certs);
    let config = trusting(&certs.ca);
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let sockets: Vec<std::net::TcpStream> = (0..300).map(|_| connect(node.port())).collect();
    for (i, socket) in sockets.into_iter().enumerate() {
        let session = rustls::ClientConnection::new(config.clone(), name.clone()).unwrap();
        let mut tls = rustls::StreamOwned::new(session, socket);
        tls.write_all(b"version\r\n").unwrap();
        let mut reply = [0u8; 64];
        let n = tls
            .read(&mut reply)
            .unwrap_or_else(|e| panic!("client {i}: {e}"));
        assert!(
            reply[..n].starts_with(b"VERSION "),
            "client {i}: {:?}",
            &reply[..n]
        );
    }
    // The 300, the start's probe and this one.
    let stats = s_client(node.port(), &certs.ca, b"stats\r\nquit\r\n");
    assert!(stats.contains("STAT total_connections 302\r\n"), "{stats}");
}
