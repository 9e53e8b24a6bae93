//! The keymap: which key does what, with defaults, overrides from the config file, and the
//! translation of crossterm key events into [`Intent`]s.
//!
//! Push-to-talk is the one key that cares about releases: where the terminal reports them
//! (kitty keyboard protocol) it is held; elsewhere it toggles.

use std::collections::BTreeMap;
use std::fmt;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::tui::action::Intent;
use crate::tui::model::{Overlay, PttStyle};

/// A key with modifiers, as written in the config file (`"m"`, `"space"`, `"ctrl-c"`, `"f1"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    code: KeyCodeOrd,
    ctrl: bool,
    alt: bool,
}

/// The subset of key codes that can be bound, in an orderable form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum KeyCodeOrd {
    Char(char),
    F(u8),
    Enter,
    Esc,
    Tab,
    BackTab,
    Backspace,
    Delete,
    Up,
    Down,
    Left,
    Right,
    Home,
    End,
    PageUp,
    PageDown,
}

/// A key spec that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not a key name this client knows.
    #[error("unknown key {0:?} (try a letter, \"space\", \"enter\", \"f1\", \"ctrl-x\")")]
    Unknown(String),
    /// Not an action name this client knows.
    #[error("unknown action {0:?} in [keys]")]
    UnknownAction(String),
}

impl Key {
    /// A plain character key.
    pub const fn char(c: char) -> Self {
        Key {
            code: KeyCodeOrd::Char(c),
            ctrl: false,
            alt: false,
        }
    }

    /// Reads `"ctrl-c"`, `"space"`, `"?"`, `"f5"`, ….
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let err = || KeyError::Unknown(s.to_string());
        let mut rest = s.trim();
        let (mut ctrl, mut alt) = (false, false);
        loop {
            let lower = rest.to_ascii_lowercase();
            if rest.len() > 1 && (lower.starts_with("ctrl-") || lower.starts_with("ctrl+")) {
                ctrl = true;
                rest = &rest[5..];
            } else if rest.len() > 1 && (lower.starts_with("alt-") || lower.starts_with("alt+")) {
                alt = true;
                rest = &rest[4..];
            } else {
                break;
            }
        }
        let mut chars = rest.chars();
        let code = match (chars.next(), chars.next()) {
            (Some(c), None) => KeyCodeOrd::Char(if ctrl { c.to_ascii_lowercase() } else { c }),
            _ => match rest.to_ascii_lowercase().as_str() {
                "space" => KeyCodeOrd::Char(' '),
                "enter" | "return" => KeyCodeOrd::Enter,
                "esc" | "escape" => KeyCodeOrd::Esc,
                "tab" => KeyCodeOrd::Tab,
                "backtab" | "shift-tab" => KeyCodeOrd::BackTab,
                "backspace" => KeyCodeOrd::Backspace,
                "delete" | "del" => KeyCodeOrd::Delete,
                "up" => KeyCodeOrd::Up,
                "down" => KeyCodeOrd::Down,
                "left" => KeyCodeOrd::Left,
                "right" => KeyCodeOrd::Right,
                "home" => KeyCodeOrd::Home,
                "end" => KeyCodeOrd::End,
                "pageup" => KeyCodeOrd::PageUp,
                "pagedown" => KeyCodeOrd::PageDown,
                f if f.starts_with('f') => {
                    let n: u8 = f[1..].parse().map_err(|_| err())?;
                    if !(1..=24).contains(&n) {
                        return Err(err());
                    }
                    KeyCodeOrd::F(n)
                }
                _ => return Err(err()),
            },
        };
        Ok(Key { code, ctrl, alt })
    }

    /// The key of a crossterm event, if it is one that can be bound.
    pub fn from_event(ev: &KeyEvent) -> Option<Self> {
        let code = match ev.code {
            KeyCode::Char(c) => {
                let c = if ev.modifiers.contains(KeyModifiers::CONTROL) {
                    c.to_ascii_lowercase()
                } else {
                    c
                };
                KeyCodeOrd::Char(c)
            }
            KeyCode::F(n) => KeyCodeOrd::F(n),
            KeyCode::Enter => KeyCodeOrd::Enter,
            KeyCode::Esc => KeyCodeOrd::Esc,
            KeyCode::Tab => KeyCodeOrd::Tab,
            KeyCode::BackTab => KeyCodeOrd::BackTab,
            KeyCode::Backspace => KeyCodeOrd::Backspace,
            KeyCode::Delete => KeyCodeOrd::Delete,
            KeyCode::Up => KeyCodeOrd::Up,
            KeyCode::Down => KeyCodeOrd::Down,
            KeyCode::Left => KeyCodeOrd::Left,
            KeyCode::Right => KeyCodeOrd::Right,
            KeyCode::Home => KeyCodeOrd::Home,
            KeyCode::End => KeyCodeOrd::End,
            KeyCode::PageUp => KeyCodeOrd::PageUp,
            KeyCode::PageDown => KeyCodeOrd::PageDown,
            _ => return None,
        };
        Some(Key {
            code,
            ctrl: ev.modifiers.contains(KeyModifiers::CONTROL),
            alt: ev.modifiers.contains(KeyModifiers::ALT),
        })
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ctrl {
            f.write_str("ctrl-")?;
        }
        if self.alt {
            f.write_str("alt-")?;
        }
        match self.code {
            KeyCodeOrd::Char(' ') => f.write_str("space"),
            KeyCodeOrd::Char(c) => write!(f, "{c}"),
            KeyCodeOrd::F(n) => write!(f, "f{n}"),
            KeyCodeOrd::Enter => f.write_str("enter"),
            KeyCodeOrd::Esc => f.write_str("esc"),
            KeyCodeOrd::Tab => f.write_str("tab"),
            KeyCodeOrd::BackTab => f.write_str("backtab"),
            KeyCodeOrd::Backspace => f.write_str("backspace"),
            KeyCodeOrd::Delete => f.write_str("delete"),
            KeyCodeOrd::Up => f.write_str("up"),
            KeyCodeOrd::Down => f.write_str("down"),
            KeyCodeOrd::Left => f.write_str("left"),
            KeyCodeOrd::Right => f.write_str("right"),
            KeyCodeOrd::Home => f.write_str("home"),
            KeyCodeOrd::End => f.write_str("end"),
            KeyCodeOrd::PageUp => f.write_str("pageup"),
            KeyCodeOrd::PageDown => f.write_str("pagedown"),
        }
    }
}

