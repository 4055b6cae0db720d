//! The `mckv` binary as an operator uses it: the line client from a pipe,
//! flags over the config file, and clear refusals of bad configs.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};

use common::{connect, free_port, roundtrip, start_mckv, wait_for_server, ProcessGuard, TempDir};

fn mckv(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = common::spawn(
        Command::new(env!("CARGO_BIN_EXE_mckv"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .expect("run mckv");
    // A client that gives up at once (no server) may close its stdin first.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().expect("wait for mckv")
}

#[test]
fn the_line_client_works_from_a_pipe() {
    let node = start_mckv("", &[]);
    let port = node.port().to_string();
    let script =
        b"set greeting 0 0 5\nhello\nget greeting missing\nincr n 1\nshow\nstats\nbogus\nquit\n";
    let out = mckv(&["client", "--port", &port], script);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let want_start =
        "STORED\r\nVALUE greeting 0 5\r\nhello\r\nEND\r\nNOT_FOUND\r\nNODE 0 127.0.0.1:";
    assert!(text.starts_with(want_start), "{text}");
    assert!(text.contains("STAT curr_connections 1\r\n"), "{text}");
    assert!(text.ends_with("END\r\nERROR\r\n"), "{text}");
}

/// `mckv client ... | head -1`: the reader goes away; the client ends
/// quietly, without a "Broken pipe" complaint.
#[test]
fn the_line_client_ends_quietly_when_its_reader_goes_away() {
    let node = start_mckv("", &[]);
    let mut child = common::spawn(
        Command::new(env!("CARGO_BIN_EXE_mckv"))
            .args(["client", "--port", &node.port().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .expect("run mckv client");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"version\n").unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 8];
    stdout.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"VERSION ");
    drop(stdout);
    // Replies keep coming until one finds the pipe closed.
    let _ = stdin.write_all(&b"version\n".repeat(1000));
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert_eq!(stderr, "");
}

#[test]
fn the_line_client_stops_at_end_of_input_and_on_a_dead_server() {
    let node = start_mckv("", &[]);
    let out = mckv(
        &["client", "--port", &node.port().to_string()],
        b"version\n",
    );
    assert!(
        out.status.success(),
        "{}\nnode log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        node.log()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "VERSION 1.6.0\r\n");

    let out = mckv(
        &["client", "--port", &free_port().to_string()],
        b"version\n",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("mckv client: 127.0.0.1:"));
}

#[test]
fn flags_override_the_config_file() {
    let dir = TempDir::new("flags");
    let config = dir.0.join("config.ini");
    std::fs::write(
        &config,
        "[cluster]\nconsistency = eventual\n[node.3]\nclient = 127.0.0.1:1\n",
    )
    .unwrap();
    let port = free_port();
    let log = dir.0.join("custom.log");
    let child = common::spawn(
        Command::new(env!("CARGO_BIN_EXE_mckv"))
            .args([
                "server",
                "--config",
                config.to_str().unwrap(),
                "--node",
                "3",
            ])
            .args(["--port", &port.to_string(), "--consistency", "sequential"])
            .args(["--log-file", log.to_str().unwrap(), "--log-level", "debug"])
            .stderr(Stdio::null()),
    )
    .unwrap();
    let mut node = ProcessGuard { child, port };
    wait_for_server(&mut node, &log);
    let mut c = connect(port);
    let stats = String::from_utf8(roundtrip(&mut c, b"stats\r\n", b"END\r\n")).unwrap();
    assert!(stats.contains("STAT mckv_node 3\r\n"), "{stats}");
    assert!(stats.contains("STAT mckv_mode sequential\r\n"), "{stats}");
    node.signal("TERM");
    let status = node.child.wait().unwrap();
    assert!(status.success(), "exit after SIGTERM: {status}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains(&format!("serving clients on 127.0.0.1:{port}")),
        "{logged}"
    );
    assert!(
        logged.contains("DEBUG"),
        "debug level reaches the file: {logged}"
    );
}

#[test]
fn bad_configs_are_refused_with_the_reason() {
    let dir = TempDir::new("bad");
    let cases: [(&str, &str); 10] = [
        ("[node.0]\ndata_dir = \n", "[node.0] data_dir: empty"),
        (
            "[node.1]\n[node.65537]\n",
            "[node.65537] node id: at most 65535",
        ),
        (
            "[cluster]\nconsistency = strong\n[node.0]\n",
            "unknown consistency",
        ),
        (
            "[cluster]\nheartbeat = 5\n[node.0]\n",
            "[cluster] heartbeat: unknown key",
        ),
        ("[node.0]\nkv_type = redis\n", "unknown kv_type"),
        (
            "[cluster]\nfsync = sometimes\n[node.0]\n",
            "unknown fsync policy",
        ),
        (
            "[node.0]\ndata_dir = d0\nkv_type = memcache\n",
            "a memcached backend keeps nothing across its own restarts",
        ),
        (
            "[cluster]\nclient_tls = on\n[node.0]\ntls_key = k.pem\n",
            "[node.0] tls_cert: needed with peer_tls or client_tls = on",
        ),
        (
            "[cluster]\npeer_tls = on\n[node.0]\ntls_cert = c.pem\ntls_key = k.pem\n",
            "[cluster] peer_tls: needs tls_ca",
        ),
        (
            "[cluster]\nclient_tls = on\n[node.0]\ntls_cert = /none/c.pem\ntls_key = /none/k.pem\n",
            "/none/c.pem: I/O error",
        ),
    ];
    for (i, (text, why)) in cases.iter().enumerate() {
        let path = dir.0.join(format!("bad{i}.ini"));
        std::fs::write(&path, text).unwrap();
        let out = mckv(&["server", "--config", path.to_str().unwrap()], b"");
        assert_eq!(out.status.code(), Some(2), "{text}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(why), "{text}: {stderr}");
    }
    let out = mckv(&["server", "--config", "/nonexistent/config.ini"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/config.ini"));
}

/// `docker-compose.yml` is valid for compose (v2's `docker compose` or
/// v1's `docker-compose`, whichever is installed; CI installs v1) and runs
/// one mckv service per node of `config.ini`, and the memcached backends
/// only under the `memcache` profile.
#[test]
fn the_compose_file_is_valid_and_runs_every_node_of_the_config() {
    let root = env!("CARGO_MANIFEST_DIR");
    let compose = |args: &[&str]| -> Option<Output> {
        let v2 = Command::new("docker")
            .arg("compose")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success());
        let v1 = || {
            Command::new("docker-compose")
                .args(args)
                .current_dir(root)
                .output()
        };
        v2.or_else(|| v1().ok())
    };
    let Some(plain) = compose(&["config", "--services"]) else {
        eprintln!("neither docker compose nor docker-compose is installed: not checked");
        return;
    };
    assert!(plain.status.success(), "{plain:?}");
    let services = String::from_utf8_lossy(&plain.stdout).into_owned();
    let config = std::fs::read_to_string(format!("{root}/config.ini")).unwrap();
    let nodes = config.lines().filter(|l| l.starts_with("[node.")).count();
    for n in 0..nodes {
        assert!(
            services.lines().any(|s| s == format!("mckv{n}")),
            "{services}"
        );
    }
    let text = std::fs::read_to_string(format!("{root}/docker-compose.yml")).unwrap();
    let memcacheds = text.matches("image: memcached:").count();
    let profiled = text.matches("profiles: [\"memcache\"]").count();
    assert_eq!((memcacheds, profiled), (nodes, nodes), "{text}");
}
