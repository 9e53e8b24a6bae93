//! Members of the joined channel, with who is talking right now and per-member volume.

use ratatui::layout::Rect;
use ratatui::style::Stylize;
use ratatui::text::Line;
use ratatui::widgets::{Block, ListItem, ListState, Paragraph};
use ratatui::Frame;

use crate::tui::model::{channel_label, member_labels, App, Focus};
use crate::tui::widgets::{border, focus_list};

/// Renders the member list into `area`.
pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let focused = app.focus == Focus::Members;
    let title = match app.joined_channel() {
        Some(c) => format!(" {} · {} members ", channel_label(c), app.members.len()),
        None => " Members ".to_string(),
    };
    let block = Block::bordered().title(title).border_style(border(focused));
    if app.joined.is_none() {
        let text = "not in a channel: select one and press enter";
        frame.render_widget(Paragraph::new(text.dark_gray()).block(block), area);
        return;
    }
    let labels = member_labels(&app.members);
    let items: Vec<ListItem> = app
        .members
        .iter()
        .zip(labels)
        .map(|(m, label)| {
            let me = m.uid == app.uid;
            let talking = if me { app.sending } else { m.talking };
            let marker = if talking {
                "◉ ".green().bold()
            } else {
                "○ ".dark_gray()
            };
            let name = if talking {
                label.green().bold()
            } else {
                label.into()
            };
            let mut spans = vec![marker, name];
            if me {
                spans.push(" (you)".dark_gray());
                if app.muted {
                    spans.push(" muted".red());
                }
                if app.deafened {
                    spans.push(" deaf".red());
                }
            }
            if talking {
                spans.push(" talking".green());
            }
            if app.key_changed.contains(&m.uid) {
                spans.push(" KEY CHANGED".red().bold());
            }
            if !me && m.volume != 100 {
                spans.push(format!(" vol {}%", m.volume).yellow());
            }
            ListItem::new(Line::from(spans))
        })
        .collect();
    let list = focus_list(items, block, focused);
    let mut state = ListState::default().with_selected(focused.then_some(app.member_sel));
    frame.render_stateful_widget(list, area, &mut state);
}
