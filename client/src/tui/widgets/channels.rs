//! The channel list: names, member counts, which one we are in, and the cursor.

use ratatui::layout::Rect;
use ratatui::style::{Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, ListItem, ListState};
use ratatui::Frame;

use crate::tui::model::{channel_label, App, Focus};
use crate::tui::widgets::{border, focus_list};

/// Renders the channel list into `area`.
pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let focused = app.focus == Focus::Channels;
    let block = Block::bordered()
        .title(format!(" Channels ({}) ", app.channels.len()))
        .border_style(border(focused));
    if app.channels.is_empty() {
        let text = if app.perms.contains(kv_proto::Perms::ADD_CHANNEL) {
            "no channels yet: c creates one"
        } else {
            "no channels yet"
        };
        let p = ratatui::widgets::Paragraph::new(text.dark_gray()).block(block);
        frame.render_widget(p, area);
        return;
    }
    let items: Vec<ListItem> = app
        .channels
        .iter()
        .map(|c| {
            let here = app.joined == Some(c.id);
            let joining = app.joining == Some(c.id);
            let marker = if here {
                "● ".green()
            } else if joining {
                "… ".yellow()
            } else {
                "  ".into()
            };
            let name = if here {
                Span::styled(channel_label(c), Style::new().bold())
            } else {
                Span::raw(channel_label(c))
            };
            // What CHANNEL_MODE said: a lock, "plain", or nothing while not known.
            let mode = match app.encrypted(c.id) {
                Some(true) => format!(" {}", crate::tui::widgets::LOCK).green(),
                Some(false) => " plain".dark_gray(),
                None => "".into(),
            };
            ListItem::new(Line::from(vec![
                marker,
                name,
                format!(" ({})", c.members).dark_gray(),
                mode,
            ]))
        })
        .collect();
    let list = focus_list(items, block, focused);
    let mut state = ListState::default().with_selected(Some(app.channel_sel));
    frame.render_stateful_widget(list, area, &mut state);
}
