//! Our microphone: the level as a bar (−60…0 dBFS), the voice probability as a bar with the
//! voice-activation threshold marked on it (what decides sending in voice-activated mode),
//! and whether we are sending.

use ratatui::layout::Rect;
use ratatui::style::{Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};
use ratatui::Frame;

use crate::tui::model::{App, AudioState, TransmitMode};

/// Bottom of the level bar, dBFS: quieter than this reads as empty.
const FLOOR_DBFS: f32 = -60.0;

/// Renders the meter into `area` (4 rows: border, level, voice, border).
pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let block = Block::bordered().title(" Microphone ");
    let inner = block.inner(area);
    frame.render_widget(block, area);

    let state = if matches!(app.audio, AudioState::NoDevice(_)) {
        "no input".red()
    } else if app.muted || app.deafened {
        "muted".red()
    } else if app.sending {
        "sending".green().bold()
    } else if app.mode == TransmitMode::PushToTalk {
        "push to talk".dark_gray()
    } else {
        "quiet".dark_gray()
    };
    // Both rows share one bar width so they line up.
    let tail = 18u16.max(state.content.chars().count() as u16 + 12);
    let width = inner.width.saturating_sub(tail + 6) as usize;
    let level = ((app.mic_dbfs - FLOOR_DBFS) / -FLOOR_DBFS).clamp(0.0, 1.0);
    let mut row1 = vec![Span::raw("level ")];
    row1.extend(bar(level, None, width, app.sending));
    row1.push(Span::raw(format!(" {:>4.0} dBFS", app.mic_dbfs.max(-99.0))));
    let mut row2 = vec![Span::raw("voice ")];
    row2.extend(bar(
        app.mic_vad,
        Some(app.vad_threshold),
        width,
        app.sending,
    ));
    row2.push(Span::raw(format!(" thr {:.2} ", app.vad_threshold)));
    row2.push(state);
    frame.render_widget(
        Paragraph::new(vec![Line::from(row1), Line::from(row2)]),
        inner,
    );
}

/// A bar of `width` cells filled to `value` (0..1), with `│` at `mark` when given.
pub fn bar(value: f32, mark: Option<f32>, width: usize, sending: bool) -> Vec<Span<'static>> {
    if width == 0 {
        return vec![];
    }
    let filled = ((value.clamp(0.0, 1.0) * width as f32).round() as usize).min(width);
    let mark = mark.map(|m| ((m.clamp(0.0, 1.0) * width as f32).round() as usize).min(width - 1));
    let fill_style = if sending {
        Style::new().green()
    } else {
        Style::new().gray()
    };
    (0..width)
        .map(|i| {
            if Some(i) == mark {
                Span::styled("│", Style::new().yellow().bold())
            } else if i < filled {
                Span::styled("█", fill_style)
            } else {
                Span::styled("░", Style::new().dark_gray())
            }
        })
        .collect()
}
