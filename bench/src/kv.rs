//! Starting a real kv-server and setting up users and channels through its control port.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kv_proto::ControlRequest;

use crate::control;
use crate::target::free_port;

/// Per-member packet rate the bench allows the server, far above 50 pps so flood mode
/// measures the relay rather than its rate cap.
pub const BENCH_MEMBER_PPS: u32 = 1_000_000;

/// Spawns `server` with its data in `dir`, listening on a free 127.0.0.1 port, and waits
/// until its control port answers.
pub fn spawn(server: &Path, dir: &Path) -> Result<(Child, SocketAddr)> {
    if !server.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p kv-server) or pass --server",
            server.display()
        );
    }
    let addr = free_port()?;
    let mut child = Command::new(server)
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--data-dir")
        .arg(dir)
        .arg("--max-member-pps")
        .arg(BENCH_MEMBER_PPS.to_string())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("spawn {}", server.display()))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("kv-server exited at start: {status}");
        }
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return Ok((child, addr));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("kv-server did not listen on {addr} within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Registers `channels * members` users, has the first member of each channel create it,
/// and joins every member. Returns each channel's UDP port and member uids.
pub fn setup(
    ctl: SocketAddr,
    channels: usize,
    members: usize,
) -> Result<(Vec<u16>, Vec<Vec<u64>>)> {
    let mut ports = Vec::with_capacity(channels);
    let mut uids = Vec::with_capacity(channels);
    for _ in 0..channels {
        let mut ch_uids = Vec::with_capacity(members);
        for _ in 0..members {
            ch_uids.push(control::value(
                ctl,
                &ControlRequest::Register { auid: 0, perm: 0 },
            )?);
        }
        let owner = ch_uids[0];
        let chid = control::value(ctl, &ControlRequest::Create { uid: owner })?;
        let mut port = 0;
        for &u in &ch_uids {
            port = control::value(
                ctl,
                &ControlRequest::Join {
                    uid: u,
                    juid: u,
                    chid,
                },
            )?;
        }
        ports.push(u16::try_from(port).context("JOIN returned a port out of range")?);
        uids.push(ch_uids);
    }
    Ok((ports, uids))
}
