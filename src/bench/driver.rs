//! One generator thread: a mio loop over its share of a cell's
//! connections. Each connection keeps up to `depth` requests in flight
//! (pipelining), in one of two loops:
//!
//! - closed: a reply that comes back is replaced by a new request at once,
//!   as memtier's `--pipeline` does; latency runs from the write that
//!   carried the request to the read that completed its reply;
//! - open (`rate`): requests fall due on a fixed schedule, each connection
//!   its share of the rate, staggered; a due request waits only for room in
//!   the pipeline, and its latency runs from when it was due, so a server
//!   that stalls is charged for every request it held up (no coordinated
//!   omission, as in wrk2). Sends are paced by the poll timeout, which
//!   Linux counts in whole milliseconds: a request may leave up to 1 ms
//!   after it fell due, and that delay is in its latency.
//!
//! Connects are non-blocking and every wait has an end: a connect or a
//! reply that takes longer than `timeout` is an error, the connection is
//! dropped and made again, and the loop ends at the cell's end whatever
//! the server does. Keys are drawn uniformly (xorshift, seeded per
//! connection); every reply is framed and checked ([`super::framing`]).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::framing::{frame, Expect, Framing, Outcome};
use super::plan::Cell;
use super::stats::Stats;
use super::timer::SendTimer;
use super::workload::Workload;

/// The send timer's token, above every connection's.
const TIMER: Token = Token(usize::MAX - 1);

/// How often timeouts are looked for and dropped connections made again.
const CHECK_EVERY: Duration = Duration::from_millis(10);

/// Input buffer: filled at `in_end`, parsed from `in_start`; never zeroed
/// again. At least this, and room for two of the longest reply.
const IN_BUF: usize = 256 * 1024;

/// When a cell's load starts, when its measured window opens, when it ends.
#[derive(Clone, Copy)]
pub(crate) struct Times {
    pub start: Instant,
    pub measure: Instant,
    pub end: Instant,
}

impl Times {
    /// How far into the measured window `now` is; `None` outside it.
    fn since_measure(&self, now: Instant) -> Option<Duration> {
        (now < self.end)
            .then(|| now.checked_duration_since(self.measure))
            .flatten()
    }
}

/// A thread's counts so far, read by the progress line while it runs.
#[derive(Default)]
pub(crate) struct Live {
    pub completed: AtomicU64,
    pub errors: AtomicU64,
}

impl Live {
    fn publish(&self, stats: &Stats) {
        self.completed.store(stats.completed, Ordering::Relaxed);
        self.errors.store(stats.errors.total(), Ordering::Relaxed);
    }
}

/// What one generator thread drives.
pub(crate) struct Shard {
    pub addr: SocketAddr,
    /// Its connections' numbers among the cell's (they seed the keys and
    /// stagger the open loop's schedule).
    pub ids: Vec<usize>,
    pub cell: Cell,
    pub workload: Arc<Workload>,
    pub times: Times,
    pub timeout: Duration,
    pub sample: Duration,
}

struct Pending {
    expect: Expect,
    /// When the request was due: latency runs from here.
    due: Instant,
    /// When it was queued for writing: the timeout runs from here.
    sent: Instant,
}

/// The open loop's schedule for one connection.
struct Pace {
    interval: Duration,
    next: Instant,
}

struct Conn {
    stream: Option<TcpStream>,
    /// When the connect under way began; `None` once connected.
    connecting_since: Option<Instant>,
    out: Vec<u8>,
    out_at: usize,
    input: Vec<u8>,
    in_start: usize,
    in_end: usize,
    inflight: VecDeque<Pending>,
    rng: u64,
    pace: Option<Pace>,
}

impl Conn {
    fn new(id: usize, cell: &Cell, start: Instant, w: &Workload) -> Conn {
        let pace = cell.rate.map(|rate| {
            let interval = Duration::from_secs_f64(cell.conns as f64 / rate as f64);
            Pace {
                interval,
                next: start + interval.mul_f64(id as f64 / cell.conns as f64),
            }
        });
        Conn {
            stream: None,
            connecting_since: None,
            out: Vec::with_capacity(16 * 1024),
            out_at: 0,
            input: vec![0; IN_BUF.max(2 * w.longest_reply())],
            in_start: 0,
            in_end: 0,
            inflight: VecDeque::new(),
            rng: (0x9e37_79b9_7f4a_7c15 ^ ((id as u64 + 1) * 0x2545_f491_4f6c_dd1d)) | 1,
            pace,
        }
    }

    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn connected(&self) -> bool {
        self.stream.is_some() && self.connecting_since.is_none()
    }

    /// Starts a non-blocking connect; [`Conn::finish_connect`] completes it.
    fn connect(&mut self, addr: SocketAddr, poll: &Poll, token: Token) -> io::Result<()> {
        let mut s = TcpStream::connect(addr)?;
        poll.registry()
            .register(&mut s, token, Interest::READABLE | Interest::WRITABLE)?;
        self.stream = Some(s);
        self.connecting_since = Some(Instant::now());
        Ok(())
    }