/// Bindable actions: config name, action, help text, default keys. The order is the help's.
const BINDINGS: &[(&str, Intent, &str, &[&str])] = &[
    ("up", Intent::Up, "move up", &["up", "k"]),
    ("down", Intent::Down, "move down", &["down", "j"]),
    ("focus", Intent::FocusNext, "channels ⇄ members", &["tab"]),
    (
        "join",
        Intent::JoinSelected,
        "join selected channel",
        &["enter"],
    ),
    ("leave", Intent::Leave, "leave channel", &["l"]),
    ("create", Intent::CreateChannel, "create channel", &["c"]),
    ("rename", Intent::RenameChannel, "rename channel", &["r"]),
    ("delete", Intent::DeleteChannel, "delete channel", &["x"]),
    ("name", Intent::SetName, "set display name", &["n"]),
    ("mute", Intent::ToggleMute, "mute / unmute", &["m"]),
    ("deafen", Intent::ToggleDeafen, "deafen / undeafen", &["d"]),
    (
        "mode",
        Intent::CycleMode,
        "transmit mode (voice/ptt/continuous)",
        &["t"],
    ),
    ("ptt", Intent::PttPress, "push-to-talk", &["space"]),
    (
        "denoise",
        Intent::ToggleDenoise,
        "noise suppression on/off",
        &["s"],
    ),
    ("aec", Intent::ToggleAec, "echo cancellation on/off", &["e"]),
    ("agc", Intent::ToggleAgc, "automatic gain on/off", &["g"]),
    (
        "volume-up",
        Intent::VolumeUp,
        "selected member louder",
        &["+", "="],
    ),
    (
        "volume-down",
        Intent::VolumeDown,
        "selected member quieter",
        &["-"],
    ),
    ("vad-up", Intent::VadUp, "voice threshold up", &["]"]),
    ("vad-down", Intent::VadDown, "voice threshold down", &["["]),
    (
        "quality",
        Intent::ToggleQuality,
        "link quality panel",
        &["i"],
    ),
    ("devices", Intent::OpenDevices, "audio devices", &["a"]),
    (
        "chat",
        Intent::OpenChat,
        "write a chat message",
        &["/", "w"],
    ),
    ("help", Intent::ToggleHelp, "this help", &["?", "f1"]),
    ("quit", Intent::Quit, "quit", &["q", "ctrl-c"]),
];

/// Maps keys to actions for the main screen.
#[derive(Debug, Clone)]
pub struct KeyMap {
    bindings: BTreeMap<Key, Intent>,
}

impl Default for KeyMap {
    fn default() -> Self {
        let mut bindings = BTreeMap::new();
        for (_, action, _, keys) in BINDINGS {
            for k in *keys {
                // Defaults are constants, checked by a unit test.
                if let Ok(key) = Key::parse(k) {
                    bindings.insert(key, action.clone());
                }
            }
        }
        KeyMap { bindings }
    }
}

