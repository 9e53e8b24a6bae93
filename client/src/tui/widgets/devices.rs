//! The device picker: input and output device lists; enter picks, tab switches list.

use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style, Stylize};
use ratatui::widgets::{Block, Clear, List, ListState};
use ratatui::Frame;

use crate::tui::app::{DeviceKind, DevicePicker};
use crate::tui::ui::centered;

/// Renders the picker centred in `area`.
pub fn render(p: &DevicePicker, frame: &mut Frame, area: Rect) {
    let (title, list) = match p.kind {
        DeviceKind::Input => (" Input device (tab: output) ", &p.inputs),
        DeviceKind::Output => (" Output device (tab: input) ", &p.outputs),
    };
    let r = centered(area, 60, list.len() as u16 + 2);
    frame.render_widget(Clear, r);
    let widget = List::new(list.iter().map(String::as_str))
        .block(Block::bordered().title(title).cyan())
        .highlight_symbol("▶")
        .highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    let mut state = ListState::default().with_selected(Some(p.selected));
    frame.render_stateful_widget(widget, r, &mut state);
}
