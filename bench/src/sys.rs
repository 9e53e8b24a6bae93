//! Thin, safe wrappers over the Linux calls the bench needs and std lacks: recvmmsg,
//! sendmmsg and socket buffer sizes. IPv4 only: the bench never leaves 127.0.0.1. (epoll is
//! `kv_server::epoll`, a plain syscall wrapper; these batch wrappers stay the bench's own:
//! the floor waits out a full socket buffer where KV's relay drops, and keys peers by raw
//! IPv4 address.)

use std::io;
use std::marker::PhantomData;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::RawFd;

/// Datagrams one `recvmmsg` call may return.
pub const RECV_BATCH: usize = 32;
/// Room per received datagram: more than a KV packet, so an oversized one shows up as such.
pub const SLOT: usize = 2048;
/// Messages one `sendmmsg` call may carry (the kernel's UIO_MAXIOV is 1024).
pub const SEND_BATCH: usize = 256;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// An IPv4 socket address in the kernel's layout, so it can be handed to sendmmsg as is and
/// compared in one step.
#[derive(Clone, Copy)]
pub struct RawAddr(libc::sockaddr_in);

impl std::fmt::Debug for RawAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.to_std())
    }
}

impl RawAddr {
    /// Kernel form of `a`.
    pub fn from_std(a: SocketAddrV4) -> Self {
        // SAFETY: sockaddr_in is plain old data; all-zero is a valid value.
        let mut s: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        s.sin_family = libc::AF_INET as libc::sa_family_t;
        s.sin_port = a.port().to_be();
        s.sin_addr.s_addr = u32::from(*a.ip()).to_be();
        RawAddr(s)
    }

    /// Std form, for printing.
    pub fn to_std(self) -> SocketAddrV4 {
        SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(self.0.sin_addr.s_addr)),
            u16::from_be(self.0.sin_port),
        )
    }

    /// Address and port as one integer: cheap equality for peer tables.
    pub fn key(&self) -> u64 {
        ((self.0.sin_addr.s_addr as u64) << 16) | self.0.sin_port as u64
    }
}

/// The header of one datagram with one buffer and an IPv4 address, for `recvmmsg` (the
/// kernel writes the sender into `name`) and `sendmmsg` (it reads the destination there).
fn one_buffer_hdr(name: &mut libc::sockaddr_in, iov: &mut libc::iovec) -> libc::mmsghdr {
    // SAFETY: msghdr is plain old data; all-zero is valid.
    let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
    h.msg_name = (name as *mut libc::sockaddr_in).cast();
    h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    h.msg_iov = iov;
    h.msg_iovlen = 1;
    libc::mmsghdr {
        msg_hdr: h,
        msg_len: 0,
    }
}

/// Buffers for one `recvmmsg` call, allocated once.
pub struct RecvBatch {
    bufs: Box<[[u8; SLOT]; RECV_BATCH]>,
    addrs: [libc::sockaddr_in; RECV_BATCH],
    iovs: [libc::iovec; RECV_BATCH],
    hdrs: [libc::mmsghdr; RECV_BATCH],
    lens: [usize; RECV_BATCH],
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecvBatch")
    }
}

// SAFETY: the raw pointers inside only ever point into this struct's own boxed buffers and
// are rewritten before every call, so moving it to another thread is sound.
unsafe impl Send for RecvBatch {}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    /// Allocates the buffers (about 64 KiB).
    pub fn new() -> Self {
        // SAFETY: these are plain C structs for which all-zero is valid.
        unsafe {
            RecvBatch {
                bufs: Box::new([[0u8; SLOT]; RECV_BATCH]),
                addrs: std::mem::zeroed(),
                iovs: std::mem::zeroed(),
                hdrs: std::mem::zeroed(),
                lens: [0; RECV_BATCH],
            }
        }
    }

    /// Receives up to [`RECV_BATCH`] datagrams without blocking. `Ok(0)` means none waiting.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        for i in 0..RECV_BATCH {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: SLOT,
            };
            self.hdrs[i] = one_buffer_hdr(&mut self.addrs[i], &mut self.iovs[i]);
        }
        // SAFETY: every header points into buffers owned by self that outlive the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                RECV_BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        match cvt(n) {
            Ok(n) => {
                let n = n as usize;
                for i in 0..n {
                    self.lens[i] = self.hdrs[i].msg_len as usize;
                }
                Ok(n)
            }
            Err(e) if is_transient(&e) => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Datagram `i` of the last call (only valid for `i` below its return value).
    pub fn data(&self, i: usize) -> &[u8] {
        &self.bufs[i][..self.lens[i].min(SLOT)]
    }

    /// Sender of datagram `i` of the last call.
    pub fn from(&self, i: usize) -> RawAddr {
        RawAddr(self.addrs[i])
    }
}

/// Errors that only mean "nothing to do now": no data, interrupted, or an ICMP
/// port-unreachable reported for an earlier send to a peer that went away.
pub fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted | io::ErrorKind::ConnectionRefused
    )
}