impl KeyMap {
    /// The defaults with `overrides` (action name → key specs) applied. An overridden action
    /// loses its default keys; a key taken by an override is removed from other actions.
    pub fn with_overrides(overrides: &BTreeMap<String, Vec<String>>) -> Result<Self, KeyError> {
        let mut map = KeyMap::default();
        for (name, specs) in overrides {
            let action = BINDINGS
                .iter()
                .find(|(n, ..)| n == name)
                .map(|(_, a, ..)| a.clone())
                .ok_or_else(|| KeyError::UnknownAction(name.clone()))?;
            map.bindings.retain(|_, a| *a != action);
            for s in specs {
                map.bindings.insert(Key::parse(s)?, action.clone());
            }
        }
        Ok(map)
    }

    /// Names of every bindable action, for the config file's documentation.
    pub fn action_names() -> impl Iterator<Item = &'static str> {
        BINDINGS.iter().map(|(n, ..)| *n)
    }

    /// Rows of the help overlay: keys bound to each action, and what it does.
    pub fn help(&self) -> Vec<(String, &'static str)> {
        BINDINGS
            .iter()
            .filter_map(|(_, action, text, _)| {
                let mut keys: Vec<&Key> = self
                    .bindings
                    .iter()
                    .filter(|(_, a)| *a == action)
                    .map(|(k, _)| k)
                    .collect();
                // Plain keys first: they are the ones people use.
                keys.sort_by_key(|k| (k.ctrl || k.alt, **k));
                let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
                (!keys.is_empty()).then(|| (keys.join(" "), *text))
            })
            .collect()
    }

    /// The key shown as "the push-to-talk key" in the status line.
    pub fn ptt_key(&self) -> Option<Key> {
        self.bindings
            .iter()
            .find(|(_, a)| **a == Intent::PttPress)
            .map(|(k, _)| *k)
    }

    /// Translates a key event into an action, given what is on screen. Releases only matter
    /// for push-to-talk in hold style; repeats of the push-to-talk key are ignored so a held
    /// key does not toggle.
    pub fn translate(&self, ev: &KeyEvent, overlay: &Overlay, ptt: PttStyle) -> Option<Intent> {
        match overlay {
            Overlay::Prompt { .. } => {
                if ev.kind == KeyEventKind::Release {
                    return None;
                }
                if ev.modifiers.contains(KeyModifiers::CONTROL) && ev.code == KeyCode::Char('c') {
                    return Some(Intent::Cancel);
                }
                return match ev.code {
                    KeyCode::Enter => Some(Intent::Submit),
                    KeyCode::Esc => Some(Intent::Cancel),
                    KeyCode::Backspace => Some(Intent::Backspace),
                    KeyCode::Char(c) => Some(Intent::Input(c)),
                    _ => None,
                };
            }
            Overlay::ConfirmDelete(_) | Overlay::Devices(_) | Overlay::Help => {
                if ev.kind == KeyEventKind::Release {
                    return None;
                }
                match ev.code {
                    KeyCode::Enter => return Some(Intent::Submit),
                    KeyCode::Esc => return Some(Intent::Cancel),
                    KeyCode::Tab | KeyCode::Left | KeyCode::Right
                        if matches!(overlay, Overlay::Devices(_)) =>
                    {
                        return Some(Intent::PickerSwitch)
                    }
                    KeyCode::Char(c) if matches!(overlay, Overlay::ConfirmDelete(_)) => {
                        return Some(Intent::Input(c))
                    }
                    _ => {}
                }
            }
            Overlay::None => {}
        }
        let action = self.bindings.get(&Key::from_event(ev)?)?.clone();
        match (ev.kind, &action) {
            (KeyEventKind::Release, Intent::PttPress) if ptt == PttStyle::Hold => {
                Some(Intent::PttRelease)
            }
            (KeyEventKind::Release, _) => None,
            (KeyEventKind::Repeat, Intent::PttPress) => None,
            _ => Some(action),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossterm::event::KeyEventState;

    fn ev(code: KeyCode, kind: KeyEventKind) -> KeyEvent {
        KeyEvent {
            code,
            modifiers: KeyModifiers::NONE,
            kind,
            state: KeyEventState::NONE,
        }
    }

    fn press(c: char) -> KeyEvent {
        ev(KeyCode::Char(c), KeyEventKind::Press)
    }

    #[test]
    fn every_default_key_parses_and_round_trips() {
        for (name, _, _, keys) in BINDINGS {
            for k in *keys {
                let key = Key::parse(k).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(Key::parse(&key.to_string()), Ok(key));
            }
        }
    }

    #[test]
    fn defaults_map_keys_to_actions() {
        let km = KeyMap::default();
        let t = |e: KeyEvent| km.translate(&e, &Overlay::None, PttStyle::Toggle);
        assert_eq!(t(press('m')), Some(Intent::ToggleMute));
        assert_eq!(t(press('?')), Some(Intent::ToggleHelp));
        assert_eq!(t(press('/')), Some(Intent::OpenChat));
        assert_eq!(t(press('w')), Some(Intent::OpenChat));
        assert_eq!(t(press('q')), Some(Intent::Quit));
        assert_eq!(
            t(ev(KeyCode::Enter, KeyEventKind::Press)),
            Some(Intent::JoinSelected)
        );
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(t(ctrl_c), Some(Intent::Quit));
        assert_eq!(t(press('Z')), None);
    }

    #[test]
    fn push_to_talk_hold_reports_release_toggle_ignores_it() {
        let km = KeyMap::default();
        let down = ev(KeyCode::Char(' '), KeyEventKind::Press);
        let repeat = ev(KeyCode::Char(' '), KeyEventKind::Repeat);
        let up = ev(KeyCode::Char(' '), KeyEventKind::Release);
        let hold = |e| km.translate(&e, &Overlay::None, PttStyle::Hold);
        assert_eq!(hold(down), Some(Intent::PttPress));
        assert_eq!(hold(repeat), None);
        assert_eq!(hold(up), Some(Intent::PttRelease));
        let toggle = |e| km.translate(&e, &Overlay::None, PttStyle::Toggle);
        assert_eq!(toggle(down), Some(Intent::PttPress));
        assert_eq!(toggle(up), None);
        // Releases of other keys never act (kitty protocol reports them for every key).
        assert_eq!(hold(ev(KeyCode::Char('m'), KeyEventKind::Release)), None);
    }

    #[test]
    fn prompt_takes_every_character() {
        let km = KeyMap::default();
        let prompt = Overlay::Prompt {
            kind: crate::tui::model::PromptKind::NewChannel,
            input: String::new(),
        };
        let t = |e| km.translate(&e, &prompt, PttStyle::Hold);
        assert_eq!(t(press('q')), Some(Intent::Input('q')));
        assert_eq!(t(press(' ')), Some(Intent::Input(' ')));
        assert_eq!(
            t(ev(KeyCode::Enter, KeyEventKind::Press)),
            Some(Intent::Submit)
        );
        assert_eq!(
            t(ev(KeyCode::Esc, KeyEventKind::Press)),
            Some(Intent::Cancel)
        );
        assert_eq!(t(ev(KeyCode::Char('q'), KeyEventKind::Release)), None);
    }

    #[test]
    fn overrides_replace_defaults_and_reject_unknowns() {
        let mut o = BTreeMap::new();
        o.insert(
            "mute".to_string(),
            vec!["ctrl-m".to_string(), "f2".to_string()],
        );
        o.insert("ptt".to_string(), vec!["m".to_string()]);
        let km = KeyMap::with_overrides(&o).unwrap();
        let t = |e| km.translate(&e, &Overlay::None, PttStyle::Toggle);
        assert_eq!(t(press('m')), Some(Intent::PttPress));
        assert_eq!(t(press(' ')), None);
        assert_eq!(
            t(KeyEvent::new(KeyCode::Char('m'), KeyModifiers::CONTROL)),
            Some(Intent::ToggleMute)
        );
        assert_eq!(
            t(ev(KeyCode::F(2), KeyEventKind::Press)),
            Some(Intent::ToggleMute)
        );
        assert_eq!(km.ptt_key(), Some(Key::char('m')));
        assert!(km
            .help()
            .contains(&("f2 ctrl-m".to_string(), "mute / unmute")));

        let mut bad = BTreeMap::new();
        bad.insert("fly".to_string(), vec!["f".to_string()]);
        assert!(matches!(
            KeyMap::with_overrides(&bad),
            Err(KeyError::UnknownAction(_))
        ));
        let mut bad = BTreeMap::new();
        bad.insert("mute".to_string(), vec!["hyper-q".to_string()]);
        assert!(matches!(
            KeyMap::with_overrides(&bad),
            Err(KeyError::Unknown(_))
        ));
    }

    #[test]
    fn help_lists_every_action_once() {
        let help = KeyMap::default().help();
        assert_eq!(help.len(), BINDINGS.len());
        assert!(help.contains(&("q ctrl-c".to_string(), "quit")));
        assert!(help.contains(&("space".to_string(), "push-to-talk")));
    }
}
