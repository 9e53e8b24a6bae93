//! Settings of the terminal client, kept as TOML in the config dir: devices, transmit mode,
//! thresholds, per-user volumes, display name and key overrides.
//!
//! The directory is [`crate::config_dir::config_dir`]'s (`KV_CONFIG_DIR` overrides it, so
//! tests never touch a real user's files).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::tui::model::{App, TransmitMode};

/// File name of the TUI's settings inside the config dir.
pub const FILE_NAME: &str = "kv-tui.toml";

/// Why settings could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No home directory to put a config dir in, and `KV_CONFIG_DIR` unset.
    #[error("no config directory (set KV_CONFIG_DIR)")]
    NoDir,
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for these settings.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        source: toml::de::Error,
    },
}

/// What the TUI remembers between runs. Every field has a default, so a partial or old
/// file still loads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Server used when none is given on the command line.
    pub server: Option<String>,
    /// Display name last set (asked on first run when empty).
    pub display_name: Option<String>,
    /// Input device name (None: system default).
    pub input_device: Option<String>,
    /// Output device name (None: system default).
    pub output_device: Option<String>,
    /// Transmit mode.
    pub mode: TransmitMode,
    /// Voice-activation threshold, 0..1 on the mic meter's scale.
    pub vad_threshold: f32,
    /// Noise suppression on.
    pub denoise: bool,
    /// Echo cancellation on (it runs only with sound devices).
    pub aec: bool,
    /// Automatic gain control on (likewise).
    pub agc: bool,
    /// Per-user playback volume in percent, keyed by uid (as a string: TOML keys are).
    pub volumes: BTreeMap<String, u16>,
    /// Key overrides: action name → keys, e.g. `mute = ["m", "f2"]`.
    pub keys: BTreeMap<String, Vec<String>>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            server: None,
            display_name: None,
            input_device: None,
            output_device: None,
            mode: TransmitMode::VoiceActivated,
            vad_threshold: 0.5,
            denoise: true,
            aec: true,
            agc: true,
            volumes: BTreeMap::new(),
            keys: BTreeMap::new(),
        }
    }
}

/// The config dir ([`crate::config_dir::config_dir`]), or why there is none.
pub fn config_dir() -> Result<PathBuf, ConfigError> {
    crate::config_dir::config_dir().ok_or(ConfigError::NoDir)
}

impl Settings {
    /// Reads `dir/kv-tui.toml`; a missing file gives the defaults.
    pub fn load(dir: &Path) -> Result<Self, ConfigError> {
        let path = dir.join(FILE_NAME);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Settings::default()),
            Err(source) => return Err(ConfigError::Io { path, source }),
        };
        toml::from_str(&text).map_err(|source| ConfigError::Parse { path, source })
    }

    /// Writes `dir/kv-tui.toml` atomically (temp file, then rename), creating `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), ConfigError> {
        let path = dir.join(FILE_NAME);
        let io = |source| ConfigError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        // Serializing plain structs and maps with string keys cannot fail.
        let text = toml::to_string_pretty(self).unwrap_or_default();
        let tmp = dir.join(format!("{FILE_NAME}.tmp"));
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    /// Puts the remembered values into a fresh [`App`].
    pub fn apply_to(&self, app: &mut App) {
        app.mode = self.mode;
        app.vad_threshold = self.vad_threshold.clamp(0.0, 1.0);
        app.denoise = self.denoise;
        app.aec = self.aec;
        app.agc = self.agc;
        app.input_device = self.input_device.clone();
        app.output_device = self.output_device.clone();
        app.volumes = self
            .volumes
            .iter()
            .filter_map(|(k, v)| Some((k.parse().ok()?, *v)))
            .collect();
        if let Some(name) = &self.display_name {
            app.display_name = name.clone();
        }
    }

    /// Takes the values worth remembering from the running [`App`].
    pub fn update_from(&mut self, app: &App) {
        self.mode = app.mode;
        self.vad_threshold = app.vad_threshold;
        self.denoise = app.denoise;
        self.aec = app.aec;
        self.agc = app.agc;
        self.input_device = app.input_device.clone();
        self.output_device = app.output_device.clone();
        self.volumes = app
            .volumes
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        if !app.display_name.is_empty() {
            self.display_name = Some(app.display_name.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_gives_defaults_and_save_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Settings::load(dir.path()).unwrap(), Settings::default());
        let mut s = Settings {
            input_device: Some("USB Mic".into()),
            mode: TransmitMode::PushToTalk,
            vad_threshold: 0.35,
            denoise: false,
            aec: false,
            agc: false,
            ..Settings::default()
        };
        s.volumes.insert("42".into(), 150);
        s.keys.insert("mute".into(), vec!["f2".into()]);
        let sub = dir.path().join("nested");
        s.save(&sub).unwrap();
        assert_eq!(Settings::load(&sub).unwrap(), s);
        let text = std::fs::read_to_string(sub.join(FILE_NAME)).unwrap();
        assert!(text.contains("mode = \"push-to-talk\""), "{text}");
    }

    #[test]
    fn partial_file_fills_defaults_and_typos_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "mode = \"continuous\"\n").unwrap();
        let s = Settings::load(dir.path()).unwrap();
        assert_eq!(s.mode, TransmitMode::Continuous);
        assert!(s.denoise);
        assert!(
            s.aec && s.agc,
            "echo cancellation and gain control are on by default"
        );
        std::fs::write(dir.path().join(FILE_NAME), "mdoe = \"continuous\"\n").unwrap();
        let err = Settings::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("mdoe"), "{err}");
    }

    #[test]
    fn app_round_trip_keeps_volumes_and_mode() {
        let mut app = App::new("x");
        app.volumes.insert(7, 80);
        app.mode = TransmitMode::Continuous;
        app.display_name = "ann".into();
        app.output_device = Some("hdmi".into());
        app.agc = false;
        let mut s = Settings::default();
        s.update_from(&app);
        let mut fresh = App::new("x");
        s.apply_to(&mut fresh);
        assert_eq!(fresh.volumes.get(&7), Some(&80));
        assert_eq!(fresh.mode, TransmitMode::Continuous);
        assert_eq!(fresh.display_name, "ann");
        assert_eq!(fresh.output_device.as_deref(), Some("hdmi"));
        assert!(fresh.aec && !fresh.agc);
    }
}
