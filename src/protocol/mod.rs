//! The memcached protocols, as pure functions over bytes: the text protocol
//! here, and the binary one in [`binary`], which decodes into the same
//! [`Command`]s.
//!
//! ```text
//!  client bytes ──► parse::parse ──► Parsed { Action, consumed, swallow }
//!                                        │ Execute(Request) ──► store / engine
//!                                        │ Admin            ──► answered by the node
//!  reply bytes  ◄── reply::*  ◄──────────┘ Reply(text) / Close
//! ```
//!
//! A request is either a data [`Command`] (get, the storage commands, delete,
//! incr/decr, touch, flush_all, the meta commands `mg ms md ma me` read in
//! `meta.rs`), which goes to the store and may be
//! replicated, or an [`Admin`] command (version, verbosity, stats and its
//! groups, cache_memlimit, slabs, show, quit), which the node answers itself.
//!
//! Nothing here touches a socket, a clock or a store, so every rule can be
//! checked by table tests and by the fuzz test in `tests/`.

pub mod base64;
pub mod binary;
pub mod command;
mod keys;
mod meta;
pub mod number;
pub mod parse;
pub mod reply;

pub use command::{
    Admin, Arith, Command, Detail, Get, Key, Meta, MetaArith, MetaFlag, MetaOp, MetaReply, MetaSet,
    Request, StatsGroup, Storage, StorageMode,
};
pub use keys::{Keys, KeysRef};
pub use parse::{
    parse, parse_awaiting, parse_with_block, Action, Awaiting, Incomplete, Limits, Parsed,
};

#[cfg(test)]
mod tests;
