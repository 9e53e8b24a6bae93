//! KV client library: the control client ([`control`]), the voice session ([`session`])
//! over the audio engine ([`audio`]), and the two programs, `kv` ([`cli`]) and `kv-tui`
//! ([`tui`]). ARCHITECTURE.md (at the repository root) maps the threads and the state.
//!
//! Cargo feature `embedded-server` (default): an in-process `kv-server` for
//! `kv-tui --demo` and `kv bench`. Without it (`--no-default-features`) the library does
//! not depend on `kv-server` or SQLite.

pub mod audio;
pub mod cli;
pub mod config_dir;
pub mod control;
pub mod e2ee;
#[cfg(feature = "embedded-server")]
pub mod embedded_server;
pub mod identity;
pub mod latency;
pub mod session;
pub mod tui;

/// The version `kv --version` and `kv-tui --version` print: the package's, and the git
/// revision it was built from when built from a checkout (see `build.rs`).
pub const VERSION: &str = env!("KV_VERSION");
