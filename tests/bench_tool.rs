//! `mckv bench` as an operator runs it: against a memcached and an mckv
//! node started here, for about a second per cell, with its table, CSV and
//! plot checked cell by cell; against a port nothing listens on; and
//! against a node killed while the load runs. No assertion on speed: only
//! that every number is there, and that nothing hangs.

mod common;

use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{free_port, start_mckv, start_memcached, TempDir};

/// Long enough for every run here on a loaded machine; a run still going
/// after it is a hang.
const HANG: Duration = Duration::from_secs(90);

/// Runs `mckv bench` with `args`; kills it (by pid) and fails if it has not
/// exited within [`HANG`].
fn mckv_bench(args: &[&str]) -> Output {
    let child = common::spawn(
        Command::new(env!("CARGO_BIN_EXE_mckv"))
            .arg("bench")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .expect("run mckv bench");
    let pid = child.id().to_string();
    let (done, outcome) = mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output()));
    match outcome.recv_timeout(HANG) {
        Ok(out) => out.expect("wait for mckv bench"),
        Err(_) => {
            let _ = common::status(Command::new("kill").args(["-9", &pid]));
            panic!("mckv bench {args:?} still running after {HANG:?}");
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The table's rows, each as its cell's name and the numbers (or `-`) of
/// each `|`-separated column group.
fn table_rows(stdout: &str) -> Vec<(String, Vec<Vec<String>>)> {
    stdout
        .lines()
        .filter(|l| l.contains(" conn ") && l.contains('|'))
        .map(|l| {
            let mut groups = l.split('|');
            let name = groups.next().unwrap().trim().to_string();
            let groups = groups
                .map(|g| g.split_whitespace().map(str::to_string).collect())
                .collect();
            (name, groups)
        })
        .collect()
}

/// One server's column group: ops/s, p50, p99, p99.9, errors, cpu%.
fn server_cells(group: &[String], row: &str) -> [f64; 6] {
    assert_eq!(group.len(), 6, "{row}: {group:?}");
    let number = |i: usize| -> f64 {
        group[i]
            .parse()
            .unwrap_or_else(|_| panic!("{row}: cell {i} is {:?}", group[i]))
    };
    [0, 1, 2, 3, 4, 5].map(number)
}

#[test]
fn a_bounded_run_against_memcached_and_mckv_fills_the_table_the_csv_and_the_plot() {
    let memcached = start_memcached();
    let node = start_mckv("", &[]);
    let dir = TempDir::new("bench");
    let csv = dir.0.join("run.csv");
    let svg = dir.0.join("run.svg");
    let servers = format!(
        "memcached=127.0.0.1:{},mckv=127.0.0.1:{}",
        memcached.port,
        node.port()
    );
    let out = mckv_bench(&[
        "--servers",
        &servers,
        "--conns",
        "4",
        "--depth",
        "1,4",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--csv",
        csv.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");

    let rows = table_rows(&stdout);
    assert_eq!(rows.len(), 2, "one row per depth:\n{stdout}");
    for (name, groups) in &rows {
        // memcached, mckv, and mckv's ratios to memcached.
        assert_eq!(groups.len(), 3, "{name}: {groups:?}");
        for group in &groups[..2] {
            let [ops, p50, p99, p999, errors, cpu] = server_cells(group, name);
            assert!(ops > 0.0 && p50 > 0.0, "{name}: {group:?}");
            assert!(p50 <= p99 && p99 <= p999, "{name}: {group:?}");
            assert_eq!(errors, 0.0, "{name}: {group:?}\n{stdout}");
            // Both listen on this machine: their CPU is found and shown.
            assert!(cpu >= 0.0, "{name}: {group:?}");
        }
        let ratios: Vec<f64> = groups[2].iter().map(|r| r.parse().unwrap()).collect();
        assert!(
            ratios.len() == 2 && ratios.iter().all(|r| *r > 0.0),
            "{name}: {ratios:?}"
        );
    }

    let csv = std::fs::read_to_string(&csv).expect("the CSV is written");
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(
        header,
        [
            "server",
            "conns",
            "get_percent",
            "depth",
            "rate",
            "t_s",
            "ops_per_sec",
            "p50_us",
            "p99_us",
            "p999_us",
            "max_us",
            "errors"
        ]
    );
    let mut series = std::collections::BTreeSet::new();
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields.len(), header.len(), "{line}");
        assert!(["memcached", "mckv"].contains(&fields[0]), "{line}");
        for field in &fields[1..] {
            assert!(field.parse::<f64>().is_ok(), "{line}: {field:?}");
        }
        assert_eq!(fields[11], "0", "errors in {line}");
        series.insert((fields[0].to_string(), fields[3].to_string()));
    }
    assert_eq!(series.len(), 4, "a series per server and depth: {series:?}");

    let svg = std::fs::read_to_string(&svg).expect("the plot is written");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    for label in ["throughput", "latency by percentile", "memcached", "mckv"] {
        assert!(svg.contains(label), "no {label:?} in the plot");
    }
    assert!(svg.contains("<polyline"), "no line drawn");
}

#[test]
fn a_server_that_is_not_listening_is_a_clear_error_and_a_failure() {
    let port = free_port();
    let out = mckv_bench(&["--servers", &format!("gone=127.0.0.1:{port}")]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let want = format!("mckv bench: cannot store the keys in gone (127.0.0.1:{port}): connect:");
    assert!(stderr.starts_with(&want), "{stderr}");
    assert!(stderr.contains("refused"), "{stderr}");
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
}

#[test]
fn a_node_killed_under_load_gives_counted_errors_and_a_failure_not_a_hang() {
    let node = start_mckv("", &[]);
    let port = node.port();
    let servers = format!("mckv=127.0.0.1:{port}");
    let run = std::thread::spawn(move || {
        mckv_bench(&[
            "--servers",
            &servers,
            "--conns",
            "4",
            "--depth",
            "1,2",
            "--keys",
            "1000",
            "--duration",
            "1",
            "--warmup",
            "0.2",
            "--timeout-ms",
            "200",
        ])
    });
    // Populate reads one key back; more gets are the load's: the first
    // cell runs. Kill the node.
    common::poll(HANG, Duration::from_millis(5), || {
        match common::stat(port, "cmd_get") {
            n if n > 1 => Ok(()),
            n => Err(format!("{n} gets after {HANG:?}")),
        }
    });
    drop(node);
    let out = run.join().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("mckv bench: no request completed: mckv 4 conn 90/10 depth 2:"),
        "{stderr}"
    );
    let rows = table_rows(&stdout);
    assert_eq!(rows.len(), 2, "{stdout}");
    // The dead server's CPU is `-`; its errors are counted.
    let errors: u64 = rows[1].1[0][4].parse().unwrap();
    assert!(errors > 0, "{stdout}");
    assert!(stdout.contains("ERRORS:"), "{stdout}");
}
