//! Whose a data directory is: the cluster's name, the node's id and the
//! kind of log it holds, in a small text file `IDENTITY`, written (and
//! fsynced, with the directory) at first use and checked at every start,
//! under the directory's lock and before anything is replayed. A
//! directory copied from another cluster, or from another node of the same
//! one, is refused with both identities named, instead of being adopted:
//! a strong cluster would elect the copy's log and hand it to every
//! member, an eventual one would merge it into every replica.
//!
//! ```text
//!  # mckv data directory: whose it is (checked at every start)
//!  cluster = alpha
//!  node = 2
//!  kind = strong-of-several
//!  consistency = linearizable
//! ```
//!
//! The kind is what replay depends on: a one-node cluster's log of key
//! states, a strong cluster's marked log, or an eventual or causal node's
//! journal; another kind's log cannot be read back. The consistency mode is
//! recorded, to be named in messages, but not compared: the two modes of a
//! kind write and replay the same records, so a whole cluster restarted in
//! the other mode of its kind (linearizable and sequential; eventual and
//! causal) keeps its data, which is what an operator changing the mode
//! wants. (An eventual store switched to causal is not causally closed:
//! causal order holds for the writes made after the switch.) Clusters are told apart by name only: two left with the default
//! name (`mckv`) are not.
//!
//! A directory with data but no `IDENTITY` was written by an earlier build:
//! recovery's own checks of the records (`recover.rs`) still refuse another
//! kind's log, and the file is written once the replay succeeded.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use super::writer::sync_dir;
use crate::config::{ClusterConfig, Consistency};

/// The identity file's name in the data directory.
pub const FILE: &str = "IDENTITY";

/// The kind of log a data directory holds: what replay depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    /// A one-node cluster's key states.
    OneNode,
    /// A linearizable or sequential cluster of several: marked after each
    /// delivered write.
    Marked,
    /// An eventual or causal cluster of several: the store side's own
    /// records.
    Journaled,
}

impl LogKind {
    fn name(self) -> &'static str {
        match self {
            LogKind::OneNode => "one-node",
            LogKind::Marked => "strong-of-several",
            LogKind::Journaled => "eventual-or-causal",
        }
    }

    fn parse(name: &str) -> Option<LogKind> {
        [LogKind::OneNode, LogKind::Marked, LogKind::Journaled]
            .into_iter()
            .find(|kind| kind.name() == name)
    }
}

/// Whose a data directory is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub cluster: String,
    pub node: u32,
    pub kind: LogKind,
    /// Named in messages, not compared (see the module doc).
    pub consistency: Consistency,
}

impl Identity {
    /// Node `node` of `cluster`, logging as `kind` (a one-node cluster is
    /// linearizable whatever its config says).
    pub fn of(cluster: &ClusterConfig, node: u32, kind: LogKind) -> Identity {
        let consistency = match kind {
            LogKind::OneNode => Consistency::Linearizable,
            _ => cluster.consistency,
        };
        Identity {
            cluster: cluster.name.clone(),
            node,
            kind,
            consistency,
        }
    }

    /// Whether a directory of `self`'s may be used as `other`'s.
    fn same_owner(&self, other: &Identity) -> bool {
        (&self.cluster, self.node, self.kind) == (&other.cluster, other.node, other.kind)
    }

    fn encode(&self) -> String {
        format!(
            "# mckv data directory: whose it is (checked at every start)\n\
             cluster = {}\nnode = {}\nkind = {}\nconsistency = {}\n",
            self.cluster,
            self.node,
            self.kind.name(),
            self.consistency.name()
        )
    }

    fn parse(text: &str) -> Result<Identity, String> {
        let (mut cluster, mut node, mut kind, mut consistency) = (None, None, None, None);
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| format!("{line:?} is not key = value"))?;
            match key {
                "cluster" => cluster = Some(value.to_string()),
                "node" => node = Some(value.parse().map_err(|_| format!("node {value:?}"))?),
                "kind" => kind = Some(LogKind::parse(value).ok_or(format!("kind {value:?}"))?),
                "consistency" => consistency = Some(value.parse()?),
                other => return Err(format!("unknown key {other:?}")),
            }
        }
        match (cluster, node, kind, consistency) {
            (Some(cluster), Some(node), Some(kind), Some(consistency)) => Ok(Identity {
                cluster,
                node,
                kind,
                consistency,
            }),
            _ => Err("cluster, node, kind or consistency missing".into()),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = match self.kind {
            LogKind::OneNode => "one node",
            _ => self.consistency.name(),
        };
        write!(
            f,
            "node {} of cluster '{}' ({how})",
            self.node, self.cluster
        )
    }
}

/// Checks `dir`'s identity file against `me`: `Ok(true)` if it is
/// `me`'s, `Ok(false)` if there is none, an error naming both if it is
/// another's (or unreadable).
pub fn check(dir: &Path, me: &Identity) -> io::Result<bool> {
    let text = match fs::read_to_string(dir.join(FILE)) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io::Error::new(e.kind(), format!("reading {FILE}: {e}"))),
    };
    let theirs = Identity::parse(&text).map_err(|why| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{FILE} is unreadable ({why}); fix it, or move the directory away to start without it"),
        )
    })?;
    if !theirs.same_owner(me) {
        // Only the name differs: perhaps the operator renamed the cluster,
        // and moving every node's directory away would empty it.
        let renamed = (theirs.node, theirs.kind) == (me.node, me.kind);
        let what_to_do = match renamed {
            true => format!(
                "if the cluster was renamed, write its new name in {FILE} (`cluster = {}`); \
                 else move it away to start without it",
                me.cluster
            ),
            false => "move it away to start without it".to_string(),
        };
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("belongs to {theirs}; this is {me}: {what_to_do}"),
        ));
    }
    Ok(true)
}

/// Writes `me` as `dir`'s identity file (through a temporary file and a
/// rename), fsynced with the directory.
pub fn write(dir: &Path, me: &Identity) -> io::Result<()> {
    let tmp = dir.join(format!("{FILE}.tmp"));
    let mut file = File::create(&tmp)?;
    file.write_all(me.encode().as_bytes())?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join(FILE))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_reads_back_as_written() {
        let me = Identity {
            cluster: "alpha".into(),
            node: 2,
            kind: LogKind::Marked,
            consistency: Consistency::Sequential,
        };
        assert_eq!(Identity::parse(&me.encode()), Ok(me.clone()));
        assert_eq!(me.to_string(), "node 2 of cluster 'alpha' (sequential)");
        assert!(Identity::parse("cluster = alpha\nnode = 2\n").is_err());
        assert!(
            Identity::parse("cluster = a\nnode = x\nkind = one-node\nconsistency = causal")
                .is_err()
        );
    }
}
