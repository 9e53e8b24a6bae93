//! The headless `kv` client: argument parsing and the one-shot commands. `bin/kv.rs` is a
//! single call into [`main`], so the whole-system tests can build an identical binary.
//!
//! Output contract (scripts rely on it): `register` prints the uid alone on a line,
//! `channels` one id per line, `create` the new id; errors are one line on stderr,
//! `kv: <message>`, with exit status 1 (2 for bad usage, from clap). `join --json` prints
//! one JSON object per line on stdout (see [`json`]).

mod admin;
#[cfg(feature = "embedded-server")]
mod bench;
mod join;
mod json;

use std::process::ExitCode;

use anyhow::{Context, Result};

use clap::{Parser, Subcommand};

use crate::control::{ControlClient, KnownServers};
use crate::identity::{server_signs, Acting, IdentityStore};

/// Default control address.
pub const DEFAULT_SERVER: &str = "127.0.0.1:8085";

/// Command line of `kv`.
#[derive(Debug, Parser)]
#[command(name = "kv", version = crate::VERSION, about = "KV headless voice client")]
struct Cli {
    /// Control address of the server.
    #[arg(long, global = true, default_value = DEFAULT_SERVER, value_name = "HOST:PORT")]
    server: String,
    /// Act as this user instead of the stored identity (signing with its stored key, if
    /// there is one).
    #[arg(long, global = true, value_name = "UID", conflicts_with = "identity")]
    uid: Option<u64>,
    /// Act as the user of this identity file (e.g. the server's `admin.key`).
    #[arg(long, global = true, value_name = "FILE")]
    identity: Option<std::path::PathBuf>,
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
        /// End-to-end encrypted: voice and chat only members can read (PROTOCOL.md).
        #[arg(long)]
        encrypted: bool,
    },
    /// Say TEXT in an encrypted channel's chat: joins its group, sends, leaves; prints the
    /// message's position in the channel's order.
    Say {
        /// Channel id.
        chid: u64,
        /// The message.
        text: String,
    },
    /// Delete a channel.
    Delete {
        /// Channel id.
        chid: u64,
    },
    /// Join a channel: stream the input, record what is heard.
    Join(join::JoinArgs),
    /// Moderation, as a perm_admin holder (e.g. `--identity DATA_DIR/admin.key`).
    Admin {
        /// What to do.
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
    /// Measure CPU per frame and mouth-to-ear latency through an in-process server.
    #[cfg(feature = "embedded-server")]
    Bench(bench::BenchArgs),
}

/// `kv`'s command line, for generated shell completions and man pages (`kv-dist`).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// Entry point of `kv`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let uid = cli.uid;
    match run(cli).map_err(|e| explain_access(e, uid)) {
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

/// An ACCESS for `--uid` of a user without a stored key most likely means the server
/// takes signed requests only (no `--allow-unsigned`); say so instead of a bare "access
/// denied".
fn explain_access(e: anyhow::Error, uid: Option<u64>) -> anyhow::Error {
    let denied = e.chain().any(|c| {
        c.downcast_ref::<crate::control::ControlError>()
            .and_then(|c| c.code())
            .or_else(|| match c.downcast_ref::<crate::session::SessionError>() {
                Some(crate::session::SessionError::Control(c)) => c.code(),
                _ => None,
            })
            == Some(kv_proto::ErrorCode::Access)
    });
    let keyless = uid.filter(|&u| {
        IdentityStore::open_default().is_ok_and(|s| s.key(u).is_ok_and(|k| k.is_none()))
    });
    match keyless {
        Some(u) if denied => e.context(format!(
            "user {u} has no key in this config dir; a server without --allow-unsigned \
             refuses unsigned requests (use the stored identity, or --identity FILE)"
        )),
        _ => e,
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
    /// Checks (and pins on first use) the server's key in the config dir.
    control: ControlClient,
    store: IdentityStore,
    uid: Option<u64>,
    identity: Option<std::path::PathBuf>,
}

impl Target {
    fn new(server: &str, uid: Option<u64>, identity: Option<std::path::PathBuf>) -> Result<Self> {
        let store = IdentityStore::open_default()?;
        let control = ControlClient::new(server)?.with_trust(KnownServers::at(store.dir()));
        Ok(Self {
            control,
            store,
            uid,
            identity,
        })
    }

    /// `--identity`, else `--uid` (with its stored key), else the stored identity for this
    /// server (signing up, with a new key, on first use).
    fn acting(&self) -> Result<Acting> {
        if let Some(file) = &self.identity {
            return Ok(Acting::from_file(file)?);
        }
        if let Some(u) = self.uid {
            return Ok(self.store.acting(u)?);
        }
        Ok(self.store.identity_for(&self.control)?)
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    #[cfg(feature = "embedded-server")]
    if let Command::Bench(args) = &cli.command {
        return bench::run(args);
    }
    let ctx = Target::new(&cli.server, cli.uid, cli.identity.clone())?;
    match cli.command {
        Command::Register => {
            // Always a plain sign-up: the server gives self-registered users its default
            // permissions (creating channels), which an admin-made user with none lacks.
            // With a new key (kept in the config dir) where the server takes signatures.
            let store = &ctx.store;
            let uid = if server_signs(&ctx.control)? {
                let me = crate::identity::keyed_user(&ctx.control)?;
                if let Some(k) = &me.key {
                    store.save_key(k)?;
                }
                me.uid
            } else {
                ctx.control.register(0, kv_proto::Perms::NONE)?
            };
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
        Command::Create { name, encrypted } => {
            let me = ctx.acting()?;
            let (uid, control) = (me.uid, me.client(&ctx.control));
            let chid = if encrypted {
                control.create_encrypted(uid)?
            } else {
                control.create(uid)?
            };
            if let Some(n) = name {
                control
                    .set_channel_name(uid, chid, &n)
                    .with_context(|| format!("channel {chid} created, but naming it failed"))?;
            }
            println!("{chid}");
        }
        Command::Delete { chid } => {
            let me = ctx.acting()?;
            me.client(&ctx.control).delete(me.uid, chid)?;
        }
        Command::Join(args) => return join::run(&ctx, &cli.server, args),
        Command::Say { chid, text } => {
            let me = ctx.acting()?;
            let seq = say(&me.client(&ctx.control), me.uid, chid, &text)?;
            println!("{seq}");
        }
        Command::Admin { command } => admin::run(&ctx, command)?,
        #[cfg(feature = "embedded-server")]
        Command::Bench(_) => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// How long `kv say` waits for the group and for its message's place in the order.
const SAY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// `kv say`: a member for as long as it takes to send one message.
fn say(control: &ControlClient, uid: u64, chid: u64, text: &str) -> Result<u64> {
    use crate::e2ee::{CryptoEvent, PushChannel};
    anyhow::ensure!(
        control.channel_encrypted(chid)?,
        "channel {chid} is not end-to-end encrypted; chat needs an encrypted channel"
    );
    let mut chan = PushChannel::open(control, chid)?;
    // An X25519 key nobody holds: `kv say` never binds a voice address.
    control.join_kex(uid, uid, chid, rand::random())?;
    let result = (|| -> Result<u64> {
        chan.start()?;
        chan.say(text)?;
        let mut seq = None;
        chan.poll_until(SAY_TIMEOUT, |e| match e {
            CryptoEvent::Message { seq: s, sender, .. } if *sender == uid => {
                seq = Some(*s);
                true
            }
            _ => false,
        })?;
        seq.with_context(|| format!("no answer from the server within {SAY_TIMEOUT:?}"))
    })();
    let _ = control.leave(uid, uid, chid);
    chan.close();
    result
}
