//! One client connection: its socket, the bytes read but not yet parsed, the
//! replies not yet written, and the reply slots that keep replies in request
//! order while some of them wait for the backend.
//!
//! ```text
//!  socket ─► input ─► (parser) ─► slots: [ready][waiting][ready] ─► output ─► socket
//!                                          ▲ Done from the backend fills a slot
//! ```
//!
//! A waiting slot holds what was asked and when it was parsed; filling it
//! hands that back, for the request's latency ([`super::latency`]). A
//! binary request's slot also holds how its text reply becomes its binary
//! response, which is made as the reply fills the slot.
//!
//! Buffers, and what an idle connection holds. The read buffer and the
//! slot queue are lent from the node's [`SpareBuffers`] while the
//! connection has work, and given back once every byte read is parsed and
//! every reply written (the output goes back to the store's reply
//! buffers), so a connection that waits for its client holds no buffer at
//! all: only this struct. A storage command's data block (`set`, `add`,
//! ..., meta `ms`) longer than a read chunk is not read through
//! the read buffer: the parser names its
//! length ([`protocol::Awaiting::Block`]) and the block is read straight
//! into a buffer of its own, which becomes the value (no copy, no growing
//! of the read buffer by steps). On the way out, a reply that finds the
//! output empty becomes the output (no copy); a big one that finds other
//! replies there waits in its slot until they are written, then does the
//! same; an output grown past [`OUTPUT_KEPT`] is freed once written. A
//! client that moves big values all the time costs no reallocation of
//! these buffers per request: the buffers that grow are the value's and
//! the reply's own.
//!
//! ```text
//!  socket ─► lent read buffer ─► line ─► parser ─► request ─► store
//!     └────► block buffer (a big value) ─┘ (becomes the value)
//!  store ─► reply buffer ─► output (the reply itself when the output is empty) ─► socket
//! ```
//!
//! Back-pressure: a connection whose queued replies or unanswered requests
//! pass a bound is not read (nor parsed) until the client catches up, so a
//! slow reader costs bounded memory: at most `max_reply_buffer` bytes
//! (1 MiB unless configured) plus the replies of [`MAX_IN_FLIGHT`] requests.
//!
//! Flush points: memcached writes a connection's replies only at certain
//! points (after each retrieval command, and when it has parsed all input at
//! hand), and a `get` with an overlong key or a protocol-level close discards
//! every reply made since the last such point. The connection keeps that
//! point ([`Connection::mark_flush_point`]) so [`Connection::discard_since_flush_point`]
//! drops exactly what memcached would.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use super::latency::Asked;
use super::tls::Stream;
use crate::protocol::binary::{Responder, REQUEST_MAGIC};
use crate::protocol::{self, Awaiting, Limits, Parsed};

/// Bytes asked of the socket per read: the read buffer's size.
const READ_CHUNK: usize = 16 * 1024;
/// An output buffer larger than this is freed once written out, so a
/// connection goes back to holding little after a big reply.
pub const OUTPUT_KEPT: usize = 16 * 1024;
/// Spare slot queues the node keeps for the next connection with input.
const SPARE_BUFFERS: usize = 64;
/// Bytes of spare read buffers the node keeps: 64 of [`READ_CHUNK`], or
/// fewer when some grew for long lines (kept too, so a client that sends
/// long multi-get lines all the time does not regrow one per request).
const SPARE_READ_BYTES: usize = 64 * READ_CHUNK;

/// The buffers a connection needs only while it has work, lent by the
/// node: read buffers and reply-slot queues. A connection gives them back
/// when it waits for its client, so an idle one holds neither, and a busy
/// one takes them from here again without allocating.
#[derive(Default)]
pub struct SpareBuffers {
    reads: Vec<Vec<u8>>,
    /// Bytes of `reads`.
    read_bytes: usize,
    slot_queues: Vec<VecDeque<Slot>>,
}

impl SpareBuffers {
    /// A zeroed buffer of at least [`READ_CHUNK`] bytes (zeroed once, when made).
    fn lend_read(&mut self) -> Vec<u8> {
        match self.reads.pop() {
            Some(buffer) => {
                self.read_bytes -= buffer.len();
                buffer
            }
            None => vec![0; READ_CHUNK],
        }
    }

    /// Takes a read buffer back, unless the spares hold enough bytes.
    fn take_back_read(&mut self, buffer: Vec<u8>) {
        if self.read_bytes + buffer.len() <= SPARE_READ_BYTES {
            self.read_bytes += buffer.len();
            self.reads.push(buffer);
        }
    }

    /// Bytes of the spare read buffers.
    pub fn spare_read_bytes(&self) -> usize {
        self.read_bytes
    }

