//! [`Pulse`]: a private PulseAudio daemon with null sinks, standing in for sound hardware
//! so the client's cpal device code runs for real on machines without a sound card.
//! Clients reach it through `PULSE_SERVER` (see [`Pulse::command`]); ALSA's `default`
//! device goes to it through the pulse plugin (libasound2-plugins).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Tools the test drives.
pub const TOOLS: [&str; 4] = ["pulseaudio", "pactl", "paplay", "parec"];

/// True when `tool` is on the PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A private PulseAudio daemon (own runtime dir and socket, no hardware modules), killed
/// on drop.
#[derive(Debug)]
pub struct Pulse {
    child: Child,
    server: String,
    _dir: tempfile::TempDir,
}

impl Pulse {
    /// Starts the daemon and waits until it answers.
    pub fn start() -> Pulse {
        let dir = tempfile::tempdir().expect("pulse dir");
        let socket = dir.path().join("native");
        let server = format!("unix:{}", socket.display());
        let child = Command::new("pulseaudio")
            .args([
                "-n",
                "--daemonize=no",
                "--system=false",
                "--exit-idle-time=-1",
                "--use-pid-file=no",
                "--disallow-module-loading=no",
                "--log-target=stderr",
            ])
            .arg(format!(
                "--load=module-native-protocol-unix auth-anonymous=1 socket={}",
                socket.display()
            ))
            .env("HOME", dir.path())
            .env("PULSE_RUNTIME_PATH", dir.path().join("run"))
            .env("XDG_RUNTIME_DIR", dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pulseaudio");
        let p = Pulse {
            child,
            server,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !p.pactl(&["info"]).status.success() {
            assert!(Instant::now() < deadline, "pulseaudio did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    /// The daemon's address, for `PULSE_SERVER`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// A command that talks to this daemon.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("PULSE_SERVER", &self.server);
        c
    }

    /// Runs `pactl` against this daemon.
    pub fn pactl(&self, args: &[&str]) -> std::process::Output {
        self.command("pactl")
            .args(args)
            .output()
            .expect("run pactl")
    }

    /// Adds a 48 kHz mono null sink; its monitor `NAME.monitor` is a source.
    pub fn null_sink(&self, name: &str) {
        let out = self.pactl(&[
            "load-module",
            "module-null-sink",
            &format!("sink_name={name}"),
            "rate=48000",
            "channels=1",
        ]);
        assert!(out.status.success(), "null sink {name}: {out:?}");
    }
}

impl Drop for Pulse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The PulseAudio tools among [`TOOLS`] that are missing.
pub fn missing_tools() -> Vec<&'static str> {
    TOOLS.into_iter().filter(|t| !have(t)).collect()
}
