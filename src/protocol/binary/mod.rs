//! memcached's binary protocol, as pure functions over bytes: a request is
//! decoded into the store command that does its work, and that command's
//! text reply is encoded back into the binary response memcached 1.6.18
//! sends. memcached chooses the protocol per connection, by its first byte
//! ([`REQUEST_MAGIC`]); so does the node.
//!
//! ```text
//!  client bytes ──► request::decode ──► Decoded { Action, Responder, consumed, swallow }
//!                                          │ Execute(meta command) ──► store / engine, like text
//!                                          │ Admin (version, stat, quit) ──► answered by the node
//!  response bytes ◄── Responder::respond ◄─┘ the text reply (or refuse: an error at once)
//! ```
//!
//! Why meta commands: memcached's meta protocol is the text form of what
//! the binary protocol can ask (compare-and-swap on any write, create on
//! an `incr` miss, the cas unique and flags returned), so a binary request
//! becomes the `mg`, `ms`, `md` or `ma` that does the same store work, and
//! is replicated, ordered and counted exactly as that meta command is in
//! every mode. Only the request decoding ([`decode`]) and the response
//! encoding ([`Responder`]) are the binary protocol's own; the engines, the
//! stores and the peer protocol never see it.
//!
//! Nothing here touches a socket, a clock or a store, so every rule can be
//! checked by table tests and by the fuzz test in `tests/`.

mod header;
mod request;
mod response;

pub use header::{Status, HEADER_LEN, REQUEST_MAGIC};
pub use request::{decode, Action, Decoded};
pub use response::{Reply, Responder};

#[cfg(test)]
mod tests;