    fn lend_slots(&mut self) -> VecDeque<Slot> {
        self.slot_queues.pop().unwrap_or_default()
    }

    /// Takes an empty slot queue back; one grown past [`MAX_IN_FLIGHT`]'s
    /// worth (it never is: reading stops there) is freed.
    fn take_back_slots(&mut self, slots: VecDeque<Slot>) {
        if slots.capacity() <= MAX_IN_FLIGHT && self.slot_queues.len() < SPARE_BUFFERS {
            self.slot_queues.push(slots);
        }
    }
}

/// A storage command's data block, read apart from its line (which stays
/// unparsed at the head of the read buffer) into the value's own buffer.
struct Block {
    line_len: usize,
    /// Exactly the block's length; `bytes[..filled]` has arrived.
    bytes: Vec<u8>,
    filled: usize,
}
/// Stop reading a client with this many requests still unanswered (their
/// replies are not counted until they come, so this bounds them).
pub const MAX_IN_FLIGHT: usize = 64;

enum Slot {
    /// Owed: what was asked and when, for its latency, and for a binary
    /// request how its (text) reply becomes its response.
    Waiting {
        asked: Asked,
        binary: Option<Box<Responder>>,
    },
    Ready(Vec<u8>),
    /// Discarded before its reply came; it will send nothing.
    Dropped,
}

/// memcached's last flush point: what was owed before it is never discarded.
#[derive(Clone, Copy)]
struct FlushPoint {
    /// The first slot made after the point.
    slot: u64,
    /// The output length at the point, once every slot before it has moved
    /// to the output.
    output: usize,
}

pub struct Connection {
    pub stream: Stream,
    /// Input waits while this many reply bytes are queued (back-pressure).
    max_reply_buffer: usize,
    /// Unique for the life of the process (slab tokens are reused).
    pub id: u64,
    pub addr: SocketAddr,
    /// Read buffer: `input[parsed_to..filled]` is read and not yet parsed;
    /// the rest is zeroed space kept between reads (never zeroed again).
    /// Empty (unallocated) while nothing read waits to be parsed.
    input: Vec<u8>,
    /// A data block being read apart from its line.
    block: Option<Block>,
    parsed_to: usize,
    filled: usize,
    /// Some request was parsed.
    started: bool,
    /// The connection speaks the binary protocol (see [`Connection::speaks_binary`]).
    binary: bool,
    output: Vec<u8>,
    written_to: usize,
    /// Replies not yet in `output`, oldest first; `slots[0]` is `first_slot`.
    slots: VecDeque<Slot>,
    first_slot: u64,
    /// Bytes of the `Ready` replies in `slots`.
    slot_bytes: usize,
    flush_point: FlushPoint,
    /// Bytes of an oversized value still to be discarded.
    pub swallow: usize,
    /// The client sent EOF; no more input will come.
    pub read_closed: bool,
    /// Readiness said the client closed its side: read until EOF.
    pub eof_pending: bool,
    /// Close once every reply has been written (`quit`, protocol close).
    pub close_when_flushed: bool,
    /// Whether the socket is registered for writability.
    pub wants_write: bool,
    /// When the last batch of requests arrived (or the connection opened).
    pub last_command: Instant,
    /// Input was left unread or unparsed because of back-pressure, or
    /// because an admin command waits for the replies before it: once that
    /// lifts, the connection must be serviced again (edge-triggered
    /// readiness will not say so).
    pub stalled: bool,
    /// An admin command waits, unparsed, for the replies of the requests
    /// before it (see `process_input`).
    pub admin_waits: bool,
}

impl Connection {
    /// A connection not read while `max_reply_buffer` reply bytes wait for it.
    pub fn new(stream: Stream, id: u64, addr: SocketAddr, max_reply_buffer: usize) -> Connection {
        Connection {
            stream,
            id,
            addr,
            max_reply_buffer,
            input: Vec::new(),
            block: None,
            parsed_to: 0,
            filled: 0,
            started: false,
            binary: false,
            output: Vec::new(),
            written_to: 0,
            slots: VecDeque::new(),
            first_slot: 0,
            slot_bytes: 0,
            flush_point: FlushPoint { slot: 0, output: 0 },
            swallow: 0,
            read_closed: false,
            eof_pending: false,
            close_when_flushed: false,
            wants_write: false,
            last_command: Instant::now(),
            stalled: false,
            admin_waits: false,
        }
    }

