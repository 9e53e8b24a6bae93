//! The `kv-server` command line: flags, logging, runtime, signals.
//!
//! On start it prints exactly two lines to stdout, `listening on IP:PORT` (the real port
//! when `--listen` asked for port 0) and `admin uid: N`, so scripts and tests can find the
//! server; with `--metrics`, `metrics on IP:PORT` comes before them. The configuration
//! comes from the flags over the file ([`crate::settings`]); SIGHUP reads it again
//! ([`crate::reload`]). `kv-server backup FILE` copies the database ([`crate::backup`]). The uid is printed for scripts; it grants nothing (acting as the admin needs the
//! key in `admin.key`). Logs go to stderr; `RUST_LOG` sets the level (default `info`), and
//! no secret or uid is logged at `info`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::error::ServerError;
use crate::server::Server;
use crate::settings::{
    default_config_file, LogFormat, PermBits, PortRange, Seconds, Settings, SettingsError,
};

/// KV voice relay server: TCP control plus one UDP relay socket per channel.
///
/// Every flag also has a key in the configuration file (`--max-members` is `max_members`);
/// a flag given on the command line wins over the file.
#[derive(Debug, Parser)]
#[command(name = "kv-server", version = crate::VERSION, about, args_override_self = true)]
pub struct Args {
    /// Configuration file (TOML) [default: $XDG_CONFIG_HOME/kv-server/config.toml if it
    /// exists, else /etc/kv-server/config.toml if it exists]. SIGHUP reads it again.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration (defaults, file and flags combined) as TOML, and exit.
    #[arg(long)]
    pub print_config: bool,
    /// TCP control address; channel sockets bind to its IP. Port 0 picks a free port
    /// [default: 0.0.0.0:8085].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Where the database and the server key live [default: the platform data dir,
    /// e.g. ~/.local/share/kv-server].
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Port range for channel sockets, LOW-HIGH (for firewalls) [default: the OS picks].
    #[arg(long, value_name = "LOW-HIGH")]
    pub udp_ports: Option<PortRange>,
    /// Seconds of silence after which a member is removed from its channel (fractions ok)
    /// [default: 60].
    #[arg(long, value_name = "SECS")]
    pub peer_timeout: Option<Seconds>,
    /// Permission bits of self-registered users, decimal or 0x-hex [default: 8, perm_add_channel].
    #[arg(long, value_name = "BITS")]
    pub default_perms: Option<PermBits>,
    /// Most control connections served at once; more wait in the backlog (lowered to what
    /// the descriptor limit allows) [default: 1024].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Most control connections from one IPv4 address or IPv6 /64 at once; more are
    /// answered SERV [default: 16].
    #[arg(long, value_name = "N")]
    pub max_connections_per_ip: Option<usize>,
    /// Seconds a control connection may take to send its request (fractions ok) [default: 10].
    #[arg(long, value_name = "SECS")]
    pub request_timeout: Option<Seconds>,
    /// Packets per second one channel member may send; the excess is dropped [default: 1000].
    #[arg(long, value_name = "N")]
    pub max_member_pps: Option<u32>,
    /// Most members per channel [default: 1024].
    #[arg(long, value_name = "N")]
    pub max_members: Option<usize>,
    /// Most channels on the server [default: 1024].
    #[arg(long, value_name = "N")]
    pub max_channels: Option<usize>,
    /// Serve the seed's unsigned commands, for users that have no key only (the seed's
    /// prototype client). Off: every unsigned command that changes something is ACCESS.
    #[arg(long)]
    pub allow_unsigned: bool,
    /// Most channels one user may own (perm_admin is exempt); a user's channels are
    /// deleted with the user [default: 8].
    #[arg(long, value_name = "N")]
    pub max_channels_per_user: Option<usize>,
    /// Sign-ups (REGISTER with auid 0) per minute per IPv4 address or IPv6 /64; 0 = no
    /// limit [default: 30].
    #[arg(long, value_name = "N")]
    pub register_rate: Option<u32>,
    /// Seconds a control connection may stay silent before its first byte (fractions ok)
    /// [default: 2].
    #[arg(long, value_name = "SECS")]
    pub first_byte_timeout: Option<Seconds>,
    /// Serve Prometheus metrics over HTTP on this address (GET /metrics) [default: off].
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// How log lines on stderr are written [default: text].
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Something other than serving.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// `kv-server`'s subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Copy the database, consistently, to FILE while the server runs (SQLite's online
    /// backup); restore by stopping the server and putting FILE in place of kv.sqlite3.
    Backup {
        /// Where the copy goes (must not exist yet).
        file: PathBuf,
    },
}

