//! Per-member link quality, shown on demand: loss, recovered frames, jitter, buffer depth.

use ratatui::layout::{Constraint, Rect};
use ratatui::style::Stylize;
use ratatui::widgets::{Block, Row, Table};
use ratatui::Frame;

use crate::tui::model::{member_labels, App};

/// Renders the quality table into `area`.
pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let header = Row::new(["member", "loss", "recov", "jitter", "buffer"]).bold();
    let labels = member_labels(&app.members);
    let rows = app
        .members
        .iter()
        .zip(labels)
        .filter(|(m, _)| m.uid != app.uid)
        .map(|(m, name)| match m.stats {
            Some(s) => Row::new([
                name,
                format!("{:.1}%", s.loss_pct),
                s.recovered.to_string(),
                format!("{:.1} ms", s.jitter_ms),
                format!("{:.0} ms", s.buffer_ms),
            ]),
            None => Row::new([name, "-".into(), "-".into(), "-".into(), "-".into()]),
        });
    let table = Table::new(
        rows,
        [
            Constraint::Fill(1),
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Length(9),
            Constraint::Length(7),
        ],
    )
    .header(header)
    .block(Block::bordered().title(" Link quality (i hides) "));
    frame.render_widget(table, area);
}
