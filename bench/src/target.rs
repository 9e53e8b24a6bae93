//! The relays under test, each a child process the bench starts, sets up and ends, so that
//! the CPU it reads from /proc is the relay's alone.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::kv;

/// Which relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The real kv-server.
    Kv,
    /// Baseline: one syscall per packet per listener.
    Naive,
    /// Baseline: recvmmsg + sendmmsg reflector.
    Floor,
}

impl Kind {
    /// Short name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Kv => "kv",
            Kind::Naive => "naive",
            Kind::Floor => "floor",
        }
    }
}

/// Where the relays come from and how they run.
#[derive(Debug, Clone)]
pub struct TargetOpts {
    /// kv-server binary.
    pub server: PathBuf,
    /// Threads each baseline uses (KV decides for itself).
    pub baseline_threads: usize,
}

impl TargetOpts {
    /// Defaults: `kv-server` next to this executable, one baseline thread per core.
    pub fn detect() -> Result<TargetOpts> {
        let exe = std::env::current_exe()?;
        let dir = exe.parent().context("exe has no directory")?;
        Ok(TargetOpts {
            server: dir.join("kv-server"),
            baseline_threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        })
    }
}

/// A running relay with its channels set up.
#[derive(Debug)]
pub struct Target {
    /// Its process id, for /proc.
    pub pid: u32,
    /// UDP port of each channel.
    pub ports: Vec<u16>,
    /// Uids of each channel's members (KV's real ones; synthetic for baselines).
    pub uids: Vec<Vec<u64>>,
    child: Child,
    _stdin: Option<ChildStdin>,
    _stdout: Option<ChildStdout>,
    _dir: Option<TempDir>,
}

impl Target {
    /// Starts `kind` and prepares `channels` channels of `members` users each.
    pub fn start(kind: Kind, opts: &TargetOpts, channels: usize, members: usize) -> Result<Self> {
        match kind {
            Kind::Kv => {
                let dir = TempDir::new()?;
                let (child, stdout, control) = kv::spawn(&opts.server, &dir.0)?;
                let pid = child.id();
                let mut t = Target {
                    pid,
                    ports: Vec::new(),
                    uids: Vec::new(),
                    child,
                    _stdin: None,
                    _stdout: Some(stdout),
                    _dir: Some(dir),
                };
                let (ports, uids) = kv::setup(control, channels, members)?;
                t.ports = ports;
                t.uids = uids;
                Ok(t)
            }
            Kind::Naive | Kind::Floor => {
                let sub = if kind == Kind::Naive {
                    "baseline-naive"
                } else {
                    "baseline-floor"
                };
                let mut child = Command::new(std::env::current_exe()?)
                    .args([sub, "--listen", "127.0.0.1:0", "--channels"])
                    .arg(channels.to_string())
                    .arg("--threads")
                    .arg(opts.baseline_threads.to_string())
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .context("spawn baseline")?;
                let stdin = child.stdin.take();
                let stdout = child.stdout.take().context("baseline stdout")?;
                let mut line = String::new();
                BufReader::new(stdout).read_line(&mut line)?;
                let ports: Vec<u16> = line
                    .trim()
                    .strip_prefix("ports=")
                    .with_context(|| format!("baseline said {line:?}"))?
                    .split(',')
                    .map(|p| p.parse())
                    .collect::<Result<_, _>>()?;
                if ports.len() != channels {
                    bail!("baseline opened {} channels, not {channels}", ports.len());
                }
                let uids = (0..channels)
                    .map(|c| (0..members).map(|m| (c * members + m + 1) as u64).collect())
                    .collect();
                Ok(Target {
                    pid: child.id(),
                    ports,
                    uids,
                    child,
                    _stdin: stdin,
                    _stdout: None,
                    _dir: None,
                })
            }
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch directory removed on drop (the server's database lives there).
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("kv-bench-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
