//! Our microphone level as a bar, with the voice-activation threshold marked on it, and
//! whether we are sending.

use ratatui::layout::Rect;
use ratatui::style::{Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};
use ratatui::Frame;

use crate::tui::app::{App, AudioState, TransmitMode};

/// Renders the meter into `area` (3 rows: border, bar, border).
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
        "hold to talk".dark_gray()
    } else {
        "quiet".dark_gray()
    };
    let label = format!(" thr {:.2} ", app.vad_threshold);
    let tail = state.content.chars().count() as u16 + label.len() as u16 + 1;
    let width = inner.width.saturating_sub(tail) as usize;
    let mut spans = bar(app.mic_level, app.vad_threshold, width, app.sending);
    spans.push(Span::raw(label));
    spans.push(state);
    frame.render_widget(Paragraph::new(Line::from(spans)), inner);
}

/// The bar itself: `width` cells, filled to `level`, with `│` at `threshold` (both 0..1).
pub fn bar(level: f32, threshold: f32, width: usize, sending: bool) -> Vec<Span<'static>> {
    if width == 0 {
        return vec![];
    }
    let filled = ((level.clamp(0.0, 1.0) * width as f32).round() as usize).min(width);
    let mark = ((threshold.clamp(0.0, 1.0) * width as f32).round() as usize).min(width - 1);
    let fill_style = if sending {
        Style::new().green()
    } else {
        Style::new().gray()
    };
    (0..width)
        .map(|i| {
            if i == mark {
                Span::styled("│", Style::new().yellow().bold())
            } else if i < filled {
                Span::styled("█", fill_style)
            } else {
                Span::styled("░", Style::new().dark_gray())
            }
        })
        .collect()
}
