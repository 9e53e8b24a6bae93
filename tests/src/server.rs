//! [`ServerProcess`]: the real server binary, started on `127.0.0.1:0`.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::{SigningKey, VerifyingKey};
use kv_proto::signed::SignedRequest;
use kv_proto::{ControlReply, ControlRequest, ErrorCode};

use crate::control;

/// Longest a test waits for the server to print its start-up lines or to exit.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Most stderr kept per server, so a chatty server cannot fill memory.
const STDERR_LIMIT: usize = 1 << 20;

/// Flags every test server gets before the test's own (a later repeat overrides): the
/// conformance tests speak the seed's unsigned commands for key-less users, and register
/// many users from one address.
pub const HARNESS_FLAGS: [&str; 3] = ["--allow-unsigned", "--register-rate", "0"];

/// A running `kv-server`. Killed when dropped; its stderr is printed if the test panicked.
#[derive(Debug)]
pub struct ServerProcess {
    /// Control address (`127.0.0.1:<real port>`).
    pub addr: SocketAddr,
    /// The bootstrap admin's uid, from the `admin uid:` line.
    pub admin_uid: u64,
    /// The metrics listener (`--metrics`), from the `metrics on` line.
    pub metrics_addr: Option<SocketAddr>,
    /// Data directory (a temporary one unless given).
    pub data_dir: PathBuf,
    /// The process.
    pub child: Child,
    /// The admin's key, from `admin.key` in the data directory: [`ServerProcess::request`]
    /// signs every request that acts as the admin with it.
    pub admin_key: SigningKey,
    /// Flags besides `--listen` and `--data-dir`, re-used by [`ServerProcess::restart`].
    args: Vec<String>,
    /// `RLIMIT_NOFILE` (soft and hard) set for the process, if any.
    nofile: Option<u64>,
    /// Everything the server wrote to stderr (all runs), for failure reports.
    stderr: Arc<Mutex<String>>,
    /// Keeps a temporary data directory alive across restarts.
    _temp: Option<Arc<tempfile::TempDir>>,
    /// Sign-ups get keys ([`ServerProcess::start_keyed`]); otherwise they are key-less.
    keyed: bool,
    /// Keys of the users this harness signed up with one: their requests are signed.
    keys: Mutex<std::collections::HashMap<u64, SigningKey>>,
}

/// The server binary under test: `KV_SERVER_BIN`, else this package's `kv-server-e2e`.
pub fn server_bin() -> PathBuf {
    crate::bin_path("kv-server-e2e", "KV_SERVER_BIN")
}

impl ServerProcess {
    /// Starts a server with default flags and a fresh temporary data directory.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra flags (e.g. `["--peer-timeout", "0.5"]`) and a fresh
    /// temporary data directory.
    pub fn start_with(args: &[&str]) -> Self {
        let temp = tempfile::tempdir().expect("temporary data dir");
        let dir = temp.path().to_path_buf();
        let mut s = Self::start_in(&dir, args);
        s._temp = Some(Arc::new(temp));
        s
    }

    /// Starts a server on `data_dir` (kept after the test).
    pub fn start_in(data_dir: &Path, args: &[&str]) -> Self {
        let args: Vec<String> = HARNESS_FLAGS
            .iter()
            .chain(args)
            .map(|s| s.to_string())
            .collect();
        Self::start_exactly(data_dir, args)
    }

    /// Starts a server with the default flags (signatures required; no sign-up limit, as
    /// tests sign up many users) and a fresh temporary data directory, whose
    /// [`ServerProcess::signup`] and [`ServerProcess::register_with`] make *keyed* users and
    /// whose [`ServerProcess::request`] signs for them: for tests of what a server that
    /// does not serve the seed's unsigned commands does.
    pub fn start_keyed(args: &[&str]) -> Self {
        let temp = tempfile::tempdir().expect("temporary data dir");
        let args: Vec<String> = ["--register-rate", "0"]
            .iter()
            .chain(args)
            .map(|s| s.to_string())
            .collect();
        let mut s = Self::start_exactly(temp.path(), args);
        s._temp = Some(Arc::new(temp));
        s.keyed = true;
        s
    }

    /// Starts a server on `data_dir` with exactly these flags (no [`HARNESS_FLAGS`]): the
    /// security tests run the defaults.
    pub fn start_exactly(data_dir: &Path, args: Vec<String>) -> Self {
        Self::start_limited(data_dir, args, None)
    }

