//! The status line: server and connection, RTT, loss, transmit mode (and how push-to-talk
//! works here), echo cancellation and gain control, mute/deafen, audio device state; below
//! it the last notice.

use ratatui::layout::Rect;
use ratatui::style::Stylize;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use crate::tui::model::{App, AudioState, Connection, PttStyle, TransmitMode};

/// Renders the two status rows into `area`.
pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let sep = || Span::raw(" │ ").dark_gray();
    let mut spans: Vec<Span> = vec![Span::raw(" ")];
    match &app.connection {
        Connection::Connecting => spans.push(format!("{} connecting…", app.server).yellow()),
        Connection::Connected => spans.push(app.server.clone().into()),
        Connection::Reconnecting { attempt, .. } => {
            spans.push(format!("{} reconnecting (try {attempt})", app.server).red())
        }
    }
    if let Some(chid) = app.joined {
        // The joined channel's mode first: whether what we say is end-to-end encrypted.
        match app.encrypted(chid) {
            Some(true) => {
                spans.push(sep());
                spans.push(format!("{} E2E", crate::tui::widgets::LOCK).green().bold());
                if let Some(e) = &app.epoch {
                    // The short form (first group) for a glance; the chat pane has it all.
                    let short = e.safety_code.split(' ').next().unwrap_or_default();
                    spans.push(format!(" {short}").green());
                }
                if !app.key_changed.is_empty() {
                    spans.push(" KEY CHANGED".red().bold());
                }
            }
            Some(false) => {
                spans.push(sep());
                spans.push("plain".yellow());
            }
            None => {}
        }
        spans.push(sep());
        spans.push(match app.rtt_ms {
            Some(0) => "RTT <1 ms".into(),
            Some(ms) => format!("RTT {ms} ms").into(),
            None => "RTT -".dark_gray(),
        });
        spans.push(sep());
        spans.push(match app.loss_pct {
            Some(l) if l >= 5.0 => format!("loss {l:.1}%").red(),
            Some(l) => format!("loss {l:.1}%").into(),
            None => "loss -".dark_gray(),
        });
    }
    spans.push(sep());
    let mode = match (app.mode, app.ptt_style) {
        (TransmitMode::PushToTalk, PttStyle::Hold) => "push-to-talk (hold)".to_string(),
        (TransmitMode::PushToTalk, PttStyle::Toggle) if app.ptt_active => {
            "push-to-talk (toggle: ON)".to_string()
        }
        (TransmitMode::PushToTalk, PttStyle::Toggle) => "push-to-talk (toggle)".to_string(),
        (m, _) => m.label().to_string(),
    };
    spans.push(mode.cyan());
    if !app.denoise {
        spans.push(sep());
        spans.push("denoise off".yellow());
    }
    // Echo cancellation and gain control: short, so an 80-column line keeps the rest.
    spans.push(sep());
    spans.push(if app.aec {
        "AEC".green()
    } else {
        "no AEC".yellow()
    });
    spans.push(" ".into());
    spans.push(if app.agc {
        "AGC".green()
    } else {
        "no AGC".yellow()
    });
    if app.muted {
        spans.push(sep());
        spans.push("MUTED".red().bold());
    }
    if app.deafened {
        spans.push(sep());
        spans.push("DEAF".red().bold());
    }
    match &app.audio {
        AudioState::Idle => {}
        AudioState::Ready { .. } => {}
        AudioState::NoDevice(_) => {
            spans.push(sep());
            spans.push("no audio device".red());
        }
    }
    let notice = match &app.notice {
        Some(n) if n.starts_with("error") => Span::raw(format!(" {n}")).red(),
        Some(n) => Span::raw(format!(" {n}")),
        None => Span::raw(" ? help · q quit").dark_gray(),
    };
    let text = vec![Line::from(spans), Line::from(notice)];
    frame.render_widget(Paragraph::new(text), area);
}
