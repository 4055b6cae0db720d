//! The Prometheus endpoint (`metrics_addr`) of the real binary, scraped with
//! plain HTTP/1.1 over a `TcpStream`: what a scrape says of a 3-node
//! cluster, and that no HTTP client, slow, broken or many at once, holds up
//! the node.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{connect, free_port, poll, read_to_eof, request, start_cluster_with, start_mckv};

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One HTTP response, read to the server's close.
struct Response {
    status: String,
    headers: BTreeMap<String, String>,
    body: String,
}

/// Sends `head` on a fresh connection to `port` and reads the response
/// until the server closes the connection (at most 10 s).
fn http(port: u16, head: &str) -> Response {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to metrics");
    stream.write_all(head.as_bytes()).expect("send request");
    read_response(&mut stream)
}

fn read_response(stream: &mut TcpStream) -> Response {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).expect("read response");
    let text = String::from_utf8(bytes).expect("a UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect();
    Response {
        status,
        headers,
        body: body.to_string(),
    }
}

fn get(port: u16, path: &str) -> Response {
    http(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n\r\n"),
    )
}

/// One sample: its name, labels and value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses a body in the text exposition format line by line: every line is
/// a `# HELP`, a `# TYPE` or a sample, and every sample's family was typed
/// before it. Returns the samples and the type of each family.
fn parse_exposition(body: &str) -> (Vec<Sample>, BTreeMap<String, String>) {
    let mut samples = Vec::new();
    let mut types = BTreeMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            assert!(rest.split_once(' ').is_some(), "{line}");
            continue;
        }
        assert!(!line.starts_with('#') && !line.is_empty(), "{line:?}");
        let sample = parse_sample(line);
        let family = ["_bucket", "_sum", "_count", ""]
            .iter()
            .find_map(|suffix| {
                let base = sample.name.strip_suffix(suffix)?;
                types.contains_key(base).then_some(base)
            })
            .unwrap_or_else(|| panic!("sample of an untyped family: {line}"));
        assert!(family.starts_with("mckv_"), "{line}");
        samples.push(sample);
    }
    (samples, types)
}

fn parse_sample(line: &str) -> Sample {
    let (series, value) = line.rsplit_once(' ').expect("name and value");
    let value: f64 = value
        .parse()
        .unwrap_or_else(|_| panic!("bad value: {line}"));
    let (name, labels) = match series.split_once('{') {
        None => (series, BTreeMap::new()),
        Some((name, rest)) => {
            let inner = rest.strip_suffix('}').expect("labels end with }");
            let labels = inner
                .split("\",")
                .map(|pair| {
                    let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
                    (k.to_string(), v.trim_end_matches('"').to_string())
                })
                .collect();
            (name, labels)
        }
    };
    assert!(
        name.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
        "{line}"
    );
    Sample {
        name: name.to_string(),
        labels,
        value,
    }
}

/// A scrape's samples, to look values up in.
struct Scrape(Vec<Sample>);

impl Scrape {
    fn of(port: u16) -> Scrape {
        let response = get(port, "/metrics");
        assert_eq!(response.status, "HTTP/1.1 200 OK", "{}", response.body);
        assert_eq!(
            response.headers.get("content-type").map(String::as_str),
            Some(CONTENT_TYPE)
        );
        assert_eq!(
            response.headers.get("content-length"),
            Some(&response.body.len().to_string())
        );
        Scrape(parse_exposition(&response.body).0)
    }

    /// The value of the sample named `name` whose labels include `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0
            .iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }

    fn must(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels)
            .unwrap_or_else(|| panic!("no {name}{labels:?} in {:#?}", self.0))
    }

    fn requests(&self, command: &str) -> f64 {
        self.must(
            "mckv_request_duration_seconds_count",
            &[("command", command)],
        )
    }
}

