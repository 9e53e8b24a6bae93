//! Drawing: `draw(&App, &mut Frame)` lays out the screen from state alone, with no side
//! effects, so every screen can be snapshot-tested on a `TestBackend`.

use ratatui::layout::{Constraint, Layout};
use ratatui::Frame;

use crate::tui::model::{App, Overlay, PromptKind};
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
    // An encrypted channel gets its chat pane under the members (a plain one has no chat).
    let right = if widgets::chat::shown(app) {
        let [top, chat] =
            Layout::vertical([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(right);
        widgets::chat::render(app, frame, chat);
        top
    } else {
        right
    };
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
        // The chat input is the chat pane's own line, not a window.
        Overlay::Prompt {
            kind: PromptKind::Chat,
            ..
        } => {}
        Overlay::Prompt { kind, input } => {
            widgets::prompt::render_prompt(kind, input, frame, frame.area())
        }
        Overlay::ConfirmDelete(chid) => {
            widgets::prompt::render_confirm(app, *chid, frame, frame.area())
        }
        Overlay::Devices(p) => widgets::devices::render(app, p, frame, frame.area()),
    }
}