    /// Like [`ServerProcess::start_exactly`], with the descriptor limit (soft and hard
    /// `RLIMIT_NOFILE`) of the server process set to `nofile`.
    pub fn start_limited(data_dir: &Path, args: Vec<String>, nofile: Option<u64>) -> Self {
        let stderr = Arc::new(Mutex::new(String::new()));
        let (child, addr, admin_uid, metrics_addr) = spawn(data_dir, &args, &stderr, nofile);
        Self {
            addr,
            admin_uid,
            metrics_addr,
            admin_key: admin_key(data_dir, admin_uid),
            data_dir: data_dir.to_path_buf(),
            child,
            args,
            nofile,
            stderr,
            _temp: None,
            keyed: false,
            keys: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Stops the server with SIGTERM and waits for it to exit; returns its exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait()
    }

    /// Kills the server with SIGKILL (no clean-up at all) and reaps it.
    pub fn sigkill(&mut self) {
        self.signal(libc::SIGKILL);
        self.wait();
    }

    /// Sends a signal to the server process.
    pub fn signal(&self, sig: libc::c_int) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) with our own child's pid has no memory-safety preconditions.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for server") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("server did not exit in time\n{}", self.stderr_log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the server again on the same data directory and flags (stopping it with
    /// SIGTERM first if it still runs). The port is a new one: read `addr` again.
    pub fn restart(&mut self) {
        if self.child.try_wait().expect("server status").is_none() {
            self.terminate();
        }
        let (child, addr, admin_uid, metrics_addr) =
            spawn(&self.data_dir, &self.args, &self.stderr, self.nofile);
        self.child = child;
        self.addr = addr;
        self.metrics_addr = metrics_addr;
        self.admin_uid = admin_uid;
        self.admin_key = admin_key(&self.data_dir, admin_uid);
    }

    /// What the server wrote to stderr so far.
    pub fn stderr_log(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Sends a request and decodes the reply. A request acting as the admin is signed
    /// with the admin's key (the admin always has one); others go as given.
    pub fn request(&self, req: &ControlRequest) -> ControlReply {
        if let (Some(actor), false) = (req.actor(), matches!(req, ControlRequest::Signed(_))) {
            let key = if actor == self.admin_uid {
                Some(self.admin_key.clone())
            } else {
                self.key_of(actor)
            };
            if let Some(key) = key {
                return control::request(self.addr, &self.sign(req.clone(), actor, &key));
            }
        }
        control::request(self.addr, req)
    }

    /// The key of a user this harness signed up keyed.
    pub fn key_of(&self, uid: u64) -> Option<SigningKey> {
        self.keys.lock().ok()?.get(&uid).cloned()
    }

    /// A control client acting (signing) as the admin.
    pub fn admin_client(&self) -> kv_client::control::ControlClient {
        kv_client::control::ControlClient::new(&self.addr.to_string())
            .expect("control client")
            .with_signer(kv_proto::keyfile::Identity {
                uid: self.admin_uid,
                key: self.admin_key.clone(),
            })
    }

    /// `req` signed by `uid` with `key` for this server, now, with a fresh nonce.
    pub fn sign(&self, req: ControlRequest, uid: u64, key: &SigningKey) -> ControlRequest {
        let s = SignedRequest::sign(
            req,
            uid,
            key,
            self.public_key().to_bytes(),
            crate::unix_ms(),
            rand::random(),
        )
        .expect("signable request");
        ControlRequest::Signed(Box::new(s))
    }

    /// Sends raw bytes as a request and returns the raw reply.
    pub fn raw(&self, bytes: &[u8]) -> Vec<u8> {
        control::exchange(self.addr, bytes)
    }

    /// Sends a request that must succeed with a plain value (id, port, 1).
    pub fn ok(&self, req: &ControlRequest) -> u64 {
        match self.request(req) {
            ControlReply::Value(v) => v,
            other => panic!("{req:?} -> {other:?}"),
        }
    }

    /// Sends a request that must fail; returns the error code.
    pub fn err(&self, req: &ControlRequest) -> ErrorCode {
        match self.request(req) {
            ControlReply::Error(e) => e,
            other => panic!("{req:?} should fail, got {other:?}"),
        }
    }

    /// Registers a user with the default permissions (plain sign-up).
    pub fn signup(&self) -> u64 {
        if !self.keyed {
            return self.ok(&ControlRequest::Register { auid: 0, perm: 0 });
        }
        let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        let req = ControlRequest::RegisterKey {
            auid: 0,
            perm: 0,
            public_key: key.verifying_key().to_bytes(),
        };
        let uid = match control::request(self.addr, &self.sign(req, 0, &key)) {
            ControlReply::Value(v) => v,
            other => panic!("keyed sign-up -> {other:?}"),
        };
        self.remember(uid, key);
        uid
    }

    fn remember(&self, uid: u64, key: SigningKey) {
        if let Ok(mut keys) = self.keys.lock() {
            keys.insert(uid, key);
        }
    }

    /// Registers a user with `perm`, granted by the admin.
    pub fn register_with(&self, perm: u64) -> u64 {
        if !self.keyed {
            return self.ok(&ControlRequest::Register {
                auid: self.admin_uid,
                perm,
            });
        }
        let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        let uid = self.ok(&ControlRequest::RegisterKey {
            auid: self.admin_uid,
            perm,
            public_key: key.verifying_key().to_bytes(),
        });
        self.remember(uid, key);
        uid
    }

    /// The key that signs system packets, from SERVER_INFO.
    pub fn public_key(&self) -> VerifyingKey {
        match control::request(self.addr, &ControlRequest::ServerInfo) {
            ControlReply::ServerInfo(i) => {
                VerifyingKey::from_bytes(&i.public_key).expect("valid Ed25519 public key")
            }
            other => panic!("SERVER_INFO -> {other:?}"),
        }
    }

    /// `n` freshly signed-up users JOINed to `chid`, each with its own UDP peer (not yet
    /// bound: call [`crate::udp::UdpPeer::bind`]).
    pub fn joined_peers(&self, chid: u64, n: usize) -> Vec<crate::udp::UdpPeer> {
        (0..n)
            .map(|_| {
                let uid = self.signup();
                let port = self.ok(&ControlRequest::Join {
                    uid,
                    juid: uid,
                    chid,
                });
                crate::udp::UdpPeer::new(self.udp_addr(port), uid)
            })
            .collect()
    }

    /// The address of a channel socket on this server.
    pub fn udp_addr(&self, port: u64) -> SocketAddr {
        SocketAddr::new(self.addr.ip(), u16::try_from(port).expect("port fits u16"))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- kv-server stderr ----\n{}", self.stderr_log());
        }
    }
}

