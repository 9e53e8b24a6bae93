//! The `kv-tui` command line: flags, `kv://` URLs, logging, then [`crate::tui::runner::run`].
//! `main.rs`-style code lives here (with `anyhow`) so the whole-system tests can build a
//! binary that is `kv-tui`, line for line.
//!
//! ```text
//! kv-tui [--server HOST:PORT] [--uid UID] [kv://HOST:PORT/CHANNEL]
//! kv-tui --demo
//! ```

use std::process::ExitCode;

use crate::identity::IdentityStore;
use crate::tui::backend::Identity;
use crate::tui::config::{config_dir, Settings};
use crate::tui::runner::{init_logging, run, JoinTarget, Options};
use anyhow::bail;
use anyhow::Context;
use clap::Parser;

/// Terminal client for KV voice chat.
#[derive(Debug, Parser)]
#[command(name = "kv-tui", version = crate::VERSION, about)]
struct Args {
    /// Server control address [default: the settings' server, else 127.0.0.1:8085].
    #[arg(long)]
    server: Option<String>,
    /// Act as this user id instead of the one stored for the server (signing with its
    /// stored key, if there is one).
    #[arg(long, conflicts_with = "identity")]
    uid: Option<u64>,
    /// Act as the user of this identity file (e.g. the server's `admin.key`).
    #[arg(long, value_name = "FILE")]
    identity: Option<std::path::PathBuf>,
    /// Start an embedded server on loopback with a talking bot, and join it.
    #[arg(long, conflicts_with_all = ["server", "uid", "identity", "url"])]
    demo: bool,
    /// `kv://HOST:PORT/CHANNEL`: server and channel (id or name) to join at once.
    url: Option<String>,
}

/// `kv-tui`'s command line, for generated shell completions and man pages (`kv-dist`).
pub fn command() -> clap::Command {
    <Args as clap::CommandFactory>::command()
}

/// Splits `kv://host:port/channel` (port and channel optional; a channel is an id or a
/// name, percent-escapes not needed for plain names).
fn parse_url(url: &str) -> anyhow::Result<(String, Option<JoinTarget>)> {
    let Some(rest) = url.strip_prefix("kv://") else {
        bail!("{url:?} is not a kv:// URL (kv://HOST:PORT/CHANNEL)");
    };
    let (host, chan) = match rest.split_once('/') {
        Some((h, c)) => (h, c.trim_end_matches('/')),
        None => (rest, ""),
    };
    if host.is_empty() {
        bail!("{url:?} has no host");
    }
    let chid = if chan.is_empty() {
        None
    } else if let Ok(id) = chan.parse::<u64>() {
        Some(JoinTarget::Id(id))
    } else if chan.len() <= kv_proto::MAX_NAME_LEN {
        Some(JoinTarget::Name(chan.to_string()))
    } else {
        bail!(
            "channel name in {url:?} is longer than {} bytes",
            kv_proto::MAX_NAME_LEN
        );
    };
    Ok((host.to_string(), chid))
}

/// Runs `kv-tui` with the process's arguments; errors are printed as one line.
pub fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kv-tui: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = config_dir()?;
    let log = init_logging(&dir).with_context(|| format!("log file in {}", dir.display()))?;
    tracing::info!(log = %log.display(), "starting");

    #[cfg(not(feature = "embedded-server"))]
    if args.demo {
        bail!("--demo needs the embedded server: build kv-client with the embedded-server feature");
    }
    #[cfg(feature = "embedded-server")]
    if args.demo {
        let demo = crate::tui::demo::Demo::start().context("starting the demo")?;
        let opts = Options {
            server: demo.server_addr(),
            identity: Identity::Fixed(Box::new(demo.user())),
            join: Some(JoinTarget::Id(demo.channel())),
            config_dir: dir,
            // The demo's server lives in this process, with a new key each time.
            trust: None,
        };
        let result = run(opts);
        demo.stop();
        return result.map_err(Into::into);
    }

    let settings = Settings::load(&dir)?;
    let (mut server, join) = match &args.url {
        Some(u) => {
            let (s, c) = parse_url(u)?;
            (Some(s), c)
        }
        None => (None, None),
    };
    if args.server.is_some() {
        server = args.server.clone();
    }
    let server = server
        .or(settings.server.clone())
        .unwrap_or_else(|| format!("127.0.0.1:{}", kv_proto::DEFAULT_CONTROL_PORT));
    let store = IdentityStore::at(&dir);
    let identity = match (args.uid, &args.identity) {
        (_, Some(file)) => Identity::Fixed(Box::new(crate::identity::Acting::from_file(file)?)),
        (Some(uid), None) => Identity::Fixed(Box::new(store.acting(uid)?)),
        (None, None) => Identity::Stored(store),
    };
    run(Options {
        server,
        identity,
        join,
        trust: Some(crate::control::KnownServers::at(&dir)),
        config_dir: dir,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{parse_url, JoinTarget};

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("kv://h:9/12").unwrap(),
            ("h:9".to_string(), Some(JoinTarget::Id(12)))
        );
        assert_eq!(parse_url("kv://h").unwrap(), ("h".to_string(), None));
        assert!(parse_url("http://h/1").is_err());
        assert_eq!(
            parse_url("kv://h/lobby/").unwrap(),
            ("h".to_string(), Some(JoinTarget::Name("lobby".into())))
        );
        assert!(parse_url("kv:///1").is_err());
    }
}
