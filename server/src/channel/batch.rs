//! Batched UDP I/O for the relay workers: `recvmmsg` into reusable buffers, and a
//! [`Transmit`] sink that queues the relay's output and hands it to `sendmmsg`.
//!
//! Nothing here allocates after construction. A forwarded packet is never copied: the
//! sink recognises the datagram being handled (the relay forwards the received bytes
//! unchanged) and points the kernel at the receive buffer. Anything else the relay sends
//! (system packets, built on its stack) is copied into a small side buffer.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

use kv_proto::PACKET_SIZE;

use super::relay::Transmit;

/// Datagrams one `recvmmsg` call may return.
pub const RECV_BATCH: usize = 32;
/// One byte more than a packet, so an oversized datagram shows up as too long instead of
/// being silently truncated to a valid size.
const SLOT: usize = PACKET_SIZE + 1;
/// Messages one `sendmmsg` call carries at most (the kernel's limit is 1024).
pub const SEND_BATCH: usize = 256;
/// Packets other than the one being forwarded that may wait for a flush.
const COPY_SLOTS: usize = 32;

/// A socket address in the kernel's layout, IPv4 or IPv6.
#[derive(Clone, Copy)]
#[repr(C)]
union RawAddr {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
}

impl RawAddr {
    fn zeroed() -> Self {
        // SAFETY: both variants are plain C structs for which all-zero is valid.
        unsafe { std::mem::zeroed() }
    }

    fn from_std(a: SocketAddr) -> (Self, libc::socklen_t) {
        let mut r = Self::zeroed();
        match a {
            SocketAddr::V4(a) => {
                // SAFETY: writing a Copy field of a union of plain C structs.
                let s = unsafe { &mut r.v4 };
                s.sin_family = libc::AF_INET as libc::sa_family_t;
                s.sin_port = a.port().to_be();
                s.sin_addr.s_addr = u32::from(*a.ip()).to_be();
                (
                    r,
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
            SocketAddr::V6(a) => {
                // SAFETY: as above.
                let s = unsafe { &mut r.v6 };
                s.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                s.sin6_port = a.port().to_be();
                s.sin6_addr.s6_addr = a.ip().octets();
                s.sin6_flowinfo = a.flowinfo();
                s.sin6_scope_id = a.scope_id();
                (
                    r,
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    }

    fn to_std(self) -> Option<SocketAddr> {
        // SAFETY: the family field sits at the same offset in both variants, and whichever
        // variant the kernel wrote, every byte of the union is initialised (zeroed first).
        unsafe {
            match i32::from(self.v4.sin_family) {
                libc::AF_INET => Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(self.v4.sin_addr.s_addr)),
                    u16::from_be(self.v4.sin_port),
                ))),
                libc::AF_INET6 => Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(self.v6.sin6_addr.s6_addr),
                    u16::from_be(self.v6.sin6_port),
                    self.v6.sin6_flowinfo,
                    self.v6.sin6_scope_id,
                ))),
                _ => None,
            }
        }
    }
}

/// The header of one datagram with one buffer, for `recvmmsg` (the kernel writes the
/// sender into `name`) and `sendmmsg` (it reads the destination from there).
fn one_buffer_hdr(
    name: &mut RawAddr,
    namelen: libc::socklen_t,
    iov: &mut libc::iovec,
) -> libc::mmsghdr {
    // SAFETY: msghdr is plain old data; all-zero is valid.
    let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
    h.msg_name = (name as *mut RawAddr).cast();
    h.msg_namelen = namelen;
    h.msg_iov = iov;
    h.msg_iovlen = 1;
    libc::mmsghdr {
        msg_hdr: h,
        msg_len: 0,
    }
}

/// Buffers for one `recvmmsg` call, allocated once per worker.
pub struct RecvBatch {
    bufs: Box<[[u8; SLOT]; RECV_BATCH]>,
    addrs: Box<[RawAddr; RECV_BATCH]>,
    iovs: Box<[libc::iovec; RECV_BATCH]>,
    hdrs: Box<[libc::mmsghdr; RECV_BATCH]>,
}

