//! `kv-tui`, the terminal client, in the shape of the ratatui templates and gitui
//! (ARCHITECTURE.md draws the whole path of a key press):
//!
//! - [`model`]: the state ([`model::App`]) and the types everything below shares; a leaf.
//! - [`action`]: what can happen ([`action::Action`]: a key's [`action::Intent`] or a
//!   background [`action::Event`]) and the effects to run ([`action::Command`]).
//! - [`app`]: the pure `update(action) -> commands`.
//! - [`keys`]: keymap (defaults, config overrides, push-to-talk hold/toggle).
//! - [`ui`] and [`widgets`]: `draw(&App, &mut Frame)`, side-effect free.
//! - [`backend`]: the one adapter to the outside (control client, voice session,
//!   reconnects); [`session_events`] maps what a session reports to app events;
//!   [`channel_list`] bounds what a refresh of the channel list costs; [`channel_modes`]
//!   remembers which channels are end-to-end encrypted (CHANNEL_MODE, once per channel).
//! - [`inbox`]: the event loop's inbox (lossless lifecycle, newest-wins telemetry).
//! - [`runner`]: terminal setup and the event loop; [`config`]: the settings file.
//! - [`cli`]: the `kv-tui` command line; [`demo`]: `--demo`'s embedded server and bot.
//!
//! Background work (the server, the voice session, the terminal's input) reports into one
//! event loop as events; only the loop talks to the outside world.

pub mod action;
pub mod app;
pub mod backend;
pub mod channel_list;
pub mod channel_modes;
pub mod channel_pages;
pub mod cli;
pub mod config;
#[cfg(feature = "embedded-server")]
pub mod demo;
pub mod inbox;
pub mod keys;
pub mod model;
pub mod runner;
pub mod session_events;
pub mod ui;
pub mod widgets;

#[cfg(test)]
mod app_tests;
#[cfg(test)]
mod ui_tests;