    /// Reads once into the input buffer (borrowed from `buffers` if the
    /// connection holds none), or into the data block being read apart:
    /// `Ok((read, asked))`; `read == 0` is EOF, `read < asked` means the
    /// socket had no more.
    pub fn read_chunk(&mut self, buffers: &mut SpareBuffers) -> io::Result<(usize, usize)> {
        if let Some(block) = self.block.as_mut().filter(|b| b.filled < b.bytes.len()) {
            let asked = block.bytes.len() - block.filled;
            let n = self.stream.read(&mut block.bytes[block.filled..])?;
            block.filled += n;
            return Ok((n, asked));
        }
        if self.input.is_empty() {
            self.input = buffers.lend_read();
        }
        if self.slots.capacity() == 0 {
            self.slots = buffers.lend_slots();
        }
        self.make_room();
        let asked = self.input.len() - self.filled;
        let n = self.stream.read(&mut self.input[self.filled..])?;
        self.filled += n;
        Ok((n, asked))
    }

    /// Gives back what the connection holds only while it has work: the
    /// read buffer once everything read is parsed, the slot queue once no
    /// reply is owed, the output (to `spent`, for the store's replies) once
    /// written. A connection waiting for its client then holds none.
    pub fn give_back_buffers(&mut self, buffers: &mut SpareBuffers, spent: &mut Vec<Vec<u8>>) {
        let holds = self.input.len() | self.slots.capacity() | self.output.capacity();
        if holds == 0 {
            return;
        }
        if self.parsed_to == self.filled && !self.input.is_empty() {
            self.parsed_to = 0;
            self.filled = 0;
            buffers.take_back_read(std::mem::take(&mut self.input));
        }
        if self.slots.is_empty() && self.slots.capacity() > 0 {
            buffers.take_back_slots(std::mem::take(&mut self.slots));
        }
        if self.output.is_empty() && self.output.capacity() > 0 {
            spent.push(std::mem::take(&mut self.output));
        }
    }

    /// Moves the unparsed bytes to the front, and grows the buffer only when
    /// one request (a line: data blocks longer than a read go apart) does
    /// not fit.
    fn make_room(&mut self) {
        if self.parsed_to == self.filled {
            self.parsed_to = 0;
            self.filled = 0;
        }
        if self.input.len() - self.filled >= READ_CHUNK / 2 {
            return;
        }
        if self.parsed_to > 0 {
            self.input.copy_within(self.parsed_to..self.filled, 0);
            self.filled -= self.parsed_to;
            self.parsed_to = 0;
        }
        if self.input.len() - self.filled < READ_CHUNK / 2 {
            let grown = self.input.len() * 2;
            self.input.resize(grown, 0);
        }
    }

    /// Parses the next text request; `None`: more input is needed. A data
    /// block longer than a read chunk is then read apart, into the buffer
    /// that becomes the value; the parse that follows its last byte takes it.
    #[inline]
    pub fn parse_next(&mut self, limits: &Limits) -> Option<Parsed> {
        if self.block.is_some() {
            return self.parse_block(limits);
        }
        match protocol::parse_awaiting(self.unparsed(), limits) {
            Ok(parsed) => Some(parsed),
            Err(awaiting) => {
                self.await_more(awaiting);
                None
            }
        }
    }

    /// The request whose block is being read apart, once all of it is here.
    fn parse_block(&mut self, limits: &Limits) -> Option<Parsed> {
        let block = self.block.as_ref()?;
        if block.filled < block.bytes.len() {
            return None;
        }
        let Block {
            line_len, bytes, ..
        } = self.block.take()?;
        let line = &self.input[self.parsed_to..self.parsed_to + line_len];
        Some(protocol::parse_with_block(line, bytes, limits))
    }

    /// A request waits for more input: a data block longer than a read
    /// chunk is read apart.
    fn await_more(&mut self, awaiting: Awaiting) {
        if let Awaiting::Block {
            line_len,
            block_len,
        } = awaiting
        {
            if block_len > READ_CHUNK {
                self.read_block_apart(line_len, block_len);
            }
        }
    }

    /// Starts reading a data block apart: what of it was already read moves
    /// to the block's buffer (at most a read's worth).
    fn read_block_apart(&mut self, line_len: usize, block_len: usize) {
        let start = self.parsed_to + line_len;
        let here = self.filled - start;
        debug_assert!(here < block_len, "a whole block parses at once");
        // Zeroed by the allocator (fresh pages for a big block), not by a pass here.
        let mut bytes = vec![0; block_len];
        bytes[..here].copy_from_slice(&self.input[start..self.filled]);
        self.filled = start;
        self.block = Some(Block {
            line_len,
            bytes,
            filled: here,
        });
    }

    pub fn unparsed(&self) -> &[u8] {
        &self.input[self.parsed_to..self.filled]
    }

