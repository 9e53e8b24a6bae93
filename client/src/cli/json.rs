//! Session events as one JSON object per line (`kv join --json`) or a human line.
//!
//! Every object has `"event"`. The two time bases are `capture_started` and
//! `recording_started`, each with `unix_ms` (fractional milliseconds): the wall-clock time
//! of input sample 0 and of output sample 0.

use serde_json::{json, Value};

use crate::audio::PeerStats;
use crate::session::{SessionEvent, SessionStats};

fn peer(p: &PeerStats) -> Value {
    json!({
        "uid": p.uid,
        "received": p.received,
        "lost": p.lost,
        "recovered_redundancy": p.recovered_redundancy,
        "recovered_fec": p.recovered_fec,
        "concealed": p.concealed,
        "late": p.late,
        "duplicate": p.duplicate,
        "stretched": p.stretched,
        "dropped": p.dropped,
        "accelerated": p.accelerated,
        "expanded": p.expanded,
        "resyncs": p.resyncs,
        "adjustments": p.adjustments,
        "trimmed_ms": p.trimmed_ms,
        "malformed": p.malformed,
        "jitter_ms": p.jitter_ms,
        "buffer_ms": p.buffer_ms,
        "target_ms": p.target_ms,
        "talking": p.talking,
        "gain": p.gain,
    })
}

fn stats(event: &str, s: &SessionStats) -> Value {
    json!({
        "event": event,
        "elapsed_ms": s.elapsed_ms,
        "admitted": s.link.admitted,
        "rtt_ms": s.link.rtt_ms,
        "srtt_ms": s.link.srtt_ms,
        "keepalives": s.link.keepalives_sent,
        "acks": s.link.acks,
        "forged": s.link.forged,
        "replayed": s.link.replayed,
        "malformed": s.link.malformed,
        "sent": s.packets_sent,
        "received": s.packets_received,
        "ignored": s.packets_ignored,
        "events_dropped": s.events_dropped,
        "late_blocks": s.late_blocks,
        "input_overruns": s.input_overruns,
        "output_underruns": s.output_underruns,
        "peers": s.peers.iter().map(peer).collect::<Vec<_>>(),
        "e2ee": s.e2ee.map(|e| json!({
            "encrypted": e.encrypted,
            "decrypted": e.decrypted,
            "malformed": e.malformed,
            "unknown_epoch": e.unknown_epoch,
            "expired_epoch": e.expired_epoch,
            "unknown_sender": e.unknown_sender,
            "auth_failed": e.auth_failed,
            "replayed": e.replayed,
            "too_old": e.too_old,
        })),
    })
}

/// The final statistics, printed once after leaving.
pub(super) fn left(s: &SessionStats) -> Value {
    stats("left", s)
}

/// One event as JSON.
pub(super) fn event(ev: &SessionEvent) -> Value {
    match ev {
        SessionEvent::Joined {
            uid,
            chid,
            voice_addr,
            members,
        } => json!({"event": "joined", "uid": uid, "chid": chid,
                    "voice_addr": voice_addr.to_string(), "members": members}),
        SessionEvent::Admitted { rtt_ms } => json!({"event": "admitted", "rtt_ms": rtt_ms}),
        SessionEvent::CaptureStarted { unix_ms } => {
            json!({"event": "capture_started", "unix_ms": unix_ms})
        }
        SessionEvent::RecordingStarted { unix_ms } => {
            json!({"event": "recording_started", "unix_ms": unix_ms})
        }
        SessionEvent::PeerJoined { uid } => json!({"event": "peer_joined", "uid": uid}),
        SessionEvent::PeerLeft { uid } => json!({"event": "peer_left", "uid": uid}),
        SessionEvent::TalkingStarted { uid } => json!({"event": "talking_started", "uid": uid}),
        SessionEvent::TalkingStopped { uid } => json!({"event": "talking_stopped", "uid": uid}),
        SessionEvent::Stats(s) => stats("stats", s),
        SessionEvent::InputEnded => json!({"event": "input_ended"}),
        SessionEvent::LinkLost => json!({"event": "link_lost"}),
        SessionEvent::LinkRestored => json!({"event": "link_restored"}),
        SessionEvent::Kicked => json!({"event": "kicked"}),
        SessionEvent::Shutdown => json!({"event": "shutdown"}),
        SessionEvent::Failed { reason } => json!({"event": "failed", "reason": reason}),
        SessionEvent::Epoch {
            epoch,
            safety_code,
            members,
        } => json!({"event": "epoch", "epoch": epoch, "safety_code": safety_code,
                    "members": members}),
        SessionEvent::Message { seq, sender, text } => {
            json!({"event": "message", "seq": seq, "sender": sender, "text": text})
        }
        SessionEvent::KeyChanged { uid } => json!({"event": "key_changed", "uid": uid}),
        SessionEvent::ChatRefused { text } => json!({"event": "chat_refused", "text": text}),
    }
}

/// One event as a short human line; `None` for the noisy ones (stats, time bases).
pub(super) fn human(ev: &SessionEvent) -> Option<String> {
    Some(match ev {
        SessionEvent::Joined { uid, chid, .. } => format!("joined channel {chid} as {uid}"),
        SessionEvent::Admitted { rtt_ms } => format!("admitted (rtt {rtt_ms:.1} ms)"),
        SessionEvent::PeerJoined { uid } => format!("{uid} joined"),
        SessionEvent::PeerLeft { uid } => format!("{uid} left"),
        SessionEvent::TalkingStarted { uid } => format!("{uid} talking"),
        SessionEvent::TalkingStopped { uid } => format!("{uid} quiet"),
        SessionEvent::Kicked => "removed from the channel".into(),
        SessionEvent::LinkLost => "no answer from the server".into(),
        SessionEvent::LinkRestored => "server answers again".into(),
        SessionEvent::Shutdown => "channel closed by the server".into(),
        SessionEvent::Failed { reason } => format!("session failed: {reason}"),
        SessionEvent::Epoch {
            epoch, safety_code, ..
        } => format!("encrypted, epoch {epoch}, safety code {safety_code}"),
        SessionEvent::Message { sender, text, .. } => format!("<{sender}> {text}"),
        SessionEvent::KeyChanged { uid } => format!("WARNING: the key of {uid} changed"),
        SessionEvent::ChatRefused { text } => format!("chat message refused: {text}"),
        _ => return None,
    })
}
