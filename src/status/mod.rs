//! `mckv status --config FILE`: the whole cluster in one table, for people
//! and for scripts and health checks (the exit status says whether every
//! node answered).
//!
//! ```text
//!  config ─► every node at once: `stats` + `show`, within 1 s to connect
//!            and 2 s to answer (probe.rs) ─► a Sample, or why none
//!  last call's samples (rates.rs) ─► ops/s since then ─┐
//!  the samples ─► what the nodes disagree about (agreement.rs) ─┴─► table + notes
//! ```
//!
//! One row per node of the config: its id, client address, whether it
//! answered, its role and view (`<epoch>:<members>`), Lamport clock,
//! delivery queue, ops/s, and the replication lag it reports. The cells a
//! disagreement concerns end in `!`, with a note under the table.

mod agreement;
mod probe;
mod rates;

use std::io::{self, Write};
use std::path::Path;

use agreement::{Column, Findings};
use probe::{Probe, Sample};
use rates::{Previous, Rate};

use crate::cluster::NodeId;
use crate::config::{Config, NodeConfig};

/// Whether every node of the config answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    AllAnswered,
    SomeSilent,
}

const HEADER: [&str; 9] = [
    "NODE", "ADDRESS", "UP", "ROLE", "VIEW", "CLOCK", "QUEUE", "OPS/S", "LAG",
];

/// Asks every node of the config at `config`, prints the table to `out`,
/// and keeps this call's samples for the next one's ops/s.
pub fn run(config: &Path, out: &mut impl Write) -> Result<Health, String> {
    let nodes = Config::load(config).map_err(|e| e.to_string())?.nodes;
    let probes = probe_all(&nodes);
    let answered: Vec<(NodeId, &Sample)> = nodes
        .iter()
        .zip(&probes)
        .filter_map(|(node, probe)| probe.as_ref().ok().map(|s| (node.id, s)))
        .collect();
    let state = rates::state_file(config);
    let previous = state.as_deref().map(Previous::load).unwrap_or_default();
    let table = Table {
        nodes: &nodes,
        probes: &probes,
        previous: &previous,
        findings: agreement::find(&answered),
    };
    table.print(out).map_err(|e| format!("cannot print: {e}"))?;
    if let Some(path) = &state {
        if let Err(e) = rates::save(path, &answered) {
            eprintln!("mckv status: ops/s not kept in {}: {e}", path.display());
        }
    }
    Ok(match answered.len() == nodes.len() {
        true => Health::AllAnswered,
        false => Health::SomeSilent,
    })
}

/// Every node's answer, asked all at once so the slowest bounds the wait.
fn probe_all(nodes: &[NodeConfig]) -> Vec<Probe> {
    std::thread::scope(|scope| {
        let asking: Vec<_> = nodes
            .iter()
            .map(|node| scope.spawn(|| probe::probe(&node.client)))
            .collect();
        asking
            .into_iter()
            .map(|asked| {
                asked
                    .join()
                    .unwrap_or_else(|_| Err("the probe failed".into()))
            })
            .collect()
    })
}

/// What one call prints.
struct Table<'a> {
    nodes: &'a [NodeConfig],
    probes: &'a [Probe],
    previous: &'a Previous,
    findings: Findings,
}

impl Table<'_> {
    fn print(&self, out: &mut impl Write) -> io::Result<()> {
        let mut rows = vec![HEADER.map(String::from).to_vec()];
        rows.extend(
            self.nodes
                .iter()
                .zip(self.probes)
                .map(|(n, p)| self.row(n, p)),
        );
        let widths: Vec<usize> = (0..HEADER.len())
            .map(|column| rows.iter().map(|r| r[column].len()).max().unwrap_or(0))
            .collect();
        for row in &rows {
            writeln!(out, "{}", aligned(row, &widths))?;
        }
        for note in self.notes() {
            writeln!(out, "{note}")?;
        }
        Ok(())
    }

    fn row(&self, node: &NodeConfig, probe: &Probe) -> Vec<String> {
        let mark = |column: Column, text: String| match self
            .findings
            .marked
            .contains(&(node.id, column))
        {
            true => text + "!",
            false => text,
        };
        let id = mark(Column::Node, node.id.to_string());
        let Ok(sample) = probe else {
            let mut row = vec![id, node.client.clone(), "down".to_string()];
            row.resize(HEADER.len(), "-".to_string());
            return row;
        };
        vec![
            id,
            node.client.clone(),
            mark(Column::Up, "up".to_string()),
            sample.role.clone(),
            mark(Column::View, agreement::view_text(sample)),
            sample.clock.to_string(),
            sample.queue.to_string(),
            self.previous.rate(node.id, sample).to_string(),
            sample
                .lag_ms
                .map_or("-".to_string(), |ms| format!("{ms}ms")),
        ]
    }

    /// Under the table: why each silent node is silent, each finding, and
    /// what a `~` rate means when one is shown.
    fn notes(&self) -> Vec<String> {
        let silent = self
            .nodes
            .iter()
            .zip(self.probes)
            .filter_map(|(node, probe)| {
                let why = probe.as_ref().err()?;
                Some(format!(
                    "! node {} ({}) does not answer: {why}",
                    node.id, node.client
                ))
            });
        let mut notes: Vec<String> = silent.collect();
        notes.extend(self.findings.notes.iter().map(|n| format!("! {n}")));
        let averaged = self.nodes.iter().zip(self.probes).any(|(node, probe)| {
            let rate = probe.as_ref().map(|s| self.previous.rate(node.id, s));
            matches!(rate, Ok(Rate::SinceStart(_)))
        });
        if averaged {
            notes.push(
                "~ ops/s averaged since the node started: no earlier call saw this run of it \
                 (after a stats reset, requests since the reset)"
                    .to_string(),
            );
        }
        notes
    }
}

/// `cells` padded to `widths`, two spaces apart, without trailing spaces.
fn aligned(cells: &[String], widths: &[usize]) -> String {
    let padded: Vec<String> = cells
        .iter()
        .zip(widths)
        .map(|(cell, &width)| format!("{cell:width$}"))
        .collect();
    padded.join("  ").trim_end().to_string()
}