    pub fn consume(&mut self, n: usize) {
        self.parsed_to += n;
        self.started |= n > 0;
    }

    /// Whether the connection speaks the binary protocol: memcached decides
    /// by the first byte a connection sends, once and for good.
    pub fn speaks_binary(&mut self) -> bool {
        if !self.started && !self.binary {
            self.binary = self.unparsed().first() == Some(&REQUEST_MAGIC);
        }
        self.binary
    }

    /// Discards as much of an oversized value as has arrived.
    pub fn swallow_available(&mut self) {
        let n = self.swallow.min(self.unparsed().len());
        self.consume(n);
        self.swallow -= n;
    }

    /// Whether input should wait until the client has taken some output.
    pub fn backpressured(&self) -> bool {
        let queued = self.output.len() - self.written_to + self.slot_bytes;
        queued > self.max_reply_buffer || self.slots.len() >= MAX_IN_FLIGHT
    }

    /// Appends a reply that is ready now, behind any that are still waiting.
    pub fn reply(&mut self, compose: impl FnOnce(&mut Vec<u8>)) {
        if self.slots.is_empty() {
            compose(&mut self.output);
        } else {
            let mut bytes = Vec::new();
            compose(&mut bytes);
            self.slot_bytes += bytes.len();
            self.slots.push_back(Slot::Ready(bytes));
        }
    }

    /// Reserves the place of the reply to `asked`, which will come later
    /// (as text: `binary` turns it into a binary response); returns its slot.
    pub fn reserve_slot(&mut self, asked: Asked, binary: Option<Box<Responder>>) -> u64 {
        self.slots.push_back(Slot::Waiting { asked, binary });
        self.first_slot + self.slots.len() as u64 - 1
    }

    /// Whether `slot` still waits for its reply.
    pub fn is_waiting(&self, slot: u64) -> bool {
        self.waiting_index(slot).is_some()
    }

    /// Where `slot` is in the queue, if it still waits for its reply.
    fn waiting_index(&self, slot: u64) -> Option<usize> {
        let index = slot.checked_sub(self.first_slot)? as usize;
        matches!(self.slots.get(index), Some(Slot::Waiting { .. })).then_some(index)
    }

    /// Fills a waiting slot; a slot already answered (timed out) or dropped
    /// is left alone. Returns what was asked, if the reply was taken.
    /// Reply buffers done with go to `spent`, for the store to reuse.
    pub fn fill_slot(
        &mut self,
        slot: u64,
        reply: Vec<u8>,
        spent: &mut Vec<Vec<u8>>,
    ) -> Option<Asked> {
        let index = self.waiting_index(slot)?;
        let Slot::Waiting { asked, binary } =
            std::mem::replace(&mut self.slots[index], Slot::Dropped)
        else {
            return None;
        };
        let reply = match binary {
            Some(responder) => {
                let mut response = Vec::new();
                if responder.respond(&reply, &mut response) {
                    self.mark_flush_point_after(slot);
                }
                spent.push(reply);
                response
            }
            None => reply,
        };
        self.slot_bytes += reply.len();
        self.slots[index] = Slot::Ready(reply);
        self.release_ready(spent);
        Some(asked)
    }

    /// Moves the replies at the head of the queue that are no longer
    /// waiting to the output; their buffers go to `spent`. A reply longer
    /// than [`OUTPUT_KEPT`] stays at the head while the output holds
    /// others: [`Connection::flush`] moves it in, not copied, once those
    /// are written.
    fn release_ready(&mut self, spent: &mut Vec<Vec<u8>>) {
        loop {
            match self.slots.front() {
                Some(Slot::Waiting { .. }) | None => return,
                Some(Slot::Ready(bytes))
                    if bytes.len() > OUTPUT_KEPT && !self.output.is_empty() =>
                {
                    return
                }
                Some(_) => {}
            }
            if let Some(Slot::Ready(mut bytes)) = self.slots.pop_front() {
                self.slot_bytes -= bytes.len();
                if self.output.is_empty() {
                    // The reply becomes the output: a big value is not copied again.
                    std::mem::swap(&mut self.output, &mut bytes);
                } else {
                    self.output.extend_from_slice(&bytes);
                }
                // An unallocated buffer would only cost the store a malloc.
                if bytes.capacity() > 0 {
                    spent.push(bytes);
                }
            }
            self.first_slot += 1;
            if self.first_slot == self.flush_point.slot {
                self.flush_point.output = self.output.len();
            }
        }
    }

    /// Records a memcached flush point: replies owed so far are kept.
    pub fn mark_flush_point(&mut self) {
        self.flush_point = FlushPoint {
            slot: self.first_slot + self.slots.len() as u64,
            output: self.output.len(),
        };
    }