#[test]
fn a_scrape_shows_the_view_the_peers_up_and_down_and_every_requests_latency() {
    let metrics_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut cluster = start_cluster_with(3, "linearizable", "", |id| {
        format!("metrics_addr = 127.0.0.1:{}", metrics_ports[id])
    });
    let port = metrics_ports[0];

    // The view settles right after every node sees the others.
    let first = poll(Duration::from_secs(10), Duration::from_millis(50), || {
        let scrape = Scrape::of(port);
        let settled = scrape.value("mckv_view_members", &[]) == Some(3.0)
            && scrape.value("mckv_role", &[("role", "member")]) == Some(1.0);
        match settled {
            true => Ok(scrape),
            false => Err(format!("the view never settled: {:#?}", scrape.0)),
        }
    });
    assert!(first.must("mckv_view_epoch", &[]) >= 1.0);
    assert_eq!(first.must("mckv_members_up", &[]), 3.0);
    for peer in ["1", "2"] {
        assert_eq!(first.must("mckv_peer_up", &[("peer", peer)]), 1.0);
        let heard = first.must("mckv_peer_last_heard_seconds", &[("peer", peer)]);
        assert!(heard >= 0.0, "{heard}");
    }
    assert_eq!(first.value("mckv_peer_up", &[("peer", "0")]), None);
    let info = [
        ("node", "0"),
        ("mode", "linearizable"),
        ("backend", "memory"),
    ];
    assert_eq!(first.must("mckv_node_info", &info), 1.0);
    for family in [
        "mckv_pending",
        "mckv_ops_total",
        "mckv_refused_no_quorum_total",
        "mckv_snapshots_sent_total",
        "mckv_snapshots_received_total",
        "mckv_catch_up_received_bytes",
        "mckv_timeouts_total",
        "mckv_current_connections",
        "mckv_delivered_total",
        "mckv_delivery_lag_seconds",
    ] {
        first.must(family, &[]);
    }
    assert_eq!(first.value("mckv_sync_rounds_total", &[]), None);

    let (sets, gets) = (20, 30);
    let mut client = connect(cluster.port(0));
    for i in 0..sets {
        let reply = request(&mut client, format!("set k{i} 0 0 1\r\nx\r\n").as_bytes());
        assert_eq!(reply, "STORED\r\n");
    }
    for i in 0..gets {
        let reply = request(&mut client, format!("get k{}\r\n", i % sets).as_bytes());
        assert!(reply.starts_with("VALUE"), "{reply}");
    }
    let after = Scrape::of(port);
    assert!(after.requests("set") >= first.requests("set") + f64::from(sets));
    assert!(after.requests("get") >= first.requests("get") + f64::from(gets));
    assert!(after.must("mckv_current_connections", &[]) >= 1.0);
    let inf = [("command", "get"), ("le", "+Inf")];
    assert_eq!(
        after.must("mckv_request_duration_seconds_bucket", &inf),
        after.requests("get")
    );

    let _ = cluster.nodes[2].child.kill();
    let _ = cluster.nodes[2].child.wait();
    poll(Duration::from_secs(10), Duration::from_millis(50), || {
        let scrape = Scrape::of(port);
        match scrape.value("mckv_peer_up", &[("peer", "2")]) {
            Some(0.0) => Ok(()),
            other => Err(format!("peer 2 still up ({other:?}) after it was killed")),
        }
    });
    let last = Scrape::of(port);
    assert_eq!(last.must("mckv_peer_up", &[("peer", "1")]), 1.0);
}

/// A one-node server with its metrics at a free port; returns it and the port.
fn node_with_metrics() -> (common::MckvNode, u16) {
    let port = free_port();
    let node = start_mckv(&format!("metrics_addr = 127.0.0.1:{port}"), &[]);
    (node, port)
}

/// A node with a data directory shows its log as `stats` does: bytes,
/// fsyncs, whether the disk failed or stalls it, replies held, snapshots;
/// a node without one shows none of them.
#[test]
fn a_node_with_a_data_directory_shows_its_log() {
    let port = free_port();
    let data = common::TempDir::new("metrics-data");
    let keys = format!(
        "metrics_addr = 127.0.0.1:{port}\ndata_dir = {}",
        data.0.display()
    );
    let node = common::start_mckv_with("fsync = always", &keys, &[]);
    assert_eq!(
        request(&mut connect(node.port()), b"set k 0 0 1\r\nv\r\n"),
        "STORED\r\n"
    );
    let scrape = Scrape::of(port);
    assert!(scrape.must("mckv_log_bytes", &[]) > 0.0);
    assert!(scrape.must("mckv_log_fsyncs_total", &[]) >= 1.0);
    assert_eq!(scrape.must("mckv_log_failed", &[]), 0.0);
    assert_eq!(scrape.must("mckv_log_stalled", &[]), 0.0);
    assert_eq!(scrape.must("mckv_replies_held", &[]), 0.0);
    // The start writes what it recovered as one snapshot.
    assert_eq!(scrape.must("mckv_snapshots_written_total", &[]), 1.0);
    assert!(scrape.must("mckv_snapshot_bytes", &[]) > 0.0);
    let (_plain, plain_port) = node_with_metrics();
    let plain = Scrape::of(plain_port);
    for name in [
        "mckv_log_bytes",
        "mckv_log_fsyncs_total",
        "mckv_replies_held",
    ] {
        assert_eq!(
            plain.value(name, &[]),
            None,
            "{name} without a data directory"
        );
    }
}

