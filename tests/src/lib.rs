//! Helpers for whole-system tests: start the real server binary, speak raw bytes to it.
//!
//! - [`server`]: [`ServerProcess`] spawns the server on `127.0.0.1:0` with a temporary data
//!   directory, reads its `listening on` / `admin uid` lines, and can stop (SIGTERM), kill
//!   (SIGKILL) and restart it on the same data. Its stderr is kept and printed if a test
//!   panics while it runs.
//! - [`control`]: one TCP request/reply exchange, as typed messages or raw bytes.
//! - [`udp`]: [`UdpPeer`], a channel member with its own socket: the binding handshake,
//!   keepalives, voice packets, and receiving with session MAC checks.
//! - [`spoof`]: [`spoof::Spoofer`], datagrams with a forged source address (raw socket,
//!   root), within 127.0.0.0/8.
//! - [`kv`]: runs the headless client (`kv join --json` as [`kv::KvJoin`], one-shot
//!   commands) and reads its JSON events and WAV files.
//! - [`lossy`]: [`lossy::LossyRelay`], the network emulator: a seeded impairment proxy
//!   (loss, Gilbert-Elliott bursts, FIFO queueing jitter, delay spikes, reordering,
//!   duplication, trace replay), each direction on its own.
//! - [`playout`]: talker → server → proxy → listener runs scored with PESQ-WB
//!   (`bench/playout/score.py`), for the playout tests and the `playout-bench` binary.
//! - [`tmux`]: [`tmux::Tmux`], a private tmux server to drive `kv-tui` in a real terminal.
//! - [`pulse`]: [`pulse::Pulse`], a private PulseAudio with null sinks for the device tests.
//!
//! Binaries are found by [`bin_path`]: `KV_SERVER_BIN` (etc.) if set, else next to the
//! test executable in `target/<profile>/`, where cargo builds this package's binaries
//! before running its integration tests.

pub mod control;
pub mod e2ee;
pub mod kv;
pub mod lossy;
pub mod playout;
pub mod pulse;
pub mod server;
pub mod spoof;
pub mod tap;
pub mod tmux;
pub mod udp;

pub use control::{exchange, request, request_padded};
pub use server::ServerProcess;
pub use udp::UdpPeer;

use std::path::PathBuf;

/// Path of a binary built into the same target directory as the running test, or the
/// path in environment variable `env_override` if set. Panics with instructions when the
/// binary is missing.
pub fn bin_path(name: &str, env_override: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env_override) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current test executable");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "binary {} not found; build it with `cargo test -p kv-tests` (which builds this \
         package's binaries) or `cargo build --workspace`, or point {env_override} at it",
        path.display()
    );
    path
}

/// Wall-clock time in unix milliseconds (signed requests carry it).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Points the test helpers at the `kv-server` and `kv` next to the running binary (the
/// benchmarks' release builds), unless `KV_SERVER_BIN` / `KV_BIN` are set; `RUST_LOG` is
/// `info` unless set.
pub fn use_sibling_binaries() -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe.parent().ok_or("no directory")?.to_path_buf();
    for (var, name) in [("KV_SERVER_BIN", "kv-server"), ("KV_BIN", "kv")] {
        if std::env::var_os(var).is_some() {
            continue;
        }
        let path = dir.join(name);
        if !path.exists() {
            return Err(format!(
                "{} not found: build it with `cargo build --release -p kv-client -p kv-server`, \
                 or set {var}",
                path.display()
            ));
        }
        std::env::set_var(var, path);
    }
    if std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("RUST_LOG", "info");
    }
    Ok(())
}
