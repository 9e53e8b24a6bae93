//! The device picker: input and output device lists; enter picks, tab switches list.

use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style, Stylize};
use ratatui::widgets::{Block, Clear, List, ListState};
use ratatui::Frame;

use crate::tui::model::{App, AudioState, DeviceKind, DevicePicker};
use crate::tui::widgets::centered;

/// Renders the picker centred in `area`; the device in use is marked.
pub fn render(app: &App, p: &DevicePicker, frame: &mut Frame, area: Rect) {
    let (title, list) = match p.kind {
        DeviceKind::Input => (" Input device (tab: output) ", &p.inputs),
        DeviceKind::Output => (" Output device (tab: input) ", &p.outputs),
    };
    let r = centered(area, 60, list.len() as u16 + 2);
    frame.render_widget(Clear, r);
    let in_use = match (&app.audio, p.kind) {
        (AudioState::Ready { input, .. }, DeviceKind::Input) => Some(input.as_str()),
        (AudioState::Ready { output, .. }, DeviceKind::Output) => Some(output.as_str()),
        _ => None,
    };
    let rows = list.iter().map(|n| {
        if Some(n.as_str()) == in_use {
            format!("{n} (in use)")
        } else {
            n.clone()
        }
    });
    let widget = List::new(rows)
        .block(Block::bordered().title(title).cyan())
        .highlight_symbol("▶")
        .highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    let mut state = ListState::default().with_selected(Some(p.selected));
    frame.render_stateful_widget(widget, r, &mut state);
}