// SAFETY: the raw pointers inside point only into this struct's own boxes and are rewritten
// before every call, so the struct may move to another thread.
unsafe impl Send for RecvBatch {}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecvBatch")
    }
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    /// Allocates the buffers (about 17 KiB).
    pub fn new() -> Self {
        // SAFETY: plain C structs; all-zero is valid, and `recv` fills every pointer.
        unsafe {
            Self {
                bufs: Box::new([[0u8; SLOT]; RECV_BATCH]),
                addrs: Box::new([RawAddr::zeroed(); RECV_BATCH]),
                iovs: Box::new(std::mem::zeroed()),
                hdrs: Box::new(std::mem::zeroed()),
            }
        }
    }

    /// Receives up to [`RECV_BATCH`] datagrams without blocking; `Ok(0)` when none wait.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        for i in 0..RECV_BATCH {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: SLOT,
            };
            self.addrs[i] = RawAddr::zeroed();
            self.hdrs[i] = one_buffer_hdr(
                &mut self.addrs[i],
                std::mem::size_of::<RawAddr>() as libc::socklen_t,
                &mut self.iovs[i],
            );
        }
        // SAFETY: every header points into boxes owned by self, alive for the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                RECV_BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
            _ => Err(e),
        }
    }

    /// Datagram `i` of the last call and its sender (`None` for an unknown address
    /// family). Only valid for `i` below the last return value.
    pub fn get(&self, i: usize) -> (Option<SocketAddr>, &[u8]) {
        let len = (self.hdrs[i].msg_len as usize).min(SLOT);
        (self.addrs[i].to_std(), &self.bufs[i][..len])
    }
}

/// Output waiting for `sendmmsg`, allocated once per worker. Filled through a
/// [`BatchSink`].
pub struct SendQueue {
    names: Box<[RawAddr; SEND_BATCH]>,
    namelens: Box<[libc::socklen_t; SEND_BATCH]>,
    iovs: Box<[libc::iovec; SEND_BATCH]>,
    hdrs: Box<[libc::mmsghdr; SEND_BATCH]>,
    copies: Box<[[u8; PACKET_SIZE]; COPY_SLOTS]>,
    copied: usize,
    len: usize,
    /// Datagrams handed to the kernel.
    pub sent: u64,
    /// Their bytes.
    pub sent_bytes: u64,
    /// Datagrams the kernel refused (full socket buffer, or an error): voice is dropped,
    /// never queued.
    pub dropped: u64,
}

// SAFETY: the raw pointers inside are only meaningful while a `BatchSink` borrows the queue
// (which ties them to live data) and are rewritten before every call.
unsafe impl Send for SendQueue {}

impl std::fmt::Debug for SendQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendQueue")
            .field("sent", &self.sent)
            .field("dropped", &self.dropped)
            .finish()
    }
}

impl Default for SendQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl SendQueue {
    /// Allocates room for [`SEND_BATCH`] messages (about 40 KiB).
    pub fn new() -> Self {
        // SAFETY: plain C structs; all-zero is valid, and `flush` fills every header it
        // passes to the kernel.
        unsafe {
            Self {
                names: Box::new([RawAddr::zeroed(); SEND_BATCH]),
                namelens: Box::new([0; SEND_BATCH]),
                iovs: Box::new(std::mem::zeroed()),
                hdrs: Box::new(std::mem::zeroed()),
                copies: Box::new([[0u8; PACKET_SIZE]; COPY_SLOTS]),
                copied: 0,
                len: 0,
                sent: 0,
                sent_bytes: 0,
                dropped: 0,
            }
        }
    }

    /// Sends everything queued on `fd`. A message the kernel refuses is counted in
    /// `dropped` and skipped.
    fn flush(&mut self, fd: RawFd) {
        for i in 0..self.len {
            self.hdrs[i] = one_buffer_hdr(&mut self.names[i], self.namelens[i], &mut self.iovs[i]);
        }
        let mut at = 0;
        while at < self.len {
            // SAFETY: headers at..len point into self's boxes and into payloads that the
            // borrowing `BatchSink` keeps alive until this flush returns.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs.as_mut_ptr().add(at),
                    (self.len - at) as libc::c_uint,
                    0,
                )
            };
            if n > 0 {
                let n = n as usize;
                self.sent_bytes += self.iovs[at..at + n]
                    .iter()
                    .map(|v| v.iov_len as u64)
                    .sum::<u64>();
                at += n;
                self.sent += n as u64;
            } else if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                // The first message was refused (EAGAIN: the socket buffer is full, or a
                // per-destination error): drop it and go on with the rest.
                at += 1;
                self.dropped += 1;
            }
        }
        self.len = 0;
        self.copied = 0;
    }
}

/// The relay's output sink for one burst of work on one socket: queues every datagram and
/// sends them with `sendmmsg` when the queue fills and when the sink is dropped.
pub struct BatchSink<'a> {
    queue: &'a mut SendQueue,
    fd: RawFd,
    /// The datagram being handled; forwarding it queues a pointer, not a copy.
    current: &'a [u8],
}

impl std::fmt::Debug for BatchSink<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BatchSink(fd {}, {} queued)", self.fd, self.queue.len)
    }
}

impl<'a> BatchSink<'a> {
    /// A sink sending on `fd` through `queue`.
    pub fn new(queue: &'a mut SendQueue, fd: RawFd) -> Self {
        Self {
            queue,
            fd,
            current: &[],
        }
    }

