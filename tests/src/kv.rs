//! Running the headless client `kv` in tests: one-shot commands, and `kv join --json`
//! processes whose JSON events are collected as they arrive.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kv_client::control::ControlClient;
use serde_json::Value;

/// The client binary under test: `KV_BIN`, else this package's `kv-e2e`.
pub fn kv_bin() -> PathBuf {
    crate::bin_path("kv-e2e", "KV_BIN")
}

/// The speech sample of `assets/`.
pub fn speech_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/speech.wav")
}

/// The speech sample as 48 kHz mono samples.
pub fn speech() -> Vec<f32> {
    read_wav(&speech_path())
}

/// Reads a WAV file the client wrote (or any 48 kHz-convertible WAV).
pub fn read_wav(path: &Path) -> Vec<f32> {
    kv_client::audio::read_wav_mono_48k(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Writes 48 kHz mono float samples as a 16-bit WAV (test inputs).
pub fn write_wav(path: &Path, samples: &[f32]) {
    let mut w = kv_client::audio::WavSink::create(path, kv_client::audio::WavFormat::I16)
        .expect("create wav");
    w.write(samples).expect("write wav");
    w.finish().expect("finish wav");
}

/// Result of a finished `kv` process.
#[derive(Debug)]
pub struct KvOutput {
    /// Exit status.
    pub status: ExitStatus,
    /// Everything on stdout.
    pub stdout: String,
    /// Everything on stderr.
    pub stderr: String,
}

/// Runs `kv --server SERVER ARGS…` to completion with `KV_CONFIG_DIR=config_dir`.
pub fn kv(server: &str, config_dir: &Path, args: &[&str]) -> KvOutput {
    let out = Command::new(kv_bin())
        .arg("--server")
        .arg(server)
        .args(args)
        .env("KV_CONFIG_DIR", config_dir)
        .stdin(Stdio::null())
        .output()
        .expect("run kv");
    KvOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A channel with registered users, made through the control client.
#[derive(Debug, Clone)]
pub struct Room {
    /// Control address.
    pub server: String,
    /// The channel.
    pub chid: u64,
    /// Users, the first is the channel's owner.
    pub uids: Vec<u64>,
}

impl Room {
    /// Registers `users` users and has the first create a channel.
    pub fn new(server: SocketAddr, users: usize) -> Self {
        let c = ControlClient::new(&server.to_string()).expect("control client");
        let uids: Vec<u64> = (0..users)
            .map(|_| c.register(0, kv_proto::Perms::NONE).expect("register"))
            .collect();
        let chid = c.create(uids[0]).expect("create channel");
        Self {
            server: server.to_string(),
            chid,
            uids,
        }
    }

    /// The channel's UDP port.
    pub fn port(&self) -> u16 {
        ControlClient::new(&self.server)
            .expect("control client")
            .get_port(self.chid)
            .expect("get port")
    }

    /// Starts `kv join` for user `i` with extra `args` (`--json` is added).
    pub fn join(&self, i: usize, args: &[&str]) -> KvJoin {
        KvJoin::spawn(&self.server, self.uids[i], self.chid, args)
    }
}

/// A running `kv join --json`.
#[derive(Debug)]
pub struct KvJoin {
    child: Child,
    /// Events so far, and a wake-up for [`KvJoin::wait_for`] when one arrives.
    events: Arc<(Mutex<Vec<Value>>, Condvar)>,
    stderr: Arc<Mutex<String>>,
    /// The stdout and stderr readers; they end when the process closes its pipes.
    readers: Vec<JoinHandle<()>>,
    /// Its own config dir (pinned server keys), so tests never touch the real one.
    _config: tempfile::TempDir,
}

/// A finished `kv join`.
#[derive(Debug)]
pub struct Joined {
    /// Exit status.
    pub status: ExitStatus,
    /// Every JSON event, in order.
    pub events: Vec<Value>,
    /// Everything on stderr.
    pub stderr: String,
}

/// Longest a test waits for a `kv join` beyond its `--duration`.
pub const JOIN_GRACE: Duration = Duration::from_secs(20);

impl KvJoin {
    /// Starts `kv --server S --uid U join CHID --json ARGS…`.
    pub fn spawn(server: &str, uid: u64, chid: u64, args: &[&str]) -> Self {
        Self::spawn_acting(server, &["--uid", &uid.to_string()], chid, args)
    }

    /// Starts `kv --server S --identity FILE join CHID --json ARGS…`: a keyed user whose
    /// identity file (uid and secret key, [`kv_proto::keyfile`]) is `identity`.
    pub fn spawn_identity(server: &str, identity: &Path, chid: u64, args: &[&str]) -> Self {
        let file = identity.to_str().expect("UTF-8 path");
        Self::spawn_acting(server, &["--identity", file], chid, args)
    }

    fn spawn_acting(server: &str, acting: &[&str], chid: u64, args: &[&str]) -> Self {
        let config = tempfile::tempdir().expect("config dir");
        let mut child = Command::new(kv_bin())
            .env("KV_CONFIG_DIR", config.path())
            .args(["--server", server])
            .args(acting)
            .arg("join")
            .arg(chid.to_string())
            .arg("--json")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kv join");
        let events = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            let ev = events.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let v: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("kv printed non-JSON line {line:?}: {e}"));
                    ev.0.lock().unwrap_or_else(|p| p.into_inner()).push(v);
                    ev.1.notify_all();
                }
            }));
        }
        if let Some(mut err) = child.stderr.take() {
            let se = stderr.clone();
            readers.push(std::thread::spawn(move || {
                let mut s = String::new();
                let _ = err.read_to_string(&mut s);
                se.lock().unwrap_or_else(|p| p.into_inner()).push_str(&s);
            }));
        }
        Self {
            child,
            events,
            stderr,
            readers,
            _config: config,
        }
    }

    /// Events so far.
    pub fn events(&self) -> Vec<Value> {
        self.events
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stderr so far.
    fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until an event named `name` has been printed and returns it.
    pub fn wait_for(&self, name: &str, timeout: Duration) -> Value {
        let end = Instant::now() + timeout;
        let (lock, arrived) = &*self.events;
        let mut events = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(v) = events.iter().find(|e| e["event"] == name) {
                return v.clone();
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let seen = events.clone();
                drop(events);
                panic!(
                    "no {name:?} event within {timeout:?}; events: {seen:?}; stderr: {}",
                    self.stderr()
                );
            }
            // Woken by each new event (or the deadline).
            events = arrived
                .wait_timeout(events, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Asks the client to leave now (SIGTERM), as Ctrl-C would.
    pub fn terminate(&self) {
        // SAFETY: kill(2) on our own child's pid; no memory is touched.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
    }

    /// Waits for the process to exit (killing it after `timeout`) and collects everything.
    pub fn finish(mut self, timeout: Duration) -> Joined {
        let end = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait kv") {
                break s;
            }
            if Instant::now() >= end {
                let _ = self.child.kill();
                let s = self.child.wait().expect("wait killed kv");
                let stderr = self.stderr();
                panic!("kv join did not finish within {timeout:?}; stderr: {stderr}; status {s}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The process is gone, so its pipes close: the readers end once they have read
        // everything (a reader's panic, such as a non-JSON line, fails the test here).
        for r in std::mem::take(&mut self.readers) {
            if let Err(panic) = r.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Joined {
            status,
            events: self.events(),
            stderr: self.stderr(),
        }
    }
}

impl Drop for KvJoin {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Joined {
    /// The first event named `name`.
    pub fn first(&self, name: &str) -> Option<&Value> {
        self.events.iter().find(|e| e["event"] == name)
    }

    /// Whether an event `name` about member `uid` (`peer_joined`, `talking_started`, …) was
    /// printed.
    pub fn saw(&self, name: &str, uid: u64) -> bool {
        self.events
            .iter()
            .any(|e| e["event"] == name && e["uid"] == uid)
    }

    /// How many events are named `name`.
    pub fn count(&self, name: &str) -> usize {
        self.events.iter().filter(|e| e["event"] == name).count()
    }

    /// `unix_ms` of the time-base event `name` (`capture_started`, `recording_started`).
    pub fn time_base(&self, name: &str) -> f64 {
        self.first(name)
            .and_then(|e| e["unix_ms"].as_f64())
            .unwrap_or_else(|| panic!("no {name} in {:?}", self.events))
    }

    /// The final statistics (`left` event).
    pub fn left(&self) -> &Value {
        self.first("left")
            .unwrap_or_else(|| panic!("no left event; stderr: {}", self.stderr))
    }

    /// Asserts a clean exit, printing stderr otherwise.
    pub fn assert_ok(&self) -> &Self {
        assert!(
            self.status.success(),
            "kv join failed ({}): {}",
            self.status,
            self.stderr
        );
        self
    }
}
