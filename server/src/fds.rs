//! File descriptors: every channel is a UDP socket and every control connection a TCP
//! socket, from one table. Issue 9 §4: 1006 channels used the 1024 descriptors of the
//! default soft limit, then `accept` failed ("Too many open files") and the control port
//! went silent. So at start the soft limit is raised to the hard one, and a number of
//! descriptors is *reserved* for control connections: channels may not use them (CREATE
//! answers SERV instead). Should the table still fill up (something else used it), the
//! accept loop keeps one spare descriptor ([`Spare`]) to free, accept, answer SERV and
//! close, so a client is told instead of timing out.

use std::fs::File;
use std::io;

/// Descriptors kept free beyond the control connections: the database and its WAL, the
/// runtime's and workers' epoll and event descriptors, the spare, log files.
pub const BASE_RESERVE: u64 = 64;

/// Raises `RLIMIT_NOFILE`'s soft limit to its hard limit and returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes a struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads a struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        } else {
            tracing::warn!(error = %io::Error::last_os_error(), "cannot raise RLIMIT_NOFILE");
        }
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
    Ok(lim.rlim_cur as u64)
}

/// Descriptors this process has open now (Linux: entries of `/proc/self/fd`).
pub fn open_descriptors() -> Option<u64> {
    let dir = std::fs::read_dir("/proc/self/fd").ok()?;
    // The directory handle itself is one of the entries; it closes after counting.
    Some(dir.count().saturating_sub(1) as u64)
}

/// How many descriptors channels may use.
#[derive(Debug, Clone, Copy)]
pub struct FdBudget {
    /// The soft limit.
    limit: u64,
    /// Descriptors channels must leave free.
    reserve: u64,
}

impl FdBudget {
    /// No limit known: channels are bounded by `--max-channels` only.
    pub fn unlimited() -> Self {
        Self {
            limit: u64::MAX,
            reserve: 0,
        }
    }

    /// `limit` descriptors, of which `reserve` stay free for everything but channels.
    pub fn new(limit: u64, reserve: u64) -> Self {
        Self { limit, reserve }
    }

    /// True when one more channel socket leaves the reserve untouched.
    pub fn can_open_channel(&self) -> bool {
        if self.limit == u64::MAX {
            return true;
        }
        match open_descriptors() {
            Some(open) => open + 1 + self.reserve <= self.limit,
            None => true,
        }
    }
}

/// One descriptor held in reserve for the accept loop's last resort.
#[derive(Debug)]
pub struct Spare(Option<File>);

impl Spare {
    /// Opens the spare (`/dev/null`).
    pub fn new() -> Self {
        Self(File::open("/dev/null").ok())
    }

    /// Frees the spare so one descriptor is available; true if there was one.
    pub fn release(&mut self) -> bool {
        self.0.take().is_some()
    }

    /// Takes a descriptor back as the spare (when one is free again).
    pub fn restore(&mut self) {
        if self.0.is_none() {
            self.0 = File::open("/dev/null").ok();
        }
    }
}

impl Default for Spare {
    fn default() -> Self {
        Self::new()
    }
}

/// True for the errors of a full descriptor table.
pub fn is_table_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_descriptors_and_budgets() {
        // Other tests of this binary open and close sockets on their own threads, so one
        // reading can be off by what they did meanwhile (CI saw exactly that): 16 files
        // opened must show as 16 more in at least one of five tries.
        let counted = (0..5).any(|_| {
            let before = open_descriptors().unwrap();
            let files: Vec<File> = (0..16).map(|_| File::open("/dev/null").unwrap()).collect();
            let during = open_descriptors().unwrap();
            drop(files);
            during == before + 16
        });
        assert!(
            counted,
            "open_descriptors does not follow files opened and closed"
        );
        let open = open_descriptors().unwrap();
        assert!(FdBudget::new(open + 10, 5).can_open_channel());
        assert!(!FdBudget::new(open + 3, 5).can_open_channel());
        assert!(FdBudget::unlimited().can_open_channel());
        let mut s = Spare::new();
        assert!(s.release());
        assert!(!s.release());
        s.restore();
        assert!(s.release());
        assert!(raise_nofile_limit().unwrap() >= 3);
    }
}
