//! The pieces of the screen, one per file; each renders from [`crate::tui::model`] only.
//! What they share sits here: the focus styling of the two side-by-side lists (channels,
//! members) and the centring of overlays.

use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Modifier, Style, Stylize};
use ratatui::widgets::{Block, List, ListItem};

pub mod channels;
pub mod chat;
pub mod devices;
pub mod help;
pub mod members;
pub mod meter;
pub mod prompt;
pub mod quality;
pub mod status;

/// The lock shown wherever a channel is end-to-end encrypted (list, status line, chat).
pub const LOCK: &str = "🔒";

/// Border style of a list: bright when it has the arrow keys.
pub fn border(focused: bool) -> Style {
    if focused {
        Style::new().cyan()
    } else {
        Style::new().dark_gray()
    }
}

/// A list in `block` whose cursor row is shown reversed only while the list has the focus,
/// so the user sees which of the two lists the arrow keys move.
pub fn focus_list<'a>(items: Vec<ListItem<'a>>, block: Block<'a>, focused: bool) -> List<'a> {
    let highlight = if focused {
        Style::new().add_modifier(Modifier::REVERSED)
    } else {
        Style::new()
    };
    List::new(items)
        .block(block)
        .highlight_symbol("▶")
        .highlight_style(highlight)
}

/// A rectangle of at most `w`×`h` centred in `area`, for overlays.
pub fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let [v] = Layout::vertical([Constraint::Length(h.min(area.height))])
        .flex(Flex::Center)
        .areas(area);
    let [r] = Layout::horizontal([Constraint::Length(w.min(area.width))])
        .flex(Flex::Center)
        .areas(v);
    r
}