    /// After an event on a connecting stream: whether the connect is done
    /// (an error if it failed; events can also be spurious).
    fn finish_connect(&mut self) -> io::Result<bool> {
        let Some(s) = self.stream.as_ref() else {
            return Ok(false);
        };
        if let Some(e) = s.take_error()? {
            return Err(e);
        }
        match s.peer_addr() {
            Ok(_) => {
                s.set_nodelay(true)?;
                self.connecting_since = None;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Forgets the connection; returns how many requests were lost with it.
    fn drop_connection(&mut self, poll: &Poll) -> u64 {
        if let Some(mut s) = self.stream.take() {
            let _ = poll.registry().deregister(&mut s);
        }
        self.connecting_since = None;
        self.out.clear();
        self.out_at = 0;
        self.in_start = 0;
        self.in_end = 0;
        let lost = self.inflight.len() as u64;
        self.inflight.clear();
        lost
    }

    /// When the open loop's next request falls due, if there is room for it.
    fn next_due(&self, depth: usize) -> Option<Instant> {
        let pace = self.pace.as_ref()?;
        (self.connected() && self.inflight.len() < depth).then_some(pace.next)
    }

    /// Queues requests up to `depth` in flight (in the open loop, only
    /// those already due) and writes what the socket takes.
    fn fill_and_send(
        &mut self,
        cell: &Cell,
        w: &Workload,
        now: Instant,
        stats: &mut Stats,
    ) -> io::Result<()> {
        if !self.connected() {
            return Ok(());
        }
        while self.inflight.len() < cell.depth {
            let due = match &mut self.pace {
                None => now,
                Some(pace) if pace.next <= now => {
                    pace.next += pace.interval;
                    pace.next - pace.interval
                }
                Some(_) => break,
            };
            let r = self.next_random();
            let pick = |n: usize| ((r >> 16) % n as u64) as usize;
            let expect = if ((r >> 48) % 100) < u64::from(cell.get_percent) {
                let g = pick(w.gets());
                self.out.extend_from_slice(&w.get_req[g]);
                Expect::Get(g as u32)
            } else {
                self.out.extend_from_slice(&w.set_req[pick(w.keys())]);
                Expect::Set
            };
            self.inflight.push_back(Pending {
                expect,
                due,
                sent: now,
            });
        }
        self.send(stats)
    }

    fn send(&mut self, stats: &mut Stats) -> io::Result<()> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        while self.out_at < self.out.len() {
            match stream.write(&self.out[self.out_at..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out_at += n;
                    stats.bytes_out += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_at = 0;
        Ok(())
    }

    /// Reads until the socket is empty, taking every complete reply each
    /// time the input buffer fills (pipelined big replies outgrow it).
    fn receive(&mut self, w: &Workload, times: &Times, stats: &mut Stats) -> io::Result<()> {
        loop {
            let full = self.read_available(stats)?;
            let taken = self.take_replies(w, times, stats)?;
            if !full {
                return Ok(());
            }
            if !taken {
                return Err(io::Error::other("reply larger than the input buffer"));
            }
        }
    }

    /// Takes every complete reply in the input buffer; whether it took any.
    fn take_replies(&mut self, w: &Workload, times: &Times, stats: &mut Stats) -> io::Result<bool> {
        let now = Instant::now();
        let since_measure = times.since_measure(now);
        let mut taken = false;
        while let Some(p) = self.inflight.front() {
            match frame(&self.input[self.in_start..self.in_end], p.expect, w) {
                Framing::Incomplete => break,
                Framing::Broken(why) => {
                    return Err(io::Error::other(format!("unparsable reply: {why}")))
                }
                Framing::Done(outcome, used) => {
                    self.in_start += used;
                    taken = true;
                    match outcome {
                        Outcome::Ok => {
                            stats.record_ok(now.saturating_duration_since(p.due), since_measure)
                        }
                        Outcome::Miss => stats.record_wrong(true, since_measure),
                        Outcome::Wrong => stats.record_wrong(false, since_measure),
                    }
                    self.inflight.pop_front();
                }
            }
        }
        if self.in_start == self.in_end {
            self.in_start = 0;
            self.in_end = 0;
        } else if self.inflight.is_empty() {
            return Err(io::Error::other("unsolicited bytes from the server"));
        }
        Ok(taken)
    }

    /// Reads until the socket is empty (`Ok(false)`) or the input buffer is
    /// full of unparsed bytes (`Ok(true)`).
    fn read_available(&mut self, stats: &mut Stats) -> io::Result<bool> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(false);
        };
        loop {
            if self.in_end == self.input.len() {
                if self.in_start == 0 {
                    return Ok(true);
                }
                self.input.copy_within(self.in_start..self.in_end, 0);
                self.in_end -= self.in_start;
                self.in_start = 0;
            }
            match stream.read(&mut self.input[self.in_end..]) {
                Ok(0) => return Err(io::Error::other("server closed the connection")),
                Ok(n) => {
                    let room = self.input.len() - self.in_end;
                    self.in_end += n;
                    stats.bytes_in += n as u64;
                    // A short read emptied the socket: with epoll's edge
                    // triggering, new bytes bring a new event, so the read
                    // that would only say WouldBlock is saved (as tokio does).
                    if n < room {
                        return Ok(false);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether the connect under way, or the oldest request in flight, has
    /// waited longer than `timeout`.
    fn late(&self, now: Instant, timeout: Duration) -> bool {
        let since = self
            .connecting_since
            .or_else(|| self.inflight.front().map(|p| p.sent));
        since.is_some_and(|t| now.duration_since(t) > timeout)
    }
}

/// One generator thread: drives the shard's connections until the cell's
/// end and returns what it counted.
pub(crate) fn drive(shard: &Shard, live: &Live) -> Stats {
    let times = shard.times;
    let mut stats = Stats::new(times.end - times.measure, shard.sample);
    let mut poll = Poll::new().expect("mio poll");
    let mut events = Events::with_capacity(256);
    // Only the open loop has sends to wake for.
    let mut timer = shard
        .cell
        .rate
        .map(|_| SendTimer::new(poll.registry(), TIMER).expect("a timerfd"));
    let mut conns: Vec<Conn> = shard
        .ids
        .iter()
        .map(|&id| Conn::new(id, &shard.cell, times.start, &shard.workload))
        .collect();
    for (i, c) in conns.iter_mut().enumerate() {
        if let Err(e) = c.connect(shard.addr, &poll, Token(i)) {
            stats.record_io_error(&e, 0, None);
        }
    }
    if let Some(wait) = times.start.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
    let mut next_check = Instant::now() + CHECK_EVERY;
    loop {
        let now = Instant::now();
        if now >= times.end {
            break;
        }
        if let Some(timer) = &mut timer {
            let due = conns
                .iter()
                .filter_map(|c| c.next_due(shard.cell.depth))
                .min();
            if let Some(due) = due {
                timer.arm(due).expect("arm the send timer");
            }
        }
        let nearest = times.end.min(next_check);
        if let Err(e) = poll.poll(&mut events, Some(nearest.saturating_duration_since(now))) {
            if e.kind() != io::ErrorKind::Interrupted {
                panic!("poll: {e}");
            }
        }
        for event in events.iter() {
            if event.token() == TIMER {
                if let Some(timer) = &mut timer {
                    timer.fired();
                }
                continue;
            }
            // Spurious events happen, also for connections dropped since.
            let Some(c) = conns.get_mut(event.token().0) else {
                continue;
            };
            if let Err(e) = on_event(c, event, shard, &mut stats) {
                let lost = c.drop_connection(&poll);
                stats.record_io_error(&e, lost, times.since_measure(Instant::now()));
            }
        }
        let now = Instant::now();
        if shard.cell.rate.is_some() {
            send_due(&mut conns, shard, now, &poll, &mut stats);
        }
        if now >= next_check {
            next_check = now + CHECK_EVERY;
            check_connections(&mut conns, shard, now, &poll, &mut stats);
        }
        live.publish(&stats);
    }
    live.publish(&stats);
    stats
}

/// Reads, completes a connect, writes: whatever the event allows.
fn on_event(
    c: &mut Conn,
    event: &mio::event::Event,
    shard: &Shard,
    stats: &mut Stats,
) -> io::Result<()> {
    if c.stream.is_none() {
        return Ok(());
    }
    if c.connecting_since.is_some() && !c.finish_connect()? {
        return Ok(());
    }
    if event.is_readable() || event.is_read_closed() || event.is_error() {
        c.receive(&shard.workload, &shard.times, stats)?;
    }
    let now = Instant::now();
    if now < shard.times.end {
        c.fill_and_send(&shard.cell, &shard.workload, now, stats)?;
    }
    Ok(())
}

/// The open loop: sends what fell due on connections no event woke.
fn send_due(conns: &mut [Conn], shard: &Shard, now: Instant, poll: &Poll, stats: &mut Stats) {
    for c in conns.iter_mut() {
        if c.next_due(shard.cell.depth).is_some_and(|due| due <= now) {
            if let Err(e) = c.fill_and_send(&shard.cell, &shard.workload, now, stats) {
                let lost = c.drop_connection(poll);
                stats.record_io_error(&e, lost, shard.times.since_measure(now));
            }
        }
    }
}

/// Drops connections whose connect or oldest reply is late (their
/// requests count as timeouts) and connects again those that are down.
fn check_connections(
    conns: &mut [Conn],
    shard: &Shard,
    now: Instant,
    poll: &Poll,
    stats: &mut Stats,
) {
    let since_measure = shard.times.since_measure(now);
    for (i, c) in conns.iter_mut().enumerate() {
        if c.late(now, shard.timeout) {
            if c.connecting_since.is_some() {
                c.drop_connection(poll);
                let e = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
                stats.record_io_error(&e, 0, since_measure);
            } else {
                let lost = c.drop_connection(poll);
                stats.record_timeouts(lost, since_measure);
            }
        }
        if c.stream.is_none() {
            if let Err(e) = c.connect(shard.addr, poll, Token(i)) {
                stats.record_io_error(&e, 0, since_measure);
            }
        }
    }
}
