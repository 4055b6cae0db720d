//! Commands the node answers itself, in their place among a connection's
//! replies: `version`, `verbosity`, `stats` (and its groups), `show`, `quit`.

use super::stats::Report;
use super::Server;
use crate::cluster::Engine;
use crate::protocol::{reply, Admin, StatsGroup};

impl<E: Engine> Server<E> {
    /// Answers a command the node handles itself, in its place among the
    /// connection's replies.
    pub(super) fn answer_admin(&mut self, token: usize, command: Admin, noreply: bool) {
        self.counters.ops += 1;
        let report = Report {
            cluster: &self.settings.cluster,
            config: &self.settings.node,
            members: &self.settings.members,
            started: self.started,
            now: self.millis(),
            counters: &self.counters,
            backend: &self.backend.counters,
            node: &self.node,
            peers: self.peers.as_ref(),
        };
        let mut out = Vec::new();
        match command {
            Admin::Version => reply::version(&mut out),
            Admin::Verbosity => out.extend_from_slice(reply::OK),
            Admin::Stats(StatsGroup::General) => report.general(&mut out),
            Admin::Stats(StatsGroup::Settings) => report.settings(&mut out),
            Admin::Stats(StatsGroup::Reset) => {
                self.counters.reset();
                self.backend.counters.reset();
                out.extend_from_slice(reply::RESET);
            }
            Admin::Show => report.show(&mut out),
            Admin::Quit => self.conns[token].close_when_flushed = true,
        }
        if !noreply {
            self.conns[token].reply(|o| o.extend_from_slice(&out));
        }
    }
}
