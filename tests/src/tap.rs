//! A recording tap between clients and the server (issue 11's tap test): a TCP proxy for
//! the control port (every connection, both directions) and a UDP proxy for one client's
//! voice, each keeping every byte it forwarded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Everything a tap saw.
#[derive(Debug, Default)]
pub struct Capture {
    /// Control bytes, both directions, in arrival order per chunk.
    pub tcp: Vec<u8>,
    /// Datagrams from the client to the server.
    pub up: Vec<Vec<u8>>,
    /// Datagrams from the server to the client.
    pub down: Vec<Vec<u8>>,
}

/// A TCP proxy to `upstream` that records every byte.
#[derive(Debug)]
pub struct TcpTap {
    /// Where clients connect.
    pub addr: SocketAddr,
    capture: Arc<Mutex<Capture>>,
    stop: Arc<AtomicBool>,
}

fn copy(mut from: TcpStream, mut to: TcpStream, capture: Arc<Mutex<Capture>>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                capture
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .tcp
                    .extend_from_slice(&buf[..n]);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

impl TcpTap {
    /// Listens on 127.0.0.1 and forwards every connection to `upstream`.
    pub fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("tap listener");
        let addr = listener.local_addr().expect("tap address");
        let capture = Arc::new(Mutex::new(Capture::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (capture.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let (c1, c2) = (c.clone(), c.clone());
                let (client2, server2) = match (client.try_clone(), server.try_clone()) {
                    (Ok(a), Ok(b)) => (a, b),
                    _ => continue,
                };
                std::thread::spawn(move || copy(client, server, c1));
                std::thread::spawn(move || copy(server2, client2, c2));
            }
        });
        Self {
            addr,
            capture,
            stop,
        }
    }

    /// The control bytes so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.capture
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .tcp
            .clone()
    }
}

impl Drop for TcpTap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

/// A UDP proxy for one client: datagrams to `addr` go to the server from one socket of
/// ours, and the server's answers go back to the client's last address.
#[derive(Debug)]
pub struct UdpTap {
    /// Where the client sends voice (`kv join --voice-addr`).
    pub addr: SocketAddr,
    capture: Arc<Mutex<Capture>>,
    stop: Arc<AtomicBool>,
}

/// What a tap does to a datagram from the server before passing it on: the datagrams to
/// send the client instead (the original among them, or not).
pub type Mutate = fn(usize, &[u8]) -> Vec<Vec<u8>>;

impl UdpTap {
    /// Starts a tap in front of the channel socket `upstream`.
    pub fn start(upstream: SocketAddr) -> Self {
        Self::start_with(upstream, |_, d| vec![d.to_vec()])
    }

    /// Starts a tap that passes the server's `n`-th datagram to the client as `mutate`
    /// says (it records what the server sent).
    pub fn start_with(upstream: SocketAddr, mutate: Mutate) -> Self {
        let front = UdpSocket::bind("127.0.0.1:0").expect("tap socket");
        let back = UdpSocket::bind("127.0.0.1:0").expect("tap socket");
        back.connect(upstream).expect("tap upstream");
        let addr = front.local_addr().expect("tap address");
        let capture = Arc::new(Mutex::new(Capture::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let (f2, b2) = (
            front.try_clone().expect("clone"),
            back.try_clone().expect("clone"),
        );
        let _ = front.set_read_timeout(Some(Duration::from_millis(100)));
        let _ = b2.set_read_timeout(Some(Duration::from_millis(100)));
        let (c, s, who) = (capture.clone(), stop.clone(), client.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                if let Ok((n, from)) = front.recv_from(&mut buf) {
                    *who.lock().unwrap_or_else(|p| p.into_inner()) = Some(from);
                    c.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .up
                        .push(buf[..n].to_vec());
                    let _ = back.send(&buf[..n]);
                }
            }
        });
        let (c, s, who) = (capture.clone(), stop.clone(), client);
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut count = 0;
            while !s.load(Ordering::Relaxed) {
                if let Ok(n) = b2.recv(&mut buf) {
                    c.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .down
                        .push(buf[..n].to_vec());
                    if let Some(to) = *who.lock().unwrap_or_else(|p| p.into_inner()) {
                        for d in mutate(count, &buf[..n]) {
                            let _ = f2.send_to(&d, to);
                        }
                    }
                    count += 1;
                }
            }
        });
        Self {
            addr,
            capture,
            stop,
        }
    }

    /// Datagrams so far: (client to server, server to client).
    pub fn datagrams(&self) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let c = self.capture.lock().unwrap_or_else(|p| p.into_inner());
        (c.up.clone(), c.down.clone())
    }
}

impl Drop for UdpTap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
