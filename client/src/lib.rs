//! KV client library (in progress).

pub mod control;
pub mod identity;
pub mod session;
pub mod tui;
