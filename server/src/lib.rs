//! KV relay server: a TCP control plane and one UDP relay per voice channel.
//!
//! The wire format is `kv-proto`'s (WIRE.md plus the extensions of PROTOCOL.md); this crate
//! adds sockets, persistence and policy. Layout, from the outside in:
//!
//! - [`cli`]: command-line flags, logging, the tokio runtime and signal handling. `main.rs`
//!   is one call into it, so tests can build an identical binary (see `kv-tests`).
//! - [`server`]: binds the TCP listener, accepts connections under a connection cap, and
//!   runs the graceful shutdown. [`shutdown`] is the signal every task listens to;
//!   [`limit`] caps connections per client network, [`fds`] raises and budgets the
//!   descriptor table, [`register_rate`] limits sign-ups per network.
//! - [`control`]: one TCP exchange (`connection`) and the commands that act on the server's
//!   state (`users`, `channels`, `info`), checked against the seed's permission rules.
//! - [`channel`]: the voice relay. [`channel::ChannelRelay`] is the sans-IO state machine
//!   (which datagram goes where); `channel::worker` runs the relays on one epoll thread per
//!   core with batched socket I/O (`channel::batch`); [`channel::Registry`] starts, stops
//!   and talks to them. [`epoll`] is the workers' readiness wait (kv-bench uses it too).
//! - [`store`]: users and channels behind the [`store::Store`] trait, kept in SQLite.
//! - [`keys`]: the server's Ed25519 key that signs system packets, and the admin's
//!   identity file; [`files`]: owner-only files; [`ids`]: random ids.
//! - [`config`]: every tunable in one struct, with the defaults of the flags;
//!   [`settings`]: the configuration file and how the flags override it.
//! - [`metrics`]: Prometheus counters (relay workers publish per-worker atomics) and the
//!   tiny HTTP responder of `--metrics`.
//! - [`reload`]: what SIGHUP re-reads from the configuration file and applies.
//! - [`backup`]: `kv-server backup FILE`, an online copy of the database.

pub mod backup;
pub mod channel;
pub mod cli;
pub mod config;
pub mod control;
pub mod epoll;
pub mod error;
pub mod fds;
pub mod files;
pub mod ids;
pub mod keys;
pub mod limit;
pub mod metrics;
pub mod push;
pub mod register_rate;
pub mod reload;
pub mod server;
pub mod settings;
pub mod shutdown;
pub mod store;

pub use config::Config;

/// The version `--version` prints: the package's, and the git revision it was built from
/// when built from a checkout (see `build.rs`).
pub const VERSION: &str = env!("KV_VERSION");
pub use error::ServerError;
pub use server::Server;