impl Args {
    /// The values the flags give (the top layer).
    pub fn settings(&self) -> Settings {
        Settings {
            listen: self.listen,
            data_dir: self.data_dir.clone(),
            udp_ports: self.udp_ports.clone(),
            peer_timeout: self.peer_timeout,
            default_perms: self.default_perms,
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            first_byte_timeout: self.first_byte_timeout,
            request_timeout: self.request_timeout,
            allow_unsigned: self.allow_unsigned.then_some(true),
            register_rate: self.register_rate,
            max_channels_per_user: self.max_channels_per_user,
            max_member_pps: self.max_member_pps,
            max_members: self.max_members,
            max_channels: self.max_channels,
            metrics: self.metrics,
            log_format: self.log_format,
        }
    }

    /// Where the configuration comes from: these flags over the file.
    pub fn source(&self) -> ConfigSource {
        ConfigSource {
            file: self.config.clone(),
            flags: self.settings(),
        }
    }
}

/// The flags and the configuration file, kept to read the file again on SIGHUP.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    /// `--config`, if given; otherwise [`default_config_file`] is looked for at each load.
    pub file: Option<PathBuf>,
    /// The flags' layer, always on top.
    pub flags: Settings,
}

impl ConfigSource {
    /// The file to read now, if any.
    pub fn file(&self) -> Option<PathBuf> {
        self.file.clone().or_else(default_config_file)
    }

    /// Reads the file (if any) and resolves the flags over it.
    pub fn load(&self) -> Result<(Config, LogFormat), SettingsError> {
        let file = match self.file() {
            Some(p) => Settings::load(&p)?,
            None => Settings::default(),
        };
        self.flags.clone().over(file).resolve(default_data_dir)
    }
}

/// `kv-server`'s command line, for generated shell completions and man pages (`kv-dist`).
pub fn command() -> clap::Command {
    <Args as clap::CommandFactory>::command()
}

/// The platform's data directory for kv-server (XDG on Linux).
pub fn default_data_dir() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "kv-server").map(|d| d.data_dir().to_path_buf())
}

/// Logs to stderr at `RUST_LOG`'s level (default `info`), as text or one JSON object a line.
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
    };
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

/// SIGHUP, watched from the moment this is called (`None` where it cannot be).
fn hangup_signal() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGHUP; no configuration reloads");
            None
        }
    }
}

/// On every SIGHUP: reads the configuration again (flags still on top) and applies it. A
/// file that does not load changes nothing.
async fn reload_on_hangup(
    hangup: Option<tokio::signal::unix::Signal>,
    source: ConfigSource,
    reloader: crate::reload::Reloader,
) {
    let Some(mut hangup) = hangup else { return };
    let reloader = std::sync::Arc::new(reloader);
    while hangup.recv().await.is_some() {
        let (source, reloader) = (source.clone(), reloader.clone());
        // File reading and the server's locks: off the async threads.
        let done = tokio::task::spawn_blocking(move || {
            let file = source.file();
            let file = file.as_deref().map(|p| p.display().to_string());
            match source.load() {
                Ok((config, _)) => {
                    let r = reloader.apply(config);
                    for key in &r.need_restart {
                        tracing::warn!(key, "changed in the configuration; restart to apply");
                    }
                    tracing::info!(file, applied = ?r.applied, "configuration reloaded");
                }
                Err(e) => tracing::error!(file, "configuration not reloaded: {e}"),
            }
        })
        .await;
        if done.is_err() {
            tracing::error!("configuration reload failed");
        }
    }
}

