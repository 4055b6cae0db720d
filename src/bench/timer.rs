//! The open loop's send timer: a Linux timerfd the generator's poll waits
//! on. epoll's own timeout counts whole milliseconds, so a loop paced by it
//! would send a request up to 1 ms after it fell due and charge that delay
//! to the server; a timerfd fires within the thread's timer slack, which
//! the generator thread sets from the kernel's default 50 µs to 1 µs.

use std::fs::File;
use std::io::{self, Read};
use std::num::NonZeroU64;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use rustix::thread::set_current_timer_slack;
use rustix::time::{
    timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags,
    Timespec,
};

pub(crate) struct SendTimer {
    fd: File,
    /// The deadline it is armed for, so an unchanged one costs no syscall.
    armed_for: Option<Instant>,
}

/// The calling thread's timer slack, in nanoseconds.
const SLACK_NS: u64 = 1_000;

impl SendTimer {
    /// A timer for the calling thread's poll, whose timer slack it narrows.
    pub fn new(registry: &Registry, token: Token) -> io::Result<SendTimer> {
        set_current_timer_slack(NonZeroU64::new(SLACK_NS))?;
        let fd: OwnedFd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        registry.register(&mut SourceFd(&fd.as_raw_fd()), token, Interest::READABLE)?;
        Ok(SendTimer {
            fd: File::from(fd),
            armed_for: None,
        })
    }

    /// Makes the timer fire at `deadline` (at once if it has passed).
    pub fn arm(&mut self, deadline: Instant) -> io::Result<()> {
        if self.armed_for == Some(deadline) {
            return Ok(());
        }
        // A zero time would disarm the timer: one nanosecond is "now".
        let after = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_nanos(1));
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let value = Timespec {
            tv_sec: after.as_secs() as _,
            tv_nsec: after.subsec_nanos().into(),
        };
        let spec = Itimerspec {
            it_interval: zero,
            it_value: value,
        };
        timerfd_settime(&self.fd, TimerfdTimerFlags::empty(), &spec)?;
        self.armed_for = Some(deadline);
        Ok(())
    }

    /// After it fired: takes the expiry count, so the next expiry is a new event.
    pub fn fired(&mut self) {
        let mut count = [0u8; 8];
        let _ = self.fd.read(&mut count);
        self.armed_for = None;
    }
}
