//! The pieces of the screen, one per file; each renders from [`crate::tui::app::App`] only.

pub mod channels;
pub mod devices;
pub mod help;
pub mod members;
pub mod meter;
pub mod prompt;
pub mod quality;
pub mod status;
