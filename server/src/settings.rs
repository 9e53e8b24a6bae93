//! The configuration file (TOML) and how it combines with the flags.
//!
//! Every flag has a key of the same name with `_` for `-` (`--max-members` is
//! `max_members`). A [`Settings`] is one layer of values, each optional: the flags are one
//! layer, the file another, and [`Settings::over`] puts the flags on top. [`Settings::resolve`]
//! fills what neither gave with the defaults and yields the server's [`Config`];
//! [`Settings::effective`] goes back, so `--print-config` prints every key and its output,
//! loaded as a file, gives the same configuration.
//!
//! Values are checked while the file is read (serde), so a bad one is reported with its
//! key and line, and unknown keys are refused (`deny_unknown_fields`): a misspelt limit
//! must not be silently ignored on a server that runs for months.

use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use kv_proto::Perms;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::Config;

/// Control address when neither the flags nor the file give one.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8085";

/// The system-wide configuration file (a packaged or systemd-run server).
pub const SYSTEM_CONFIG: &str = "/etc/kv-server/config.toml";

/// One layer of settings: the file's or the flags'. `None` means "not given here".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `--listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// `--data-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `--udp-ports`, `"LOW-HIGH"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp_ports: Option<PortRange>,
    /// `--peer-timeout`, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_timeout: Option<Seconds>,
    /// `--default-perms`, the permission bits (TOML allows `0x8`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_perms: Option<PermBits>,
    /// `--max-connections`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// `--max-connections-per-ip`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections_per_ip: Option<usize>,
    /// `--first-byte-timeout`, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_byte_timeout: Option<Seconds>,
    /// `--request-timeout`, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<Seconds>,
    /// `--allow-unsigned`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_unsigned: Option<bool>,
    /// `--register-rate`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub register_rate: Option<u32>,
    /// `--max-channels-per-user`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_channels_per_user: Option<usize>,
    /// `--max-member-pps`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_member_pps: Option<u32>,
    /// `--max-members`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_members: Option<usize>,
    /// `--max-channels`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_channels: Option<usize>,
    /// `--metrics`: where Prometheus scrapes; absent: no metrics listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<SocketAddr>,
    /// `--log-format`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file could not be read.
    #[error("config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key or a bad value (the message names
    /// the key and shows its line).
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// No data directory was given and the platform has no default one.
    #[error("no default data directory on this platform; set data_dir or pass --data-dir")]
    NoDataDir,
}

