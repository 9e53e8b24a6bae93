//! Drawing: `draw(&App, &mut Frame)` lays out the screen from state alone, with no side
//! effects, so every screen can be snapshot-tested on a `TestBackend`.

use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::Frame;

use crate::tui::app::{App, Overlay};
use crate::tui::widgets;

/// Draws the whole screen.
pub fn draw(app: &App, frame: &mut Frame) {
    let [main, meter, status] = Layout::vertical([
        Constraint::Min(5),
        Constraint::Length(4),
        Constraint::Length(2),
    ])
    .areas(frame.area());
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(35), Constraint::Percentage(65)]).areas(main);
    widgets::channels::render(app, frame, left);
    if app.show_quality {
        let [members, quality] =
            Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(right);
        widgets::members::render(app, frame, members);
        widgets::quality::render(app, frame, quality);
    } else {
        widgets::members::render(app, frame, right);
    }
    widgets::meter::render(app, frame, meter);
    widgets::status::render(app, frame, status);

    match &app.overlay {
        Overlay::None => {}
        Overlay::Help => widgets::help::render(app, frame, frame.area()),
        Overlay::Prompt { kind, input } => {
            widgets::prompt::render_prompt(kind, input, frame, frame.area())
        }
        Overlay::ConfirmDelete(chid) => {
            widgets::prompt::render_confirm(app, *chid, frame, frame.area())
        }
        Overlay::Devices(p) => widgets::devices::render(app, p, frame, frame.area()),
    }
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