/// Storage for one `sendmmsg` call, allocated once; filled through a [`SendBatch`].
pub struct SendStorage {
    names: Box<[libc::sockaddr_in; SEND_BATCH]>,
    iovs: Box<[libc::iovec; SEND_BATCH]>,
    hdrs: Box<[libc::mmsghdr; SEND_BATCH]>,
}

impl std::fmt::Debug for SendStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SendStorage")
    }
}

// SAFETY: the raw pointers inside are only meaningful while a `SendBatch` borrows the
// storage (which ties them to live data) and are rewritten before every call.
unsafe impl Send for SendStorage {}

impl Default for SendStorage {
    fn default() -> Self {
        Self::new()
    }
}

impl SendStorage {
    /// Allocates room for [`SEND_BATCH`] messages.
    pub fn new() -> Self {
        // SAFETY: plain C structs; all-zero is valid (null pointers are never passed to the
        // kernel: `flush` fills every header it sends).
        unsafe {
            SendStorage {
                names: Box::new(std::mem::zeroed()),
                iovs: Box::new(std::mem::zeroed()),
                hdrs: Box::new(std::mem::zeroed()),
            }
        }
    }

    /// Starts a batch whose payloads borrow data living at least as long as `'a`.
    pub fn batch<'a>(&'a mut self) -> SendBatch<'a> {
        SendBatch {
            st: self,
            len: 0,
            _data: PhantomData,
        }
    }
}

/// Messages queued for one socket; the payload pointers stay valid for `'a`.
pub struct SendBatch<'a> {
    st: &'a mut SendStorage,
    len: usize,
    _data: PhantomData<&'a [u8]>,
}

impl std::fmt::Debug for SendBatch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SendBatch({})", self.len)
    }
}

impl<'a> SendBatch<'a> {
    /// True when no more messages fit before a flush.
    pub fn is_full(&self) -> bool {
        self.len == SEND_BATCH
    }

    /// Queues `data` for `to`. Flushes first (on `fd`) when full.
    pub fn push(&mut self, fd: RawFd, data: &'a [u8], to: RawAddr) -> io::Result<()> {
        if self.is_full() {
            self.flush(fd)?;
        }
        self.st.names[self.len] = to.0;
        self.st.iovs[self.len] = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        self.len += 1;
        Ok(())
    }

    /// Sends everything queued with as few `sendmmsg` calls as the kernel allows. A message
    /// the kernel refuses (e.g. a peer's port went away) is skipped, as a relay would.
    /// Returns the number of messages handed to the kernel.
    pub fn flush(&mut self, fd: RawFd) -> io::Result<usize> {
        let st = &mut *self.st;
        for i in 0..self.len {
            st.hdrs[i] = one_buffer_hdr(&mut st.names[i], &mut st.iovs[i]);
        }
        let mut at = 0;
        let mut sent = 0;
        let mut spins = 0;
        while at < self.len {
            // SAFETY: headers at..len point into st (alive) and into payloads alive for 'a.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    st.hdrs.as_mut_ptr().add(at),
                    (self.len - at) as libc::c_uint,
                    0,
                )
            };
            match cvt(n) {
                Ok(n) => {
                    at += n as usize;
                    sent += n as usize;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && spins < 1000 => {
                    spins += 1;
                    std::thread::yield_now();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => at += 1,
            }
        }
        self.len = 0;
        Ok(sent)
    }
}

/// Asks for a receive buffer of `bytes`, beyond `rmem_max` when running as root (the bench
/// needs deep buffers so that its own receivers are never the cause of loss).
pub fn set_recv_buffer(fd: RawFd, bytes: usize) {
    let v = bytes as libc::c_int;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: v is a c_int that lives for the call.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_server::epoll::{Epoll, Events};
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    #[test]
    fn batch_round_trip() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_nonblocking(true).unwrap();
        let to = match b.local_addr().unwrap() {
            std::net::SocketAddr::V4(v) => RawAddr::from_std(v),
            _ => unreachable!(),
        };
        let payloads: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 512]).collect();
        let mut st = SendStorage::new();
        let mut batch = st.batch();
        for p in &payloads {
            batch.push(a.as_raw_fd(), p, to).unwrap();
        }
        batch.flush(a.as_raw_fd()).unwrap();
        let poller = Epoll::new().unwrap();
        poller.add(b.as_raw_fd(), 7).unwrap();
        let mut ev = Events::with_capacity(4);
        poller.wait(&mut ev, Duration::from_millis(1000)).unwrap();
        assert_eq!(ev.tokens().collect::<Vec<_>>(), vec![7]);
        let mut rb = RecvBatch::new();
        let mut got = Vec::new();
        while got.len() < 40 {
            let n = rb.recv(b.as_raw_fd()).unwrap();
            assert!(n > 0);
            for i in 0..n {
                assert_eq!(rb.data(i).len(), 512);
                assert_eq!(
                    rb.from(i).to_std(),
                    match a.local_addr().unwrap() {
                        std::net::SocketAddr::V4(v) => v,
                        _ => unreachable!(),
                    }
                );
                got.push(rb.data(i)[0]);
            }
        }
        assert_eq!(got, (0..40u8).collect::<Vec<_>>());
        assert_eq!(rb.recv(b.as_raw_fd()).unwrap(), 0);
    }
}
