//! What the nodes that answered disagree about, each finding a note under
//! the table and a `!` on the cells it concerns:
//!
//! - a node that answers as another id than the config gives its address;
//! - nodes in different modes;
//! - nodes in different views (epoch or members): the nodes outside the
//!   view most of them share are marked, or all when no view has most;
//! - a node whose view leaves out a node that answers here and that
//!   another node holds up;
//! - a node that answers here while every other node holds it down (cut
//!   off from its peers, not from this machine).
//!
//! A view change makes views differ for a moment: these are worth a look,
//! not by themselves a failure (`mckv status` exits 0 on them).

use std::collections::{BTreeMap, BTreeSet};

use super::probe::Sample;
use crate::cluster::NodeId;

/// A cell of the table a finding can mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Column {
    Node,
    Up,
    View,
}

/// The marked cells, by node id in the config, and a note on each finding.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Findings {
    pub marked: BTreeSet<(NodeId, Column)>,
    pub notes: Vec<String>,
}

impl Findings {
    fn mark(&mut self, node: NodeId, column: Column) {
        self.marked.insert((node, column));
    }
}

/// The findings among `answered`: (node id in the config, its sample).
pub fn find(answered: &[(NodeId, &Sample)]) -> Findings {
    let mut findings = Findings::default();
    identities(answered, &mut findings);
    modes(answered, &mut findings);
    views(answered, &mut findings);
    left_out(answered, &mut findings);
    cut_off(answered, &mut findings);
    findings
}

/// `3:0,1,2`: a view's epoch and members; `none` for a node in no view
/// yet (just started, it has not joined one).
pub fn view_text(sample: &Sample) -> String {
    match sample.view.is_empty() {
        true => "none".to_string(),
        false => format!("{}:{}", sample.epoch, ids(&sample.view)),
    }
}

fn ids(nodes: &[NodeId]) -> String {
    let ids: Vec<String> = nodes.iter().map(NodeId::to_string).collect();
    ids.join(",")
}

fn identities(answered: &[(NodeId, &Sample)], findings: &mut Findings) {
    for (node, sample) in answered {
        if sample.id != *node {
            findings.mark(*node, Column::Node);
            findings.notes.push(format!(
                "node {node}'s address answers as node {}",
                sample.id
            ));
        }
    }
}

/// Nodes grouped by what `key` gives for each, largest group first.
fn groups<K: Ord + Clone>(
    answered: &[(NodeId, &Sample)],
    key: impl Fn(&Sample) -> K,
) -> Vec<(K, Vec<NodeId>)> {
    let mut by_key: BTreeMap<K, Vec<NodeId>> = BTreeMap::new();
    for (node, sample) in answered {
        by_key.entry(key(sample)).or_default().push(*node);
    }
    let mut groups: Vec<(K, Vec<NodeId>)> = by_key.into_iter().collect();
    groups.sort_by_key(|(_, nodes)| std::cmp::Reverse(nodes.len()));
    groups
}

/// How a group of nodes is named in a note: `node 1`, `nodes 0, 2`.
fn nodes_text(nodes: &[NodeId]) -> String {
    let list: Vec<String> = nodes.iter().map(NodeId::to_string).collect();
    match nodes.len() {
        1 => format!("node {}", list[0]),
        _ => format!("nodes {}", list.join(", ")),
    }
}

fn describe<K>(groups: &[(K, Vec<NodeId>)], name: impl Fn(&K) -> String) -> String {
    let parts: Vec<String> = groups
        .iter()
        .map(|(key, nodes)| format!("{} {}", nodes_text(nodes), name(key)))
        .collect();
    parts.join("; ")
}

fn modes(answered: &[(NodeId, &Sample)], findings: &mut Findings) {
    let groups = groups(answered, |s| s.mode.clone());
    if groups.len() > 1 {
        let text = describe(&groups, |mode| format!("run {mode}"));
        findings.notes.push(format!("modes differ: {text}"));
    }
}

fn views(answered: &[(NodeId, &Sample)], findings: &mut Findings) {
    let groups = groups(answered, |s| (s.epoch, s.view.clone()));
    if groups.len() < 2 {
        return;
    }
    // Most nodes share the first view, unless the next is as common.
    let shared = groups[0].1.len() > groups[1].1.len();
    let outside = groups.iter().skip(usize::from(shared));
    for node in outside.flat_map(|(_, nodes)| nodes) {
        findings.mark(*node, Column::View);
    }
    let text = describe(&groups, |(epoch, view)| match view.is_empty() {
        true => "in no view".to_string(),
        false => format!("in view {epoch}:{}", ids(view)),
    });
    findings.notes.push(format!("views differ: {text}"));
}

/// A node in no view leaves nobody out: it is in none (`views` and
/// `cut_off` say so).
fn left_out(answered: &[(NodeId, &Sample)], findings: &mut Findings) {
    let in_a_view = answered.iter().filter(|(_, s)| !s.view.is_empty());
    for (node, sample) in in_a_view {
        for (other, _) in answered {
            if other == node || sample.view.contains(other) {
                continue;
            }
            let seen_by = answered
                .iter()
                .find(|(by, s)| by != node && by != other && s.sees_up.contains(other));
            if let Some((by, _)) = seen_by {
                findings.mark(*node, Column::View);
                findings.notes.push(format!(
                    "node {node}'s view {} leaves out node {other}, which node {by} holds up",
                    view_text(sample)
                ));
            }
        }
    }
}

