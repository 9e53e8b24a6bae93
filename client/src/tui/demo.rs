//! `kv-tui --demo`: a whole KV on loopback for a newcomer. An embedded server
//! ([`crate::embedded_server`], data in a temporary directory), one channel, a bot member that
//! speaks the bundled speech sample in a loop, and a user for the person at the keyboard.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::control::{ControlClient, ControlError};
use crate::embedded_server::{EmbeddedServer, EmbeddedServerError};
use crate::identity::{keyed_user, Acting};
use crate::session::{pump, Flow, InputSource, SessionConfig, SessionEvent, VoiceSession};

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The embedded server failed to start.
    #[error("{0}")]
    Server(#[from] EmbeddedServerError),
    /// Setting up users or the channel failed.
    #[error("demo setup: {0}")]
    Control(#[from] ControlError),
    /// The bot could not join.
    #[error("demo bot: {0}")]
    Bot(String),
    /// Threads or temporary files.
    #[error("demo: {0}")]
    Io(#[from] std::io::Error),
}

/// A running demo: server thread, bot, and the ids the TUI needs.
pub struct Demo {
    addr: SocketAddr,
    chid: u64,
    user: Acting,
    data_dir: PathBuf,
    server: Option<EmbeddedServer>,
    bot: Option<Bot>,
}

impl std::fmt::Debug for Demo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Demo")
            .field("addr", &self.addr)
            .field("chid", &self.chid)
            .field("user", &self.user.uid)
            .finish()
    }
}

impl Demo {
    /// Starts the server, creates the channel and users, and starts the bot.
    pub fn start() -> Result<Self, DemoError> {
        let data_dir = std::env::temp_dir().join(format!("kv-demo-{}", std::process::id()));
        let server =
            EmbeddedServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), data_dir.clone())?;
        let (addr, admin) = (server.addr(), server.admin_uid());
        tracing::info!(%addr, "demo server started");

        let control = ControlClient::new(&addr.to_string())?;
        // Everyone signs: the admin with the key the server wrote, the bot and the user
        // with keys made here.
        let admin_id = Acting::from_file(&data_dir.join("admin.key"))
            .map_err(|e| DemoError::Bot(e.to_string()))?;
        debug_assert_eq!(admin_id.uid, admin);
        let as_admin = admin_id.client(&control);
        let chid = as_admin.create(admin)?;
        as_admin.set_channel_name(admin, chid, "demo")?;
        let bot = keyed_user(&control)?;
        bot.client(&control)
            .set_user_name(bot.uid, bot.uid, "kv-bot")?;
        let user = keyed_user(&control)?;
        user.client(&control)
            .set_user_name(user.uid, user.uid, "you")?;

        let mut demo = Demo {
            addr,
            chid,
            user,
            data_dir,
            server: Some(server),
            bot: None,
        };
        demo.bot = Some(Bot::start(bot.client(&control), bot.uid, chid)?);
        Ok(demo)
    }

    /// The embedded server's control address.
    pub fn server_addr(&self) -> String {
        self.addr.to_string()
    }

    /// The demo channel.
    pub fn channel(&self) -> u64 {
        self.chid
    }

    /// The uid made for the person at the keyboard.
    pub fn user_uid(&self) -> u64 {
        self.user.uid
    }

    /// The user made for the person at the keyboard, with its key.
    pub fn user(&self) -> Acting {
        self.user.clone()
    }

    /// Stops the bot and the server and removes the temporary data.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(bot) = self.bot.take() {
            bot.stop();
        }
        if let Some(server) = self.server.take() {
            server.stop();
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The bundled speech sample (48 kHz mono 16-bit, see assets/README.md), built into the
/// binary so `--demo` works from any directory.
const SPEECH_WAV: &[u8] = include_bytes!("../../../assets/speech.wav");
/// Times the sample repeats (with a pause) in one bot session, about a minute of talk.
const BOT_REPEATS: usize = 8;
/// How often the bot checks its stop flag.
const BOT_TICK: Duration = Duration::from_millis(100);
/// Silence between repeats, samples (2 s at 48 kHz).
const BOT_PAUSE: usize = 96_000;

/// Decodes [`SPEECH_WAV`] to f32 samples.
pub fn speech_sample() -> Result<Vec<f32>, DemoError> {
    let reader = hound::WavReader::new(std::io::Cursor::new(SPEECH_WAV))
        .map_err(|e| DemoError::Bot(format!("bundled sample: {e}")))?;
    let spec = reader.spec();
    if spec.channels != 1 || spec.sample_rate != 48_000 || spec.bits_per_sample != 16 {
        return Err(DemoError::Bot(format!(
            "bundled sample has format {spec:?}"
        )));
    }
    reader
        .into_samples::<i16>()
        .map(|s| s.map(|v| f32::from(v) / 32768.0))
        .collect::<Result<_, _>>()
        .map_err(|e| DemoError::Bot(format!("bundled sample: {e}")))
}

/// A member that talks: a voice session whose microphone is the speech sample, started
/// again whenever the sample has played through.
#[derive(Debug)]
pub struct Bot {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Bot {
    /// Joins `chid` through `control` (which signs as `uid`) and starts talking.
    pub fn start(control: ControlClient, uid: u64, chid: u64) -> Result<Bot, DemoError> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let speech = speech_sample()?;
        let mut input = Vec::with_capacity((speech.len() + BOT_PAUSE) * BOT_REPEATS);
        for _ in 0..BOT_REPEATS {
            input.extend_from_slice(&speech);
            input.extend(std::iter::repeat_n(0.0, BOT_PAUSE));
        }
        let mut cfg = SessionConfig::new(control.addr(), uid, chid);
        cfg.control = Some(control);
        cfg.input = InputSource::Samples(input);
        // Check it can join before handing control to the thread.
        let (first, events) =
            VoiceSession::start(cfg.clone()).map_err(|e| DemoError::Bot(e.to_string()))?;
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("kv-demo-bot".into())
            .spawn(move || {
                let mut current = Some((first, events));
                while let Some((session, events)) = current.take() {
                    // Talk until the input has played out or we are told to stop.
                    let mut again = false;
                    pump(
                        &events,
                        BOT_TICK,
                        || {
                            if stop2.load(Ordering::Relaxed) {
                                Flow::Stop
                            } else {
                                Flow::Continue
                            }
                        },
                        |ev| match ev {
                            SessionEvent::InputEnded => {
                                again = true;
                                Flow::Stop
                            }
                            SessionEvent::Kicked | SessionEvent::Shutdown => Flow::Stop,
                            _ => Flow::Continue,
                        },
                    );
                    let _ = session.leave();
                    if !again || stop2.load(Ordering::Relaxed) {
                        return;
                    }
                    match VoiceSession::start(cfg.clone()) {
                        Ok(next) => current = Some(next),
                        Err(e) => tracing::warn!(error = %e, "demo bot could not rejoin"),
                    }
                }
            })?;
        Ok(Bot {
            stop,
            thread: Some(thread),
        })
    }

    /// Leaves the channel and ends the bot's thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Bot {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bundled_speech_decodes() {
        let s = super::speech_sample().expect("sample");
        // About 5 s of 48 kHz audio, not silent.
        assert!(s.len() > 48_000 * 3, "{} samples", s.len());
        let peak = s.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(peak > 0.1, "peak {peak}");
    }
}
