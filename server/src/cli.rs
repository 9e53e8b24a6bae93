//! The `kv-server` command line: flags, logging, runtime, signals.
//!
//! On start it prints exactly two lines to stdout, `listening on IP:PORT` (the real port
//! when `--listen` asked for port 0) and `admin uid: N`, so scripts and tests can find the
//! server. The uid is printed for scripts; it grants nothing (acting as the admin needs the
//! key in `admin.key`). Logs go to stderr; `RUST_LOG` sets the level (default `info`), and
//! no secret or uid is logged at `info`.

use std::io::Write;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use kv_proto::Perms;

use crate::config::Config;
use crate::error::ServerError;
use crate::server::Server;

/// KV voice relay server: TCP control plus one UDP relay socket per channel.
#[derive(Debug, Parser)]
#[command(name = "kv-server", version, about, args_override_self = true)]
pub struct Args {
    /// TCP control address; channel sockets bind to its IP. Port 0 picks a free port.
    #[arg(long, default_value = "0.0.0.0:8085")]
    pub listen: SocketAddr,
    /// Where the database and the server key live [default: the platform data dir,
    /// e.g. ~/.local/share/kv-server].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Port range for channel sockets, LOW-HIGH (for firewalls); default: the OS picks.
    #[arg(long, value_parser = parse_port_range)]
    pub udp_ports: Option<RangeInclusive<u16>>,
    /// Seconds of silence after which a member is removed from its channel (fractions ok).
    #[arg(long, default_value = "60", value_parser = parse_secs)]
    pub peer_timeout: Duration,
    /// Permission bits of self-registered users, decimal or 0x-hex [default: 8, perm_add_channel].
    #[arg(long, default_value = "8", value_parser = parse_perms)]
    pub default_perms: u64,
    /// Most control connections served at once; more wait in the backlog (lowered to what
    /// the descriptor limit allows).
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Most control connections from one IPv4 address or IPv6 /64 at once; more are
    /// answered SERV.
    #[arg(long, default_value_t = 16)]
    pub max_connections_per_ip: usize,
    /// Seconds a control connection may take to send its request (fractions ok).
    #[arg(long, default_value = "10", value_parser = parse_secs)]
    pub request_timeout: Duration,
    /// Packets per second one channel member may send; the excess is dropped.
    #[arg(long, default_value_t = 1000)]
    pub max_member_pps: u32,
    /// Most members per channel.
    #[arg(long, default_value_t = 1024)]
    pub max_members: usize,
    /// Most channels on the server.
    #[arg(long, default_value_t = 1024)]
    pub max_channels: usize,
    /// Serve the seed's unsigned commands, for users that have no key only (the seed's
    /// prototype client). Off: every unsigned command that changes something is ACCESS.
    #[arg(long)]
    pub allow_unsigned: bool,
    /// Most channels one user may own (perm_admin is exempt); a user's channels are
    /// deleted with the user.
    #[arg(long, default_value_t = 8)]
    pub max_channels_per_user: usize,
    /// Sign-ups (REGISTER with auid 0) per minute per IPv4 address or IPv6 /64; 0 = no limit.
    #[arg(long, default_value_t = 30)]
    pub register_rate: u32,
    /// Seconds a control connection may stay silent before its first byte (fractions ok).
    #[arg(long, default_value = "2", value_parser = parse_secs)]
    pub first_byte_timeout: Duration,
}

impl Args {
    /// The server configuration these flags describe.
    pub fn into_config(self) -> Result<Config, ServerError> {
        let data_dir = match self.data_dir {
            Some(d) => d,
            None => default_data_dir().ok_or(ServerError::NoDataDir)?,
        };
        let mut c = Config::new(self.listen, data_dir);
        c.udp_ports = self.udp_ports;
        c.peer_timeout = self.peer_timeout;
        c.default_perms = Perms(self.default_perms);
        c.max_connections = self.max_connections;
        c.max_connections_per_ip = self.max_connections_per_ip;
        c.request_timeout = self.request_timeout;
        c.max_member_pps = self.max_member_pps;
        c.max_members = self.max_members;
        c.max_channels = self.max_channels;
        c.allow_unsigned = self.allow_unsigned;
        c.max_channels_per_user = self.max_channels_per_user;
        c.register_rate = self.register_rate;
        c.first_byte_timeout = self.first_byte_timeout;
        Ok(c)
    }
}

