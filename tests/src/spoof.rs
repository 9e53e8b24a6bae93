//! [`Spoofer`]: sends UDP datagrams with a forged IPv4 source address through a raw socket
//! (root only), as an off-path attacker does. Only to 127.0.0.0/8, from 127.0.0.0/8.

use std::io;
use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A raw IPv4 socket that writes its own IP and UDP headers.
#[derive(Debug)]
pub struct Spoofer {
    fd: OwnedFd,
}

impl Spoofer {
    /// Opens the raw socket (needs root or CAP_NET_RAW).
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; on success we own the descriptor. IPPROTO_RAW implies
        // IP_HDRINCL: the datagram we pass starts with its IP header.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by the kernel and nobody else owns it.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Sends `payload` to `dst` as a UDP datagram from `src`. Both must be loopback.
    pub fn send(&self, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> io::Result<()> {
        assert!(
            src.ip().is_loopback() && dst.ip().is_loopback(),
            "spoofing only within 127.0.0.0/8"
        );
        let total = 20 + 8 + payload.len();
        let mut pkt = vec![0u8; total];
        pkt[0] = 0x45; // IPv4, 5-word header
        pkt[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        pkt[8] = 64; // TTL
        pkt[9] = libc::IPPROTO_UDP as u8;
        pkt[12..16].copy_from_slice(&src.ip().octets());
        pkt[16..20].copy_from_slice(&dst.ip().octets());
        let sum = checksum(&pkt[..20]);
        pkt[10..12].copy_from_slice(&sum.to_be_bytes());
        pkt[20..22].copy_from_slice(&src.port().to_be_bytes());
        pkt[22..24].copy_from_slice(&dst.port().to_be_bytes());
        pkt[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        // UDP checksum 0: "none", allowed over IPv4.
        pkt[28..].copy_from_slice(payload);
        // SAFETY: sockaddr_in is plain old data; all-zero is valid before filling it in.
        let mut to: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        to.sin_family = libc::AF_INET as libc::sa_family_t;
        to.sin_addr.s_addr = u32::from(*dst.ip()).to_be();
        // SAFETY: pkt and to are live for the call and their lengths are passed.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&to as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The Internet checksum (RFC 1071) of an IPv4 header.
fn checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}
