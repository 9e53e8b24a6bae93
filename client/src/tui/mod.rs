//! `kv-tui`, the terminal client, in the shape of the ratatui templates and gitui:
//!
//! - [`action`]: what can happen ([`action::Action`]) and the effects to run
//!   ([`action::Command`]).
//! - [`app`]: all state and the pure `update(action) -> commands`.
//! - [`keys`]: keymap (defaults, config overrides, push-to-talk hold/toggle).
//! - [`ui`] and [`widgets`]: `draw(&App, &mut Frame)`, side-effect free.
//! - [`config`]: TOML settings in the config dir.
//!
//! Background work (the server, the voice session, the terminal's input) reports into one
//! event loop as actions; only the loop talks to the outside world.

pub mod action;
pub mod app;
pub mod cli;
pub mod config;
pub mod demo;
pub mod inbox;
pub mod keys;
pub mod model;
pub mod runner;
pub mod session_voice;
pub mod ui;
pub mod voice;
pub mod widgets;
pub mod worker;

#[cfg(test)]
mod app_tests;
#[cfg(test)]
mod ui_tests;

use crate::tui::voice::VoiceBackend;

/// The voice engine `kv-tui` uses: the client library's voice session on cpal devices.
pub fn default_voice() -> Box<dyn VoiceBackend> {
    Box::new(session_voice::SessionVoice::default())
}