/// The platform's data directory for kv-server (XDG on Linux).
pub fn default_data_dir() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "kv-server").map(|d| d.data_dir().to_path_buf())
}

fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>, String> {
    let (lo, hi) = s
        .split_once('-')
        .ok_or_else(|| format!("expected LOW-HIGH, got {s:?}"))?;
    let lo: u16 = lo.trim().parse().map_err(|e| format!("LOW: {e}"))?;
    let hi: u16 = hi.trim().parse().map_err(|e| format!("HIGH: {e}"))?;
    if lo == 0 || lo > hi {
        return Err(format!("need 1 <= LOW <= HIGH, got {lo}-{hi}"));
    }
    Ok(lo..=hi)
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if !(v.is_finite() && v > 0.0 && v < 1e9) {
        return Err(format!("need a positive number of seconds, got {s}"));
    }
    Ok(Duration::from_secs_f64(v))
}

fn parse_perms(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("{e}"))
}

/// Logs to stderr at `RUST_LOG`'s level (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called (not
/// when first polled), so a signal sent right after the start-up lines is never missed.
/// Must be called inside the runtime.
pub fn stop_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                (term, int) => {
                    let e = term.err().or(int.err());
                    tracing::warn!(error = ?e, "cannot watch SIGTERM/SIGINT; using ctrl-c only");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
            tracing::info!("stop signal received");
        }
    }
    #[cfg(not(unix))]
    async move {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("stop signal received");
    }
}

/// Runs a server with `config` until SIGINT/SIGTERM, printing the two start-up lines.
pub async fn serve(config: Config) -> Result<(), ServerError> {
    let stop = stop_signal();
    let server = Server::bind(config).await?;
    let mut out = std::io::stdout().lock();
    let printed = writeln!(out, "listening on {}", server.local_addr())
        .and_then(|_| writeln!(out, "admin uid: {}", server.admin_uid()))
        .and_then(|_| out.flush());
    drop(out);
    if let Err(e) = printed {
        tracing::warn!(error = %e, "cannot print start-up lines");
    }
    tracing::info!(addr = %server.local_addr(), "listening");
    server.run(stop).await
}

/// The whole program: parse flags, run, map the outcome to an exit code.
pub fn main() -> ExitCode {
    let args = Args::parse();
    // Everything the server creates (database, WAL, keys) is for its owner only.
    // SAFETY: umask(2) only changes this process's file creation mask.
    unsafe { libc::umask(0o077) };
    init_tracing();
    let config = match args.into_config() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_parsers() {
        assert_eq!(parse_port_range("4000-4010"), Ok(4000..=4010));
        assert!(parse_port_range("10-5").is_err());
        assert!(parse_port_range("0-5").is_err());
        assert!(parse_port_range("5").is_err());
        assert_eq!(parse_secs("0.25"), Ok(Duration::from_millis(250)));
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("nan").is_err());
        assert_eq!(parse_perms("0x7fffffff"), Ok(0x7FFF_FFFF));
        assert_eq!(parse_perms("40"), Ok(40));
    }

    #[test]
    fn defaults_match_the_issue() {
        let a = Args::parse_from(["kv-server", "--data-dir", "/tmp/x"]);
        let c = a.into_config().unwrap();
        assert_eq!(c.listen, "0.0.0.0:8085".parse().unwrap());
        assert_eq!(c.peer_timeout, Duration::from_secs(60));
        assert_eq!(c.default_perms, Perms::ADD_CHANNEL);
        // The flags' defaults and `Config::new` are written twice; they must not drift.
        assert_eq!(c, Config::new(c.listen, "/tmp/x".into()));
        assert!(
            !c.allow_unsigned,
            "signatures are required unless asked otherwise"
        );
        // A repeated flag overrides (test harnesses add defaults before a test's own).
        let a = Args::parse_from(["kv-server", "--register-rate", "5", "--register-rate", "0"]);
        assert_eq!(a.register_rate, 0);
    }
}
