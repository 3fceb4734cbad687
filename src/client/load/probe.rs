//! What the load tool reads about a process (the server's, or its own) from /proc, and the
//! clocks it uses. Linux only, like the rest of the tool.

use std::collections::BTreeMap;
use std::io;

/// A process's CPU time so far (user + system, every thread), in nanoseconds, from
/// `/proc/<pid>/stat`. `pid` None: this process. Resolution: one clock tick (10 ms).
pub fn cpu_ns(pid: Option<u32>) -> io::Result<u64> {
    let text = std::fs::read_to_string(proc_path(pid, "stat"))?;
    parse_stat_cpu_ticks(&text)
        .map(|ticks| ticks * 1_000_000_000 / clock_ticks_per_second())
        .ok_or_else(|| io::Error::other("unexpected /proc/<pid>/stat"))
}

/// CPU time so far of each thread of a process, by thread id: (name, nanoseconds), from
/// `/proc/<pid>/task/*/stat`. Threads that end between two readings simply drop out.
pub fn thread_cpu_ns(pid: u32) -> io::Result<BTreeMap<u32, (String, u64)>> {
    let mut out = BTreeMap::new();
    let hz = clock_ticks_per_second();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let entry = entry?;
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        // A thread may end between the listing and the read.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let name = stat
            .find('(')
            .zip(stat.rfind(')'))
            .map(|(a, b)| stat[a + 1..b].to_string())
            .unwrap_or_default();
        if let Some(ticks) = parse_stat_cpu_ticks(&stat) {
            out.insert(tid, (name, ticks * 1_000_000_000 / hz));
        }
    }
    Ok(out)
}

/// CPU used by each thread name between two [`thread_cpu_ns`] readings, nanoseconds
/// (threads of one name summed; a thread born in between counts from zero).
pub fn thread_cpu_delta(
    before: &BTreeMap<u32, (String, u64)>,
    after: &BTreeMap<u32, (String, u64)>,
) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (tid, (name, ns)) in after {
        let start = before.get(tid).map_or(0, |(_, b)| *b);
        *out.entry(name.clone()).or_insert(0) += ns.saturating_sub(start);
    }
    out
}

/// A process's resident memory (`VmRSS`), in KiB.
pub fn rss_kib(pid: Option<u32>) -> io::Result<u64> {
    let text = std::fs::read_to_string(proc_path(pid, "status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| io::Error::other("no VmRSS in /proc/<pid>/status"))
}

fn proc_path(pid: Option<u32>, file: &str) -> String {
    match pid {
        Some(pid) => format!("/proc/{pid}/{file}"),
        None => format!("/proc/self/{file}"),
    }
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name (field
/// 2) may hold spaces and parentheses: fields are counted after its last `)`.
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // After the name come field 3 (state) onwards: utime is field 14, the 12th here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as u64
    } else {
        100
    }
}

/// CLOCK_REALTIME in nanoseconds: the clock of the kernel's receive timestamps
/// (SO_TIMESTAMPNS), so that both ends of a measured interval come from one clock.
pub fn realtime_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to; CLOCK_REALTIME always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// Raises this process's open-file limit to its hard limit (one socket per viewer);
/// returns the limit now in force.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit to fill and then pass back.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 \
                    250 75 0 0 20 0 9 0 1000 100000000 5000 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(325));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn own_process_is_readable() {
        assert!(rss_kib(None).expect("VmRSS") > 0);
        cpu_ns(None).expect("stat");
        assert!(realtime_ns() > 1_600_000_000 * 1_000_000_000);
        let threads = thread_cpu_ns(std::process::id()).expect("tasks");
        assert!(!threads.is_empty());
        let delta = thread_cpu_delta(&BTreeMap::new(), &threads);
        assert_eq!(
            delta.values().sum::<u64>(),
            threads.values().map(|(_, ns)| ns).sum::<u64>()
        );
    }
}
