//! The memcached text protocol, as pure functions over bytes.
//!
//! ```text
//!  client bytes ──► parse::parse ──► Parsed { Action, consumed, swallow }
//!                                        │ Execute(Request) ──► store / engine
//!  reply bytes  ◄── reply::*  ◄──────────┘ Reply(text) / Close
//! ```
//!
//! Nothing here touches a socket, a clock or a store, so every rule can be
//! checked by table tests and by the fuzz test in `tests/`.

pub mod command;
pub mod number;
pub mod parse;
pub mod reply;

pub use command::{Arith, Command, Get, Key, Request, StatsGroup, Storage, StorageMode};
pub use parse::{parse, Action, Incomplete, Limits, Parsed};

#[cfg(test)]
mod tests;
