//! The binary protocol on a client connection: each decoded request takes
//! the path a text request of the same kind takes (a store command through
//! the cluster core into a reply slot, an admin command answered here), and
//! its reply is turned into its binary response where it enters the
//! connection's queue ([`crate::protocol::binary`] says how).
//!
//! ```text
//!  decode ─► Execute(meta command) ─► submit_asked(.., Responder) ─► slot ─► respond(text) ─► queue
//!         ─► Admin (version, stat, quit) ─► admin_reply ─► respond(text) ─► queue
//!         ─► Noop / Refuse ─► response at once     Close ─► as a text protocol close
//! ```
//!
//! memcached writes a binary connection's responses at the same points as
//! a text one's (when it has parsed all input at hand), and also after a
//! `noop` and after each error it answers without swallowing a value:
//! those are the flush points here, so a request with a bad magic, which
//! closes the connection at once, drops what memcached would not have
//! written. An error the store answers (a miss, a failed compare) is a
//! flush point once its reply is in ([`Connection::fill_slot`]); one still
//! owed by the cluster when the bad magic is read is dropped with the
//! rest, where memcached, which answers in turn, would have written it.
//!
//! [`Connection::fill_slot`]: super::connection::Connection::fill_slot

use super::clients::{asked_now, observes_earlier_requests};
use super::latency::CommandKind;
use super::Server;
use crate::cluster::Engine;
use crate::protocol::binary::{self, Action};
use crate::protocol::Request;

impl<E: Engine> Server<E> {
    /// Decodes and dispatches the next binary request of connection
    /// `token`; whether one was taken (not: more bytes are needed, or a
    /// `stat` waits for the replies before it).
    pub(super) fn next_binary(&mut self, token: usize) -> bool {
        let conn = &mut self.conns[token];
        let Ok(decoded) = binary::decode(conn.unparsed(), &self.limits) else {
            return false;
        };
        if let Action::Admin(command) = &decoded.action {
            if observes_earlier_requests(command) && conn.owes_replies() {
                // As for a text `stats`: read again once they are answered.
                conn.stalled = true;
                conn.admin_waits = true;
                return false;
            }
        }
        conn.consume(decoded.consumed);
        conn.swallow = decoded.swallow;
        let responder = decoded.responder;
        let asked = asked_now(CommandKind::of_binary(responder.reply()));
        match decoded.action {
            Action::Execute(command) => {
                self.counters.ops += 1;
                let request = Request {
                    command,
                    noreply: false,
                };
                self.submit_asked(token, request, asked, Some(Box::new(responder)));
                return true;
            }
            Action::Admin(command) => {
                let text = self.admin_reply(token, command);
                self.conns[token].reply(|out| {
                    responder.respond(&text, out);
                });
            }
            Action::Noop => {
                self.counters.ops += 1;
                let conn = &mut self.conns[token];
                conn.reply(|out| {
                    responder.respond(b"", out);
                });
                conn.mark_flush_point();
            }
            Action::Refuse { status, close } => {
                self.counters.ops += 1;
                let conn = &mut self.conns[token];
                conn.reply(|out| responder.refuse(status, out));
                if close {
                    conn.close_when_flushed = true;
                } else if conn.swallow == 0 {
                    conn.mark_flush_point();
                }
            }
            Action::Close => {
                let conn = &mut self.conns[token];
                log::debug!("client {}: a binary request with a bad magic", conn.addr);
                conn.discard_since_flush_point(&mut self.spent);
                conn.close_when_flushed = true;
                return true;
            }
        }
        self.latencies.observe(asked);
        true
    }
}