impl Settings {
    /// Reads a configuration file.
    pub fn load(path: &Path) -> Result<Settings, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|message| SettingsError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses configuration text; the error names the offending key.
    pub fn parse(text: &str) -> Result<Settings, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }

    /// `self` on top of `lower`: each value of `self`, else `lower`'s.
    pub fn over(self, lower: Settings) -> Settings {
        Settings {
            listen: self.listen.or(lower.listen),
            data_dir: self.data_dir.or(lower.data_dir),
            udp_ports: self.udp_ports.or(lower.udp_ports),
            peer_timeout: self.peer_timeout.or(lower.peer_timeout),
            default_perms: self.default_perms.or(lower.default_perms),
            max_connections: self.max_connections.or(lower.max_connections),
            max_connections_per_ip: self.max_connections_per_ip.or(lower.max_connections_per_ip),
            first_byte_timeout: self.first_byte_timeout.or(lower.first_byte_timeout),
            request_timeout: self.request_timeout.or(lower.request_timeout),
            allow_unsigned: self.allow_unsigned.or(lower.allow_unsigned),
            register_rate: self.register_rate.or(lower.register_rate),
            max_channels_per_user: self.max_channels_per_user.or(lower.max_channels_per_user),
            max_member_pps: self.max_member_pps.or(lower.max_member_pps),
            max_members: self.max_members.or(lower.max_members),
            max_channels: self.max_channels.or(lower.max_channels),
            metrics: self.metrics.or(lower.metrics),
            log_format: self.log_format.or(lower.log_format),
        }
    }

    /// The server configuration: these values, the defaults for the rest.
    /// `default_data_dir` is asked only when no data directory was given.
    pub fn resolve(
        &self,
        default_data_dir: impl FnOnce() -> Option<PathBuf>,
    ) -> Result<(Config, LogFormat), SettingsError> {
        let listen = self.listen.unwrap_or_else(|| {
            DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| unreachable!("the default address parses"))
        });
        let data_dir = match &self.data_dir {
            Some(d) => d.clone(),
            None => default_data_dir().ok_or(SettingsError::NoDataDir)?,
        };
        let mut c = Config::new(listen, data_dir);
        if let Some(r) = &self.udp_ports {
            c.udp_ports = Some(r.0.clone());
        }
        macro_rules! take {
            ($($field:ident),*) => {$(
                if let Some(v) = self.$field { c.$field = v.into(); }
            )*};
        }
        take!(
            peer_timeout,
            default_perms,
            max_connections,
            max_connections_per_ip,
            first_byte_timeout,
            request_timeout,
            allow_unsigned,
            register_rate,
            max_channels_per_user,
            max_member_pps,
            max_members,
            max_channels
        );
        c.metrics = self.metrics;
        Ok((c, self.log_format.unwrap_or_default()))
    }

    /// Every value of `config` (the effective configuration), as a layer.
    pub fn effective(config: &Config, log_format: LogFormat) -> Settings {
        Settings {
            listen: Some(config.listen),
            data_dir: Some(config.data_dir.clone()),
            udp_ports: config.udp_ports.clone().map(PortRange),
            peer_timeout: Some(Seconds(config.peer_timeout)),
            default_perms: Some(PermBits(config.default_perms.bits())),
            max_connections: Some(config.max_connections),
            max_connections_per_ip: Some(config.max_connections_per_ip),
            first_byte_timeout: Some(Seconds(config.first_byte_timeout)),
            request_timeout: Some(Seconds(config.request_timeout)),
            allow_unsigned: Some(config.allow_unsigned),
            register_rate: Some(config.register_rate),
            max_channels_per_user: Some(config.max_channels_per_user),
            max_member_pps: Some(config.max_member_pps),
            max_members: Some(config.max_members),
            max_channels: Some(config.max_channels),
            metrics: config.metrics,
            log_format: Some(log_format),
        }
    }

    /// The layer as TOML (what `--print-config` prints), with a comment for each optional
    /// key that is not set, so the output also shows what could be.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        let mut out = String::from("# kv-server configuration (TOML)\n");
        out.push_str(&toml::to_string(self)?);
        if self.udp_ports.is_none() {
            out.push_str(
                "# udp_ports = \"40000-40100\"   # unset: the OS picks each channel's port\n",
            );
        }
        if self.metrics.is_none() {
            out.push_str("# metrics = \"127.0.0.1:9185\"  # unset: no metrics listener\n");
        }
        Ok(out)
    }
}

/// The file read when `--config` is not given, if it exists: the user's
/// (`$XDG_CONFIG_HOME/kv-server/config.toml`, usually `~/.config/kv-server/config.toml`),
/// else the system's ([`SYSTEM_CONFIG`]).
pub fn default_config_file() -> Option<PathBuf> {
    let user = directories::ProjectDirs::from("", "", "kv-server")
        .map(|d| d.config_dir().join("config.toml"));
    user.into_iter()
        .chain([PathBuf::from(SYSTEM_CONFIG)])
        .find(|p| p.is_file())
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for journald forwarders, Loki, jq).
    Json,
}

/// A positive number of seconds (fractions allowed): TOML `60` or `0.5`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seconds(pub Duration);

impl FromStr for Seconds {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let v: f64 = s.trim().parse().map_err(|e| format!("{e}"))?;
        Self::from_f64(v)
    }
}

impl Seconds {
    fn from_f64(v: f64) -> Result<Self, String> {
        if !(v.is_finite() && v > 0.0 && v < 1e9) {
            return Err(format!("need a positive number of seconds, got {v}"));
        }
        Ok(Seconds(Duration::from_secs_f64(v)))
    }
}

impl From<Seconds> for Duration {
    fn from(s: Seconds) -> Duration {
        s.0
    }
}

