//! The headless `kv` client: argument parsing and the one-shot commands. `bin/kv.rs` is a
//! single call into [`main`], so the whole-system tests can build an identical binary.
//!
//! Output contract (scripts rely on it): `register` prints the uid alone on a line,
//! `channels` one id per line, `create` the new id; errors are one line on stderr,
//! `kv: <message>`, with exit status 1 (2 for bad usage, from clap). `join --json` prints
//! one JSON object per line on stdout (see [`json`]).

mod bench;
mod join;
mod json;

use std::process::ExitCode;

use anyhow::{Context, Result};

use clap::{Parser, Subcommand};

use crate::control::ControlClient;
use crate::identity::IdentityStore;

/// Default control address.
pub const DEFAULT_SERVER: &str = "127.0.0.1:8085";

/// Command line of `kv`.
#[derive(Debug, Parser)]
#[command(name = "kv", version, about = "KV headless voice client")]
struct Cli {
    /// Control address of the server.
    #[arg(long, global = true, default_value = DEFAULT_SERVER, value_name = "HOST:PORT")]
    server: String,
    /// Act as this user instead of the stored identity.
    #[arg(long, global = true, value_name = "UID")]
    uid: Option<u64>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Register a new user and print its uid (stored as the identity if none is yet).
    Register,
    /// List channel ids, one per line.
    Channels,
    /// Create a channel and print its id.
    Create {
        /// Give the channel a name.
        #[arg(long, value_name = "N")]
        name: Option<String>,
    },
    /// Delete a channel.
    Delete {
        /// Channel id.
        chid: u64,
    },
    /// Join a channel: stream the input, record what is heard.
    Join(join::JoinArgs),
    /// Measure CPU per frame and mouth-to-ear latency through an in-process server.
    Bench(bench::BenchArgs),
}

/// Entry point of `kv`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // One line: the outermost context and the causes it does not already quote.
            let mut msg = String::new();
            for cause in e.chain().map(|c| c.to_string()) {
                if !msg.contains(&cause) {
                    if !msg.is_empty() {
                        msg.push_str(": ");
                    }
                    msg.push_str(&cause);
                }
            }
            eprintln!("kv: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, quiet unless `RUST_LOG` asks, so stdout stays machine-readable.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The server and identity every command acts with.
#[derive(Debug)]
struct Target {
    control: ControlClient,
    uid: Option<u64>,
}

impl Target {
    fn new(server: &str, uid: Option<u64>) -> Result<Self> {
        Ok(Self {
            control: ControlClient::new(server)?,
            uid,
        })
    }

    /// `--uid`, else the stored identity for this server (registering on first use).
    fn uid(&self) -> Result<u64> {
        if let Some(u) = self.uid {
            return Ok(u);
        }
        let store = IdentityStore::open_default()?;
        Ok(store.uid_for(&self.control)?)
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let ctx = match cli.command {
        Command::Bench(args) => return bench::run(&args),
        _ => Target::new(&cli.server, cli.uid)?,
    };
    match cli.command {
        Command::Register => {
            // Always a plain sign-up: the server gives self-registered users its default
            // permissions (creating channels), which an admin-made user with none lacks.
            let uid = ctx.control.register(0, kv_proto::Perms::NONE)?;
            let store = IdentityStore::open_default()?;
            if store.get(ctx.control.addr())?.is_none() {
                store.set(ctx.control.addr(), uid)?;
            }
            println!("{uid}");
        }
        Command::Channels => {
            for id in ctx.control.channels()? {
                println!("{id}");
            }
        }
        Command::Create { name } => {
            let uid = ctx.uid()?;
            let chid = ctx.control.create(uid)?;
            if let Some(n) = name {
                ctx.control
                    .set_channel_name(uid, chid, &n)
                    .with_context(|| format!("channel {chid} created, but naming it failed"))?;
            }
            println!("{chid}");
        }
        Command::Delete { chid } => {
            ctx.control.delete(ctx.uid()?, chid)?;
        }
        Command::Join(args) => return join::run(&ctx, &cli.server, args),
        Command::Bench(_) => {}
    }
    Ok(ExitCode::SUCCESS)
}
