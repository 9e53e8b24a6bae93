//! A safe wrapper over Linux epoll: the readiness loop of the relay workers, and of
//! `kv-bench`'s generator and baseline relays (which share it so both sides of the
//! comparison wait for sockets the same way; the baselines use none of the relay's rules).
//!
//! Level-triggered, readability only; each watched descriptor reports a caller-chosen
//! `u64` token.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// An epoll instance.
#[derive(Debug)]
pub struct Epoll(OwnedFd);

impl Epoll {
    /// A new, empty instance (close-on-exec).
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; on success we own the descriptor.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh descriptor owned by nobody else.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: ev lives for the call.
        if unsafe { libc::epoll_ctl(self.0.as_raw_fd(), op, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Watches `fd` for readability, reporting `token`.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token)
    }

    /// Stops watching `fd` (closing it would too; this is for a descriptor that lives on).
    pub fn delete(&self, fd: RawFd) {
        let _ = self.ctl(libc::EPOLL_CTL_DEL, fd, 0);
    }

    /// Waits up to `timeout` and puts the ready tokens in `events` (replacing the last
    /// wait's). An interrupted wait reports none.
    pub fn wait(&self, events: &mut Events, timeout: Duration) -> io::Result<()> {
        events.len = 0;
        // Round up, so a deadline 0.3 ms away does not turn into a busy loop of 0 ms waits.
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
        // SAFETY: the buffer holds events.buf.len() epoll_event slots.
        let n = unsafe {
            libc::epoll_wait(
                self.0.as_raw_fd(),
                events.buf.as_mut_ptr(),
                events.buf.len() as libc::c_int,
                ms,
            )
        };
        if n >= 0 {
            events.len = n as usize;
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => Ok(()),
            _ => Err(e),
        }
    }
}

/// Reusable buffer of ready events, allocated once per loop.
pub struct Events {
    buf: Vec<libc::epoll_event>,
    len: usize,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Events({})", self.len)
    }
}

impl Events {
    /// Room for `cap` events per wait (at least one).
    pub fn with_capacity(cap: usize) -> Self {
        Self {
            buf: vec![libc::epoll_event { events: 0, u64: 0 }; cap.max(1)],
            len: 0,
        }
    }

    /// Tokens reported by the last wait.
    pub fn tokens(&self) -> impl Iterator<Item = u64> + '_ {
        self.buf[..self.len].iter().map(|e| e.u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn reports_the_readable_socket_by_token() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let epoll = Epoll::new().unwrap();
        epoll.add(a.as_raw_fd(), 1).unwrap();
        epoll.add(b.as_raw_fd(), 2).unwrap();
        let mut events = Events::with_capacity(4);
        epoll.wait(&mut events, Duration::ZERO).unwrap();
        assert_eq!(events.tokens().count(), 0);
        a.send_to(b"x", b.local_addr().unwrap()).unwrap();
        epoll.wait(&mut events, Duration::from_secs(2)).unwrap();
        assert_eq!(events.tokens().collect::<Vec<_>>(), vec![2]);
        epoll.delete(b.as_raw_fd());
        epoll.wait(&mut events, Duration::ZERO).unwrap();
        assert_eq!(events.tokens().count(), 0, "deleted: no longer reported");
    }
}