impl Serialize for Seconds {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.0.as_secs_f64())
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // f64 also takes TOML integers.
        Seconds::from_f64(f64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A UDP port range, `"LOW-HIGH"` with `1 <= LOW <= HIGH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRange(pub RangeInclusive<u16>);

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (lo, hi) = s
            .split_once('-')
            .ok_or_else(|| format!("expected LOW-HIGH, got {s:?}"))?;
        let lo: u16 = lo.trim().parse().map_err(|e| format!("LOW: {e}"))?;
        let hi: u16 = hi.trim().parse().map_err(|e| format!("HIGH: {e}"))?;
        if lo == 0 || lo > hi {
            return Err(format!("need 1 <= LOW <= HIGH, got {lo}-{hi}"));
        }
        Ok(PortRange(lo..=hi))
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.0.start(), self.0.end())
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Permission bits: decimal or `0x` hex on the command line, an integer in TOML (which
/// has `0x` literals). At most 63 bits, as TOML integers are signed 64-bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PermBits(pub u64);

impl FromStr for PermBits {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let v = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => s.parse(),
        }
        .map_err(|e| format!("{e}"))?;
        if v > i64::MAX as u64 {
            return Err(format!("at most 63 bits, got {s}"));
        }
        Ok(PermBits(v))
    }
}

impl<'de> Deserialize<'de> for PermBits {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(PermBits(u64::deserialize(d)?))
    }
}

impl From<PermBits> for Perms {
    fn from(p: PermBits) -> Perms {
        Perms(p.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> Option<PathBuf> {
        Some("/tmp/kv-default".into())
    }

    #[test]
    fn value_parsers() {
        assert_eq!("4000-4010".parse(), Ok(PortRange(4000..=4010)));
        assert!("10-5".parse::<PortRange>().is_err());
        assert!("0-5".parse::<PortRange>().is_err());
        assert!("5".parse::<PortRange>().is_err());
        assert_eq!("0.25".parse(), Ok(Seconds(Duration::from_millis(250))));
        assert!("-1".parse::<Seconds>().is_err());
        assert!("nan".parse::<Seconds>().is_err());
        assert_eq!("0x7fffffff".parse(), Ok(PermBits(0x7FFF_FFFF)));
        assert_eq!("40".parse(), Ok(PermBits(40)));
        assert!("0xffffffffffffffff".parse::<PermBits>().is_err());
    }

    #[test]
    fn empty_file_is_the_defaults() {
        let (c, log) = Settings::parse("").unwrap().resolve(dir).unwrap();
        assert_eq!(
            c,
            Config::new(DEFAULT_LISTEN.parse().unwrap(), dir().unwrap())
        );
        assert_eq!(log, LogFormat::Text);
    }

    #[test]
    fn effective_round_trips_through_toml() {
        let text = r#"
            listen = "127.0.0.1:9000"
            udp_ports = "40000-40100"
            peer_timeout = 0.5
            default_perms = 0x28
            max_members = 3
            allow_unsigned = true
            metrics = "127.0.0.1:9185"
            log_format = "json"
        "#;
        let (c, log) = Settings::parse(text).unwrap().resolve(dir).unwrap();
        assert_eq!(c.udp_ports, Some(40000..=40100));
        assert_eq!(c.peer_timeout, Duration::from_millis(500));
        assert_eq!(c.default_perms, Perms(0x28));
        assert_eq!(c.max_members, 3);
        let printed = Settings::effective(&c, log).to_toml().unwrap();
        let (again, log2) = Settings::parse(&printed).unwrap().resolve(dir).unwrap();
        assert_eq!((again, log2), (c, log), "{printed}");
    }

    #[test]
    fn upper_layer_wins() {
        let file = Settings::parse("max_members = 3\nmax_channels = 7").unwrap();
        let flags = Settings {
            max_members: Some(5),
            ..Settings::default()
        };
        let (c, _) = flags.over(file).resolve(dir).unwrap();
        assert_eq!((c.max_members, c.max_channels), (5, 7));
    }

    #[test]
    fn errors_name_the_key() {
        let e = Settings::parse("max_member = 3").unwrap_err();
        assert!(e.contains("max_member"), "{e}");
        let e = Settings::parse("peer_timeout = -2").unwrap_err();
        assert!(e.contains("peer_timeout") && e.contains("positive"), "{e}");
        let e = Settings::parse("max_members = \"many\"").unwrap_err();
        assert!(e.contains("max_members"), "{e}");
        let e = Settings::parse("udp_ports = \"9-1\"").unwrap_err();
        assert!(e.contains("udp_ports"), "{e}");
    }
}
