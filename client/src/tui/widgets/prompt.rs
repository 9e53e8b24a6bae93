//! Small dialogs: a one-line text prompt (display name, channel name) and the delete
//! confirmation.

use ratatui::layout::Rect;
use ratatui::style::Stylize;
use ratatui::text::Line;
use ratatui::widgets::{Block, Clear, Paragraph};
use ratatui::Frame;

use crate::tui::model::{channel_label, App, PromptKind};
use crate::tui::widgets::centered;

/// Renders a text prompt centred in `area`.
pub fn render_prompt(kind: &PromptKind, input: &str, frame: &mut Frame, area: Rect) {
    let title = match kind {
        PromptKind::DisplayName => " Your display name ",
        PromptKind::NewChannel => " New channel name ",
        PromptKind::RenameChannel(_) => " Rename channel ",
        // Drawn by the chat pane; here only if that pane is not shown.
        PromptKind::Chat => " Chat message ",
    };
    let r = centered(area, 50, 4);
    frame.render_widget(Clear, r);
    let text = vec![
        Line::from(vec![input.into(), "█".into()]),
        Line::from("enter accepts · esc cancels".dark_gray()),
    ];
    frame.render_widget(
        Paragraph::new(text).block(Block::bordered().title(title).cyan()),
        r,
    );
}

/// Renders "delete channel X?" centred in `area`.
pub fn render_confirm(app: &App, chid: u64, frame: &mut Frame, area: Rect) {
    let name = app
        .channels
        .iter()
        .find(|c| c.id == chid)
        .map(channel_label)
        .unwrap_or_else(|| format!("#{chid}"));
    let r = centered(area, 50, 3);
    frame.render_widget(Clear, r);
    frame.render_widget(
        Paragraph::new(format!("Delete {name}? y deletes, any other key keeps it"))
            .block(Block::bordered().title(" Delete channel ").red()),
        r,
    );
}
