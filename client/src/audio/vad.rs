//! The transmit gate: decides per frame whether to send, from the transmit mode, the
//! push-to-talk key and the voice-activity probability, with hangover.

/// How the capture path decides when to transmit: the one mode type of the client (the
/// TUI's settings file spells it in kebab-case, `kv join --mode` as `continuous`, `vad`,
/// `ptt`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum TransmitMode {
    /// Always send (open mic). Costs a packet per frame even in silence.
    Continuous,
    /// Send while nnnoiseless' voice-activity probability is above the threshold, and for a
    /// hangover after it falls, so word ends and short pauses are not clipped. The default:
    /// hands-free like a phone call, and silent rooms cost no bandwidth.
    #[default]
    #[value(name = "vad")]
    VoiceActivated,
    /// Send only while the caller holds the key ([`super::TxPipeline::set_push_to_talk`]).
    #[value(name = "ptt")]
    PushToTalk,
}

impl TransmitMode {
    /// The next mode in the cycle the TUI's mode key walks through.
    pub fn next(self) -> Self {
        match self {
            TransmitMode::VoiceActivated => TransmitMode::PushToTalk,
            TransmitMode::PushToTalk => TransmitMode::Continuous,
            TransmitMode::Continuous => TransmitMode::VoiceActivated,
        }
    }

    /// Short label for a status line.
    pub fn label(self) -> &'static str {
        match self {
            TransmitMode::VoiceActivated => "voice-activated",
            TransmitMode::PushToTalk => "push-to-talk",
            TransmitMode::Continuous => "continuous",
        }
    }
}

/// How long a level onset alone keeps the voice-activated gate open.
pub const ONSET_HOLD_MS: u32 = 100;

/// What the gate decided for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateDecision {
    /// Do not send this frame.
    Closed,
    /// Send this frame; `start` marks the first frame after silence.
    Open {
        /// First frame of a talk spurt.
        start: bool,
    },
    /// Send this frame as the last of the spurt (the gate closes after it).
    Closing,
}

/// Gate state. Pure logic on frame counts, so it is trivially testable.
#[derive(Debug, Clone)]
pub struct VadGate {
    mode: TransmitMode,
    threshold: f32,
    hangover_ms: u32,
    ptt: bool,
    /// Time left before an idle VAD closes the gate.
    remaining_ms: u32,
    open: bool,
}

impl VadGate {
    /// A closed gate.
    pub fn new(mode: TransmitMode, threshold: f32, hangover_ms: u32) -> Self {
        Self {
            mode,
            threshold,
            hangover_ms,
            ptt: false,
            remaining_ms: 0,
            open: false,
        }
    }

    /// Changes the mode; takes effect on the next frame.
    pub fn set_mode(&mut self, mode: TransmitMode) {
        self.mode = mode;
    }

    /// Push-to-talk key state.
    pub fn set_push_to_talk(&mut self, pressed: bool) {
        self.ptt = pressed;
    }

    /// True while frames are being sent.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Decides for one frame of `frame_ms` whose voice probability is `vad`.
    pub fn decide(&mut self, vad: f32, frame_ms: u32) -> GateDecision {
        self.decide_with_onset(vad, false, frame_ms)
    }

    /// Like [`Self::decide`], where `onset` says the frame is far louder than the room's
    /// noise floor. The voice probability of a recurrent VAD rises a frame or two into a
    /// word; a sudden rise of level does not lag, so it opens the gate at once (for
    /// [`ONSET_HOLD_MS`]; the VAD keeps it open if it is speech).
    pub fn decide_with_onset(&mut self, vad: f32, onset: bool, frame_ms: u32) -> GateDecision {
        if onset && self.mode == TransmitMode::VoiceActivated {
            self.remaining_ms = self.remaining_ms.max(ONSET_HOLD_MS + frame_ms);
        }
        let want = match self.mode {
            TransmitMode::Continuous => true,
            TransmitMode::PushToTalk => self.ptt,
            TransmitMode::VoiceActivated => {
                if vad >= self.threshold {
                    self.remaining_ms = self.remaining_ms.max(self.hangover_ms);
                    true
                } else if self.remaining_ms > 0 {
                    self.remaining_ms = self.remaining_ms.saturating_sub(frame_ms);
                    true
                } else {
                    false
                }
            }
        };
        match (self.open, want) {
            (false, true) => {
                self.open = true;
                GateDecision::Open { start: true }
            }
            (true, true) => GateDecision::Open { start: false },
            // The frame at which the gate closes is still sent, flagged as the spurt's end,
            // so the receiver stops cleanly instead of concealing a packet that never comes.
            (true, false) => {
                self.open = false;
                GateDecision::Closing
            }
            (false, false) => GateDecision::Closed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hangover_keeps_gate_open_then_closes_once() {
        let mut g = VadGate::new(TransmitMode::VoiceActivated, 0.5, 60);
        assert_eq!(g.decide(0.1, 20), GateDecision::Closed);
        assert_eq!(g.decide(0.9, 20), GateDecision::Open { start: true });
        assert_eq!(g.decide(0.9, 20), GateDecision::Open { start: false });
        // 60 ms hangover = 3 more frames of 20 ms.
        for _ in 0..3 {
            assert_eq!(g.decide(0.0, 20), GateDecision::Open { start: false });
        }
        assert_eq!(g.decide(0.0, 20), GateDecision::Closing);
        assert_eq!(g.decide(0.0, 20), GateDecision::Closed);
    }

    #[test]
    fn push_to_talk_and_continuous() {
        let mut g = VadGate::new(TransmitMode::PushToTalk, 0.5, 200);
        assert_eq!(g.decide(1.0, 20), GateDecision::Closed);
        g.set_push_to_talk(true);
        assert_eq!(g.decide(0.0, 20), GateDecision::Open { start: true });
        g.set_push_to_talk(false);
        assert_eq!(g.decide(1.0, 20), GateDecision::Closing);
        g.set_mode(TransmitMode::Continuous);
        assert_eq!(g.decide(0.0, 20), GateDecision::Open { start: true });
        assert!(g.is_open());
    }

    #[test]
    fn a_level_onset_opens_at_once_and_only_briefly_without_voice() {
        let mut g = VadGate::new(TransmitMode::VoiceActivated, 0.5, 300);
        assert_eq!(
            g.decide_with_onset(0.1, true, 20),
            GateDecision::Open { start: true }
        );
        // A click: 100 ms, then closed.
        for _ in 0..5 {
            assert_eq!(g.decide(0.0, 20), GateDecision::Open { start: false });
        }
        assert_eq!(g.decide(0.0, 20), GateDecision::Closing);
        // Speech: the VAD takes over with its hangover.
        assert_eq!(
            g.decide_with_onset(0.2, true, 20),
            GateDecision::Open { start: true }
        );
        assert_eq!(g.decide(0.9, 20), GateDecision::Open { start: false });
        for _ in 0..15 {
            assert_eq!(g.decide(0.0, 20), GateDecision::Open { start: false });
        }
    }
}