fn cut_off(answered: &[(NodeId, &Sample)], findings: &mut Findings) {
    for (node, _) in answered {
        let others: Vec<NodeId> = answered
            .iter()
            .map(|(other, _)| *other)
            .filter(|other| other != node)
            .collect();
        let holds_it_up = |other: &NodeId| {
            let sample = answered.iter().find(|(id, _)| id == other);
            sample.is_some_and(|(_, s)| s.sees_up.contains(node))
        };
        if !others.is_empty() && !others.iter().any(holds_it_up) {
            findings.mark(*node, Column::Up);
            findings.notes.push(format!(
                "node {node} answers here, but {} {} it down",
                nodes_text(&others),
                if others.len() == 1 { "holds" } else { "hold" }
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: NodeId, epoch: u64, view: &[NodeId], sees_up: &[NodeId]) -> Sample {
        Sample {
            id,
            pid: 1,
            uptime_s: 1,
            at_ms: 1,
            mode: "linearizable".into(),
            role: "member".into(),
            epoch,
            view: view.to_vec(),
            clock: 1,
            queue: 0,
            ops: 0,
            lag_ms: Some(0),
            sees_up: sees_up.to_vec(),
        }
    }

    fn findings(samples: &[Sample]) -> Findings {
        let answered: Vec<(NodeId, &Sample)> = samples.iter().map(|s| (s.id, s)).collect();
        find(&answered)
    }

    #[test]
    fn nodes_that_agree_have_nothing_marked() {
        let all = [
            node(0, 3, &[0, 1, 2], &[1, 2]),
            node(1, 3, &[0, 1, 2], &[0, 2]),
            node(2, 3, &[0, 1, 2], &[0, 1]),
        ];
        assert_eq!(findings(&all), Findings::default());
        let two_of_three = [node(0, 4, &[0, 1], &[1]), node(1, 4, &[0, 1], &[0])];
        assert_eq!(findings(&two_of_three), Findings::default());
    }

    #[test]
    fn a_node_in_another_view_is_marked() {
        let found = findings(&[
            node(0, 4, &[0, 1], &[1]),
            node(1, 4, &[0, 1], &[0]),
            node(2, 3, &[0, 1, 2], &[0, 1]),
        ]);
        assert!(found.marked.contains(&(2, Column::View)), "{found:?}");
        assert!(!found.marked.contains(&(0, Column::View)), "{found:?}");
        assert!(
            found
                .notes
                .contains(&"views differ: nodes 0, 1 in view 4:0,1; node 2 in view 3:0,1,2".into()),
            "{found:?}"
        );
    }

    #[test]
    fn a_view_that_leaves_out_a_node_another_holds_up_is_marked() {
        let found = findings(&[
            node(0, 4, &[0, 1], &[1]),
            node(1, 5, &[0, 1, 2], &[0, 2]),
            node(2, 5, &[0, 1, 2], &[1]),
        ]);
        assert!(found.marked.contains(&(0, Column::View)), "{found:?}");
        let note = "node 0's view 4:0,1 leaves out node 2, which node 1 holds up";
        assert!(found.notes.contains(&note.to_string()), "{found:?}");
    }

    #[test]
    fn a_node_in_no_view_yet_is_said_to_be_in_none() {
        let found = findings(&[
            node(0, 3, &[0, 1], &[1]),
            node(1, 3, &[0, 1], &[0]),
            node(2, 0, &[], &[]),
        ]);
        let notes = [
            "views differ: nodes 0, 1 in view 3:0,1; node 2 in no view",
            "node 2 answers here, but nodes 0, 1 hold it down",
        ];
        assert_eq!(found.notes, notes);
        assert_eq!(view_text(&node(2, 0, &[], &[])), "none");
    }

    #[test]
    fn a_node_every_other_holds_down_is_marked_up_but_cut_off() {
        let found = findings(&[
            node(0, 4, &[0, 1], &[1]),
            node(1, 4, &[0, 1], &[0]),
            node(2, 3, &[0, 1, 2], &[]),
        ]);
        assert!(found.marked.contains(&(2, Column::Up)), "{found:?}");
        let note = "node 2 answers here, but nodes 0, 1 hold it down";
        assert!(found.notes.contains(&note.to_string()), "{found:?}");
    }

    #[test]
    fn an_address_answering_as_another_node_is_marked() {
        let mut wrong = node(5, 1, &[0, 1], &[1]);
        wrong.mode = "eventual".into();
        let right = node(1, 1, &[0, 1], &[0]);
        let found = find(&[(0, &wrong), (1, &right)]);
        assert!(found.marked.contains(&(0, Column::Node)), "{found:?}");
        assert!(found
            .notes
            .contains(&"node 0's address answers as node 5".into()));
        assert!(found.notes.iter().any(|n| n.starts_with("modes differ: ")));
    }
}