/// The admin's key from `admin.key` in `dir`, which must be `uid`'s.
fn admin_key(dir: &Path, uid: u64) -> SigningKey {
    let path = dir.join("admin.key");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let id = kv_proto::keyfile::Identity::parse(&text).expect("admin.key parses");
    assert_eq!(id.uid, uid, "admin.key is the printed admin's");
    id.key
}

/// Spawns the binary and waits for its two start-up lines (and the `metrics on` line
/// before them, when there is one).
fn spawn(
    data_dir: &Path,
    args: &[String],
    log: &Arc<Mutex<String>>,
    nofile: Option<u64>,
) -> (Child, SocketAddr, u64, Option<SocketAddr>) {
    let mut cmd = Command::new(server_bin());
    if let Some(n) = nofile {
        use std::os::unix::process::CommandExt;
        let lim = libc::rlimit {
            rlim_cur: n as libc::rlim_t,
            rlim_max: n as libc::rlim_t,
        };
        // SAFETY: only setrlimit(2), async-signal-safe, runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    let mut child = cmd
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "debug".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", server_bin().display()));

    let mut err = child.stderr.take().expect("piped stderr");
    let log2 = log.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = err.read(&mut buf) {
            if n == 0 {
                break;
            }
            if let Ok(mut s) = log2.lock() {
                if s.len() < STDERR_LIMIT {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        }
    });

    let out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (mut addr, mut admin, mut metrics) = (None, None, None);
    let deadline = Instant::now() + START_TIMEOUT;
    while addr.is_none() || admin.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(a) = line.strip_prefix("metrics on ") {
                    metrics = Some(a.trim().parse::<SocketAddr>().expect("metrics address"));
                } else if let Some(a) = line.strip_prefix("listening on ") {
                    addr = Some(a.trim().parse::<SocketAddr>().expect("listen address"));
                } else if let Some(u) = line.strip_prefix("admin uid: ") {
                    admin = Some(u.trim().parse::<u64>().expect("admin uid"));
                }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(50));
                panic!(
                    "server did not print its start-up lines\n{}",
                    log.lock().map(|s| s.clone()).unwrap_or_default()
                );
            }
        }
    }
    (
        child,
        addr.unwrap_or_else(|| unreachable!()),
        admin.unwrap_or_else(|| unreachable!()),
        metrics,
    )
}
