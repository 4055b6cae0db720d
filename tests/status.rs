//! `mckv status` against a real 3-node cluster: every node's row while all
//! are up (exit 0), a stopped node marked down (exit 1), and ops/s taken
//! since the last call once there was one.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{start_cluster, TempDir};

/// `mckv status --config <config>`, keeping its samples under `state`.
fn status(config: &Path, state: &Path) -> Output {
    common::output(
        Command::new(env!("CARGO_BIN_EXE_mckv"))
            .args(["status", "--config"])
            .arg(config)
            .env("XDG_STATE_HOME", state),
    )
    .expect("run mckv status")
}

/// The table's row of node `id`, split into its cells.
fn row(stdout: &str, id: u32) -> Vec<String> {
    let cells = |line: &str| {
        line.split_whitespace()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    stdout
        .lines()
        .map(cells)
        .find(|cells| {
            cells
                .first()
                .is_some_and(|c| c.trim_end_matches('!') == id.to_string())
        })
        .unwrap_or_else(|| panic!("no row for node {id} in\n{stdout}"))
}

const OPS_PER_SECOND: usize = 7;

#[test]
fn status_shows_every_node_and_exits_non_zero_once_one_is_stopped() {
    let mut cluster = start_cluster(3, "linearizable", "");
    let state = TempDir::new("status");

    let first = status(&cluster.config, &state.0);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(stdout.starts_with("NODE  ADDRESS"), "{stdout}");
    for id in 0..3 {
        let cells = row(&stdout, id);
        let address = format!("127.0.0.1:{}", cluster.port(id as usize));
        assert_eq!(
            cells[1..4],
            [address, "up".into(), "member".into()],
            "{stdout}"
        );
        // No earlier call: averaged since the node started (`-` in its first second).
        let rate = &cells[OPS_PER_SECOND];
        assert!(rate.starts_with('~') || rate == "-", "{stdout}");
    }
    let state_files: Vec<_> = std::fs::read_dir(state.0.join("mckv")).unwrap().collect();
    assert_eq!(state_files.len(), 1, "{state_files:?}");

    let second = status(&cluster.config, &state.0);
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(second.status.success(), "{stdout}");
    for id in 0..3 {
        let rate = &row(&stdout, id)[OPS_PER_SECOND];
        assert!(
            rate.parse::<f64>().is_ok(),
            "not since the last call: {stdout}"
        );
    }

    let _ = cluster.nodes[2].child.kill();
    let _ = cluster.nodes[2].child.wait();
    let stopped = status(&cluster.config, &state.0);
    let stdout = String::from_utf8_lossy(&stopped.stdout);
    assert_eq!(stopped.status.code(), Some(1), "{stdout}");
    assert_eq!(
        row(&stdout, 2)[2..],
        ["down", "-", "-", "-", "-", "-", "-"],
        "{stdout}"
    );
    let silent = format!("! node 2 (127.0.0.1:{}) does not answer: ", cluster.port(2));
    assert!(stdout.contains(&silent), "{stdout}");
    for id in 0..2 {
        assert_eq!(row(&stdout, id)[2], "up", "{stdout}");
    }
}

#[test]
fn a_config_that_cannot_be_read_exits_2() {
    let state = TempDir::new("status-no-config");
    let out = status(&state.0.join("missing.ini"), &state.0);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("mckv status: cannot read "));
}