    /// Marks `data` as the datagram being handled: the relay's forwards of it are queued
    /// without a copy. `data` outlives the sink, which flushes before it is dropped.
    pub fn set_current(&mut self, data: &'a [u8]) {
        self.current = data;
    }

    /// Sends what is queued now.
    pub fn flush(&mut self) {
        self.queue.flush(self.fd);
    }
}

impl Transmit for BatchSink<'_> {
    fn send(&mut self, dst: SocketAddr, packet: &[u8]) {
        if self.queue.len == SEND_BATCH {
            self.flush();
        }
        let is_current = !packet.is_empty()
            && std::ptr::eq(packet.as_ptr(), self.current.as_ptr())
            && packet.len() == self.current.len();
        let (ptr, len) = if is_current {
            (self.current.as_ptr(), self.current.len())
        } else {
            if self.queue.copied == COPY_SLOTS {
                self.flush();
            }
            let n = packet.len().min(PACKET_SIZE);
            let slot = &mut self.queue.copies[self.queue.copied];
            slot[..n].copy_from_slice(&packet[..n]);
            self.queue.copied += 1;
            (slot.as_ptr(), n)
        };
        let q = &mut *self.queue;
        let (name, namelen) = RawAddr::from_std(dst);
        q.names[q.len] = name;
        q.namelens[q.len] = namelen;
        q.iovs[q.len] = libc::iovec {
            iov_base: ptr as *mut libc::c_void,
            iov_len: len,
        };
        q.len += 1;
    }
}

impl Drop for BatchSink<'_> {
    fn drop(&mut self) {
        // Queued pointers may refer to `current`, which is only borrowed for the sink's
        // lifetime: send before letting go of it.
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    fn recv_all(s: &UdpSocket, n: usize) -> Vec<(SocketAddr, Vec<u8>)> {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        while out.len() < n {
            let (len, from) = s.recv_from(&mut buf).unwrap();
            out.push((from, buf[..len].to_vec()));
        }
        out
    }

    #[test]
    fn forwards_without_copy_and_copies_the_rest() {
        let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..3u8 {
            a.send_to(&[i; PACKET_SIZE], relay.local_addr().unwrap())
                .unwrap();
        }
        a.send_to(&[9; PACKET_SIZE + 40], relay.local_addr().unwrap())
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let mut rb = RecvBatch::new();
        let n = rb.recv(relay.as_raw_fd()).unwrap();
        assert_eq!(n, 4);
        let (from, data) = rb.get(3);
        assert_eq!(from, Some(a.local_addr().unwrap()));
        assert_eq!(data.len(), PACKET_SIZE + 1, "oversize shows as too long");

        let mut q = SendQueue::new();
        {
            let mut sink = BatchSink::new(&mut q, relay.as_raw_fd());
            for i in 0..3 {
                let (_, data) = rb.get(i);
                sink.set_current(data);
                sink.send(b.local_addr().unwrap(), data);
                // A packet built on the stack, as the relay's signed packets are.
                let other = [100 + i as u8; PACKET_SIZE];
                sink.send(b.local_addr().unwrap(), &other);
            }
        }
        assert_eq!((q.sent, q.dropped), (6, 0));
        let got: Vec<u8> = recv_all(&b, 6).iter().map(|(_, d)| d[0]).collect();
        assert_eq!(got, vec![0, 100, 1, 101, 2, 102]);
        assert_eq!(rb.recv(relay.as_raw_fd()).unwrap(), 0);
    }

    #[test]
    fn many_messages_span_several_calls() {
        let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
        // Several receivers, so no single default-sized socket buffer overflows.
        let rx: Vec<UdpSocket> = (0..4)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let data = [7u8; PACKET_SIZE];
        let total = SEND_BATCH + 10;
        let mut q = SendQueue::new();
        {
            let mut sink = BatchSink::new(&mut q, relay.as_raw_fd());
            sink.set_current(&data);
            for i in 0..total {
                sink.send(rx[i % rx.len()].local_addr().unwrap(), &data);
            }
        }
        assert_eq!((q.sent, q.dropped), (total as u64, 0));
        let got: usize = rx
            .iter()
            .enumerate()
            .map(|(k, s)| recv_all(s, (total + rx.len() - 1 - k) / rx.len()).len())
            .sum();
        assert_eq!(got, total);
    }

    #[test]
    fn ipv6_addresses_round_trip() {
        let a: SocketAddr = "[::1]:4242".parse().unwrap();
        let (raw, len) = RawAddr::from_std(a);
        assert_eq!(len as usize, std::mem::size_of::<libc::sockaddr_in6>());
        assert_eq!(raw.to_std(), Some(a));
        let b: SocketAddr = "127.0.0.1:4242".parse().unwrap();
        assert_eq!(RawAddr::from_std(b).0.to_std(), Some(b));
    }
}
