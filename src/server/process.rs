//! What Linux says about this process, for `stats`: the CPU time it used
//! (memcached's `rusage_user`, `rusage_system`, which it takes from
//! `getrusage`) and the descriptors it holds open, and how many it may.
//!
//! Both are read from `/proc/self`, which gives the same numbers as
//! `getrusage(RUSAGE_SELF)` for the whole process, every thread included,
//! without a `libc` dependency for one call. `/proc` counts CPU time in
//! clock ticks of `USER_HZ`, which the kernel fixes at 100 a second for
//! every program on the architectures mckv runs on, so the times are
//! exact to 10 ms.

use std::time::Duration;

/// Clock ticks a second in `/proc` times.
const USER_HZ: u64 = 100;

/// CPU time the process used, in user space and in the kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub user: Duration,
    pub system: Duration,
}

/// The process's CPU times; zero where `/proc` cannot be read.
pub fn cpu_times() -> CpuTimes {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| parse_stat(&stat))
        .unwrap_or_default()
}

/// `utime` and `stime`, fields 14 and 15 of `/proc/<pid>/stat`, counted
/// after the command name, which is in parentheses and may hold spaces.
fn parse_stat(stat: &str) -> Option<CpuTimes> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Field 3 (the state) is the first after the name.
    let mut fields = after_name.split_ascii_whitespace().skip(14 - 3);
    let ticks = |field: Option<&str>| -> Option<Duration> {
        let ticks: u64 = field?.parse().ok()?;
        Some(Duration::from_millis(ticks * 1000 / USER_HZ))
    };
    Some(CpuTimes {
        user: ticks(fields.next())?,
        system: ticks(fields.next())?,
    })
}

/// memcached's `rusage_*` format: seconds, a dot, six digits of microseconds.
pub fn seconds_micros(time: Duration) -> String {
    format!("{}.{:06}", time.as_secs(), time.subsec_micros())
}

/// How many descriptors the process holds open, if `/proc` says.
pub fn open_descriptors() -> Option<u64> {
    let listing = std::fs::read_dir("/proc/self/fd").ok()?;
    // The listing's own descriptor is among those it lists.
    Some((listing.count() as u64).saturating_sub(1))
}

/// How many descriptors the process may hold open (`RLIMIT_NOFILE`'s soft
/// limit), if `/proc` says; `None` also when it is unlimited.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_files_limit(&limits)
}

/// The soft limit on the `Max open files` line of `/proc/<pid>/limits`.
fn parse_open_files_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_times_come_after_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 \
                    120 0 0 0 1234 56 0 0 20 0 3 0 9 1000 100";
        assert_eq!(
            parse_stat(stat),
            Some(CpuTimes {
                user: Duration::from_millis(12_340),
                system: Duration::from_millis(560),
            })
        );
        assert_eq!(parse_stat("4242 (truncated) S 1"), None);
    }

    #[test]
    fn times_print_like_memcached() {
        assert_eq!(seconds_micros(Duration::from_millis(12_340)), "12.340000");
        assert_eq!(seconds_micros(Duration::ZERO), "0.000000");
    }

    #[test]
    fn the_open_files_limit_is_the_soft_one() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             unlimited            unlimited            processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_open_files_limit(limits), Some(1024));
        let unlimited = limits.replace("1024 ", "unlimited");
        assert_eq!(parse_open_files_limit(&unlimited), None);
    }

    #[test]
    fn this_process_is_seen() {
        assert!(open_descriptors().is_some_and(|n| n >= 1));
        assert!(open_files_limit().is_some_and(|n| n >= 1));
        let _ = cpu_times();
    }
}