/// Runs a server with `config` until SIGINT/SIGTERM, printing the two start-up lines.
/// With a `source`, SIGHUP reads it again and applies what can change ([`crate::reload`]).
pub async fn serve(config: Config, source: Option<ConfigSource>) -> Result<(), ServerError> {
    let stop = stop_signal();
    // Installed before the start-up lines: SIGHUP's default action would end the server.
    let hangup = hangup_signal();
    let server = Server::bind(config.clone()).await?;
    if let Some(source) = source {
        tokio::spawn(reload_on_hangup(hangup, source, server.reloader(config)));
    }
    let mut out = std::io::stdout().lock();
    // Before the two lines scripts wait for, so they have it once they have those.
    if let Some(addr) = server.metrics_addr() {
        let _ = writeln!(out, "metrics on {addr}");
        tracing::info!(%addr, "metrics listening");
    }
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
    let source = args.source();
    // Before logging starts (the file says how to log): errors go to stderr plainly.
    let (config, log_format) = match source.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kv-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.print_config {
        return match Settings::effective(&config, log_format).to_toml() {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("kv-server: cannot print the configuration: {e}");
                ExitCode::FAILURE
            }
        };
    }
    init_tracing(log_format);
    if let Some(Command::Backup { file }) = &args.command {
        return match crate::backup::backup(&config.data_dir, file) {
            Ok(pages) => {
                tracing::info!(file = %file.display(), pages, "backup written");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::FAILURE
            }
        };
    }
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
    match runtime.block_on(serve(config, Some(source))) {
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
    use kv_proto::Perms;
    use std::time::Duration;

    fn resolve(args: &[&str]) -> Config {
        let a = Args::parse_from(args);
        a.settings().resolve(|| None).unwrap().0
    }

    #[test]
    fn defaults_match_the_issue() {
        let c = resolve(&["kv-server", "--data-dir", "/tmp/x"]);
        assert_eq!(c.listen, "0.0.0.0:8085".parse().unwrap());
        assert_eq!(c.peer_timeout, Duration::from_secs(60));
        assert_eq!(c.default_perms, Perms::ADD_CHANNEL);
        // The flags' defaults and `Config::new` must not drift.
        assert_eq!(c, Config::new(c.listen, "/tmp/x".into()));
        assert!(
            !c.allow_unsigned,
            "signatures are required unless asked otherwise"
        );
        // A repeated flag overrides (test harnesses add defaults before a test's own).
        let a = Args::parse_from(["kv-server", "--register-rate", "5", "--register-rate", "0"]);
        assert_eq!(a.register_rate, Some(0));
    }

    #[test]
    fn every_flag_reaches_the_config() {
        let c = resolve(&[
            "kv-server",
            "--data-dir=/d",
            "--listen=127.0.0.1:1",
            "--udp-ports=5-6",
            "--peer-timeout=0.5",
            "--default-perms=0x10",
            "--max-connections=2",
            "--max-connections-per-ip=3",
            "--request-timeout=4",
            "--max-member-pps=5",
            "--max-members=6",
            "--max-channels=7",
            "--allow-unsigned",
            "--max-channels-per-user=9",
            "--register-rate=10",
            "--first-byte-timeout=11",
            "--metrics=127.0.0.1:2",
        ]);
        let mut want = Config::new("127.0.0.1:1".parse().unwrap(), "/d".into());
        want.udp_ports = Some(5..=6);
        want.peer_timeout = Duration::from_millis(500);
        want.default_perms = Perms(0x10);
        want.max_connections = 2;
        want.max_connections_per_ip = 3;
        want.request_timeout = Duration::from_secs(4);
        want.max_member_pps = 5;
        want.max_members = 6;
        want.max_channels = 7;
        want.allow_unsigned = true;
        want.max_channels_per_user = 9;
        want.register_rate = 10;
        want.first_byte_timeout = Duration::from_secs(11);
        want.metrics = Some("127.0.0.1:2".parse().unwrap());
        assert_eq!(c, want);
    }
}