    /// Records a flush point right after `slot` (memcached wrote out once
    /// it had answered that request), unless a later one is recorded.
    fn mark_flush_point_after(&mut self, slot: u64) {
        if slot + 1 > self.flush_point.slot {
            // The output length is taken when the slot moves to the output.
            self.flush_point = FlushPoint {
                slot: slot + 1,
                output: self.output.len(),
            };
        }
    }

    /// Drops every reply made since the last flush point, as memcached does
    /// when a `get` fails on a long key or the connection is closed.
    pub fn discard_since_flush_point(&mut self, spent: &mut Vec<Vec<u8>>) {
        let point = self.flush_point;
        if point.slot <= self.first_slot {
            // Nothing was waiting at the point, so the output grew after it.
            self.output.truncate(point.output.max(self.written_to));
        }
        let keep = point.slot.saturating_sub(self.first_slot) as usize;
        for slot in self.slots.iter_mut().skip(keep) {
            if let Slot::Ready(bytes) = slot {
                self.slot_bytes -= bytes.len();
            }
            *slot = Slot::Dropped;
        }
        self.release_ready(spent);
    }

    /// Writes queued output until done or the socket would block, moving
    /// in the big replies held back behind it as it empties; returns the
    /// bytes written. Reply buffers done with go to `spent`.
    pub fn flush(&mut self, spent: &mut Vec<Vec<u8>>) -> io::Result<usize> {
        // TLS records first (a handshake's, or what a full socket held back).
        self.stream.flush()?;
        let mut written = 0;
        loop {
            while self.written_to < self.output.len() {
                match self.stream.write(&self.output[self.written_to..]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        self.written_to += n;
                        written += n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(written),
                    Err(e) => return Err(e),
                }
            }
            self.written_to = 0;
            match self.output.capacity() > OUTPUT_KEPT {
                true => self.output = Vec::new(),
                false => self.output.clear(),
            }
            self.release_ready(spent);
            if self.output.is_empty() {
                return Ok(written);
            }
        }
    }

    /// Replies, or TLS records, wait for the socket.
    pub fn has_unsent_output(&self) -> bool {
        self.written_to < self.output.len() || self.stream.wants_write()
    }

    /// Input was held back and what held it has lifted since.
    pub fn may_resume(&self) -> bool {
        let admin_still_waits = self.admin_waits && self.owes_replies();
        self.stalled && !self.backpressured() && !admin_still_waits
    }

    /// How long the client has sent nothing while owed nothing; `None`
    /// while a reply is owed or unsent (waiting for one is not idling).
    pub fn idle_for(&self, now: Instant) -> Option<std::time::Duration> {
        match self.is_drained() {
            true => Some(now.saturating_duration_since(self.last_command)),
            false => None,
        }
    }

    /// Nothing is owed to the client any more.
    pub fn is_drained(&self) -> bool {
        self.slots.is_empty() && !self.has_unsent_output()
    }

    /// Some request still waits for its reply, or a big reply waits to
    /// move to the output (ready replies at the head have moved there,
    /// but a big one held back behind it).
    pub fn owes_replies(&self) -> bool {
        !self.slots.is_empty()
    }

    /// Bytes the read (with a data block being read apart) and the write
    /// buffer hold allocated.
    pub fn buffer_bytes(&self) -> (usize, usize) {
        let block = self.block.as_ref().map_or(0, |b| b.bytes.len());
        (self.input.len() + block, self.output.capacity())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spare_read_buffers_are_reused_grown_or_not_within_their_byte_budget() {
        let mut spare = SpareBuffers::default();
        let fresh = spare.lend_read();
        assert_eq!(fresh.len(), READ_CHUNK);
        let mut grown = fresh;
        grown.resize(4 * READ_CHUNK, 0);
        let at = grown.as_ptr();
        spare.take_back_read(grown);
        // The grown buffer is lent again as it is: no regrowth per request.
        let again = spare.lend_read();
        assert_eq!((again.as_ptr(), again.len()), (at, 4 * READ_CHUNK));
        assert_eq!(spare.spare_read_bytes(), 0);
        // Past the budget, buffers given back are freed.
        for _ in 0..SPARE_READ_BYTES / READ_CHUNK + 5 {
            spare.take_back_read(vec![0; READ_CHUNK]);
        }
        assert_eq!(spare.spare_read_bytes(), SPARE_READ_BYTES);
        spare.take_back_read(again);
        assert_eq!(spare.spare_read_bytes(), SPARE_READ_BYTES);
    }
}