#[test]
fn another_path_is_not_found_and_another_method_not_allowed() {
    let (_node, port) = node_with_metrics();
    assert_eq!(get(port, "/").status, "HTTP/1.1 404 Not Found");
    assert_eq!(get(port, "/metricsx").status, "HTTP/1.1 404 Not Found");
    let post = http(port, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(post.status, "HTTP/1.1 405 Method Not Allowed");
    assert_eq!(post.headers.get("allow").map(String::as_str), Some("GET"));
    let garbage = http(port, "get some-key\r\n\r\n");
    assert_eq!(garbage.status, "HTTP/1.1 400 Bad Request");
    for response in [get(port, "/"), post, garbage] {
        assert_eq!(
            response.headers.get("connection").map(String::as_str),
            Some("close")
        );
    }
    // A query string is not part of the path.
    assert_eq!(get(port, "/metrics?debug=1").status, "HTTP/1.1 200 OK");
    // A client that closes its side after its request still gets the response.
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_response(&mut stream).status, "HTTP/1.1 200 OK");
}

/// Waits (at most 20 s) until the server closes `stream`: a read gives EOF
/// or an error other than a timeout. Returns what was read before.
fn wait_closed(stream: &mut TcpStream) -> Vec<u8> {
    let (got, closed) = read_to_eof(stream, Duration::from_secs(20));
    assert!(closed, "the metrics connection was never closed");
    got
}

#[test]
fn a_half_sent_silent_or_oversized_request_is_closed_and_clients_are_served_meanwhile() {
    let (node, port) = node_with_metrics();
    let mut half = TcpStream::connect(("127.0.0.1", port)).unwrap();
    half.write_all(b"GET /metr").unwrap();
    let mut silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut oversized = TcpStream::connect(("127.0.0.1", port)).unwrap();
    // Over the 8 KiB a head may take, with no end in sight.
    let _ = oversized.write_all(&[b'x'; 9 * 1024]);

    // While they hang, the memcached port and other scrapes are served.
    let mut client = connect(node.port());
    assert_eq!(request(&mut client, b"set k 0 0 1\r\nv\r\n"), "STORED\r\n");
    assert_eq!(
        request(&mut client, b"get k\r\n"),
        "VALUE k 0 1\r\nv\r\nEND\r\n"
    );
    assert!(Scrape::of(port).requests("set") >= 1.0);

    assert!(wait_closed(&mut oversized).is_empty());
    assert!(wait_closed(&mut half).is_empty());
    assert!(wait_closed(&mut silent).is_empty());
    assert_eq!(
        request(&mut client, b"get k\r\n"),
        "VALUE k 0 1\r\nv\r\nEND\r\n"
    );
}

#[test]
fn many_concurrent_scrapes_are_all_answered() {
    let (node, port) = node_with_metrics();
    let scrapes = 40;
    // All open and asking at once before any response is read.
    let mut streams: Vec<TcpStream> = (0..scrapes)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    for stream in &mut streams {
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
    }
    let mut client = connect(node.port());
    assert_eq!(request(&mut client, b"version\r\n"), "VERSION 1.6.0\r\n");
    for stream in &mut streams {
        let response = read_response(stream);
        assert_eq!(response.status, "HTTP/1.1 200 OK");
        let (samples, types) = parse_exposition(&response.body);
        assert_eq!(
            types
                .get("mckv_request_duration_seconds")
                .map(String::as_str),
            Some("histogram")
        );
        assert!(samples.iter().any(|s| s.name == "mckv_ops_total"));
    }
}
