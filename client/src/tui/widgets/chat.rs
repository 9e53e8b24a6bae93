//! The chat pane of an encrypted channel: the epoch and its safety code in the title, the
//! messages in the server's order (newest at the bottom), a key-change warning, and the
//! input line while a message is being written.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Stylize;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};
use ratatui::Frame;

use crate::tui::model::{member_labels, App, Overlay, PromptKind};
use crate::tui::widgets::LOCK;

/// Whether the chat pane is on screen: in an encrypted channel.
pub fn shown(app: &App) -> bool {
    app.joined.is_some_and(|id| app.encrypted(id) == Some(true))
}

/// The chat line being typed, if the input line is open.
fn typing(app: &App) -> Option<&str> {
    match &app.overlay {
        Overlay::Prompt {
            kind: PromptKind::Chat,
            input,
        } => Some(input),
        _ => None,
    }
}

/// A member's name for chat lines: as in the member list (with its look-alike guard), else
/// the name it had when its message arrived, marked as gone, else `user N`.
fn sender_label(app: &App, labels: &[String], uid: u64, then: &str) -> String {
    match app.members.iter().position(|m| m.uid == uid) {
        Some(i) => labels
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("user {uid}")),
        None if !then.is_empty() => format!("{then} (left)"),
        None => format!("user {uid}"),
    }
}

/// Renders the chat pane into `area`.
pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let title = match &app.epoch {
        Some(e) => format!(
            " {LOCK} Chat · epoch {} · safety {} ",
            e.epoch, e.safety_code
        ),
        None => format!(" {LOCK} Chat · setting up encryption… "),
    };
    let block = Block::bordered()
        .title(title)
        .border_style(if typing(app).is_some() {
            ratatui::style::Style::new().cyan()
        } else {
            ratatui::style::Style::new().dark_gray()
        });
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let warn = !app.key_changed.is_empty();
    let [warning, messages, input] = Layout::vertical([
        Constraint::Length(u16::from(warn)),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(inner);
    let labels = member_labels(&app.members);
    if warn {
        let who: Vec<String> = app
            .key_changed
            .iter()
            .map(|&u| sender_label(app, &labels, u, ""))
            .collect();
        frame.render_widget(
            Paragraph::new(format!(
                "⚠ key changed: {} (compare safety codes)",
                who.join(", ")
            ))
            .red()
            .bold(),
            warning,
        );
    }
    render_messages(app, &labels, frame, messages);
    let line = match typing(app) {
        Some(text) => {
            // The end of a long line stays visible, next to the cursor.
            let room = usize::from(input.width).saturating_sub(3);
            let count = text.chars().count();
            let tail: String = text.chars().skip(count.saturating_sub(room)).collect();
            Line::from(vec!["> ".cyan().bold(), tail.into(), "█".into()])
        }
        None => Line::from("/ writes a message · enter sends · esc cancels".dark_gray()),
    };
    frame.render_widget(Paragraph::new(line), input);
}

/// The newest messages that fit, oldest first, wrapped.
fn render_messages(app: &App, labels: &[String], frame: &mut Frame, area: Rect) {
    if area.height == 0 || area.width == 0 {
        return;
    }
    if app.chat.is_empty() {
        frame.render_widget(
            Paragraph::new(
                "no messages yet (only members of this epoch can read them)".dark_gray(),
            ),
            area,
        );
        return;
    }
    let width = usize::from(area.width).max(1);
    let mut lines: Vec<Line> = Vec::new();
    let mut rows = 0usize;
    // From the newest back until the pane is full (each line's wrapped height estimated by
    // its characters, which is exact for the common narrow-character text).
    for m in app.chat.iter().rev() {
        let name = sender_label(app, labels, m.sender, &m.name);
        let len = name.chars().count() + 2 + m.text.chars().count();
        rows += len.div_ceil(width).max(1);
        let me = m.sender == app.uid;
        let who: Span = if me {
            name.cyan().bold()
        } else {
            name.green().bold()
        };
        lines.push(Line::from(vec![who, ": ".into(), m.text.clone().into()]));
        if rows >= usize::from(area.height) {
            break;
        }
    }
    lines.reverse();
    let overflow = rows.saturating_sub(usize::from(area.height));
    let p = Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .scroll((u16::try_from(overflow).unwrap_or(u16::MAX), 0));
    frame.render_widget(p, area);
}
