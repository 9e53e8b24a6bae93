//! Starting a real kv-server and setting up users and channels through its control port.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

use anyhow::{bail, Context, Result};
use kv_proto::ControlRequest;

use crate::control;

/// Per-member packet rate the bench allows the server, far above 50 pps so flood mode
/// measures the relay rather than its rate cap.
pub const BENCH_MEMBER_PPS: u32 = 1_000_000;

/// Spawns `server` with its data in `dir`, listening on a free 127.0.0.1 port (with
/// `--allow-unsigned` and no sign-up rate limit: the load generator's users are key-less
/// and registered by the thousand from one address), and reads
/// its start-up lines (`listening on IP:PORT`, `admin uid: N`) to find the control port.
/// Returns the child and its stdout, which must stay open while the server runs.
pub fn spawn(server: &Path, dir: &Path) -> Result<(Child, ChildStdout, SocketAddr)> {
    if !server.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p kv-server) or pass --server",
            server.display()
        );
    }
    let mut child = Command::new(server)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .arg("--max-member-pps")
        .arg(BENCH_MEMBER_PPS.to_string())
        .args(["--allow-unsigned", "--register-rate", "0"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn {}", server.display()))?;
    let stdout = child.stdout.take().context("kv-server stdout")?;
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let addr: SocketAddr = match line.trim().strip_prefix("listening on ").map(str::parse) {
        Some(Ok(a)) => a,
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("kv-server said {line:?} instead of `listening on IP:PORT`");
        }
    };
    line.clear();
    reader.read_line(&mut line)?;
    Ok((child, reader.into_inner(), addr))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{send_paced, Fleet, Receivers};
    use std::sync::atomic::AtomicBool;
    use std::time::{Duration, Instant};

    /// The generator against a real kv-server (in process): setup over TCP, binding with
    /// KEEPALIVE/ACK, and every copy forwarded.
    #[test]
    fn setup_bind_and_forward_through_kv_server() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = std::env::temp_dir().join(format!("kv-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut config = kv_server::Config::new("127.0.0.1:0".parse().unwrap(), dir.clone());
        config.max_member_pps = BENCH_MEMBER_PPS;
        config.allow_unsigned = true;
        config.register_rate = 0;
        let server = rt.block_on(kv_server::Server::bind(config)).unwrap();
        let ctl = server.local_addr();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let running = rt.spawn(server.run(async {
            let _ = stop_rx.await;
        }));

        let (ports, uids) = setup(ctl, 2, 3).unwrap();
        assert_eq!(ports.len(), 2);
        assert!(uids.iter().all(|u| u.len() == 3));
        let fleet = Fleet::bind(std::net::Ipv4Addr::LOCALHOST, &ports, &uids, 3).unwrap();
        fleet.announce(true).unwrap();
        let epoch = Instant::now();
        let rx = Receivers::start(&fleet, 1, epoch).unwrap();
        let sent = send_paced(
            &fleet,
            &fleet.speakers(),
            600.0,
            Duration::from_millis(200),
            7,
            epoch,
            &AtomicBool::new(false),
        );
        assert_eq!(sent.packets, 120);
        assert_eq!(sent.expected, 240);
        rx.wait_quiet(Duration::from_secs(3));
        assert_eq!(rx.received(7), 240);
        rx.stop().unwrap();

        let _ = stop_tx.send(());
        rt.block_on(running).unwrap().unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }
}
