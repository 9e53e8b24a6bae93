//! The `?` overlay: every key of the keymap in force and what it does.

use ratatui::layout::{Constraint, Rect};
use ratatui::style::Stylize;
use ratatui::widgets::{Block, Cell, Clear, Row, Table};
use ratatui::Frame;

use crate::tui::model::{App, PttStyle};
use crate::tui::widgets::centered;

/// Renders the help window centred in `area`.
pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let ptt = match app.ptt_style {
        PttStyle::Hold => "push-to-talk: hold the key (terminal reports releases)",
        PttStyle::Toggle => "push-to-talk: press, press again (no key releases here)",
    };
    let rows: Vec<Row> = app
        .help
        .iter()
        .map(|(k, what)| Row::new([Cell::from(k.clone().cyan()), Cell::from(*what)]))
        .collect();
    let height = rows.len() as u16 + 2;
    let r = centered(area, 60, height);
    frame.render_widget(Clear, r);
    let table = Table::new(rows, [Constraint::Length(14), Constraint::Fill(1)]).block(
        Block::bordered()
            .title(" Keys (any key closes) ")
            .title_bottom(format!(" {ptt} ")),
    );
    frame.render_widget(table, r);
}
