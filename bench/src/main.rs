//! `kv-bench`: measures KV's relay against two baseline relays on 127.0.0.1.
//!
//! - `kv-bench relay` starts a kv-server and both baselines (each a child process, so the
//!   CPU read from /proc is theirs alone), drives them with the same load generator, and
//!   prints one summary line per scenario plus a flood search. See BENCHMARKS.md.
//! - `kv-bench baseline-naive` / `baseline-floor` run one baseline relay; `relay` starts
//!   them itself.
//!
//! Modules: [`load`] (the generator), [`baseline`] (the two reference relays), [`target`]
//! and [`kv`] (starting relays), [`relay`] (scenarios and report), [`sys`]
//! (recvmmsg/sendmmsg; epoll is `kv_server::epoll`), [`cpu`], [`histogram`], [`payload`],
//! [`control`].

mod baseline;
mod control;
mod cpu;
mod histogram;
mod kv;
mod load;
mod payload;
mod relay;
mod sys;
mod target;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

use target::{Kind, TargetOpts};

#[derive(Parser, Debug)]
#[command(name = "kv-bench", about = "KV relay benchmark and baseline relays")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run every scenario against kv-server and both baselines and print a summary.
    Relay {
        /// kv-server binary (default: the one next to kv-bench).
        #[arg(long)]
        server: Option<PathBuf>,
        /// Relays to measure, comma-separated: kv, naive, floor.
        #[arg(long, default_value = "kv,naive,floor", value_delimiter = ',')]
        relays: Vec<String>,
        /// Scenarios to run, comma-separated (default: all). Known: 1x50, 10x5, 100x5, 1x200.
        #[arg(long, value_delimiter = ',')]
        scenarios: Vec<String>,
        /// Seconds of traffic through each relay before its measured windows.
        #[arg(long, default_value_t = 0.5)]
        warmup: f64,
        /// Seconds of one measured window.
        #[arg(long, default_value_t = 1.0)]
        secs: f64,
        /// Measured windows per relay and scenario (relays alternate window by window).
        #[arg(long, default_value_t = 4)]
        rounds: usize,
        /// Scenario for the flood search ("none" to skip).
        #[arg(long, default_value = "1x50")]
        flood: String,
        /// Seconds per flood step.
        #[arg(long, default_value_t = 1.0)]
        flood_step: f64,
        /// Loss fraction a flood step may show and still count as loss-free.
        #[arg(long, default_value_t = 0.0)]
        flood_loss: f64,
        /// Generator receiver threads.
        #[arg(long, default_value_t = 2)]
        recv_threads: usize,
        /// Threads per baseline relay (default: one per core).
        #[arg(long)]
        baseline_threads: Option<usize>,
    },
    /// Baseline: one recvfrom per datagram, one sendto per listener.
    BaselineNaive(BaselineArgs),
    /// Baseline: recvmmsg + sendmmsg reflector.
    BaselineFloor(BaselineArgs),
}

#[derive(clap::Args, Debug)]
struct BaselineArgs {
    /// Address of the first channel socket; port 0 picks free ports.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Channel sockets to open; printed as `ports=...` on stdout.
    #[arg(long, default_value_t = 1)]
    channels: usize,
    /// Threads, each serving a share of the channels.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

fn secs(v: f64) -> Result<Duration> {
    if !(0.0..=600.0).contains(&v) {
        bail!("durations must be within 0..600 s");
    }
    Ok(Duration::from_secs_f64(v))
}

fn check_loopback(a: SocketAddr) -> Result<()> {
    if !a.ip().is_loopback() {
        bail!(
            "the bench only listens on loopback addresses, not {}",
            a.ip()
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::BaselineNaive(a) => {
            check_loopback(a.listen)?;
            baseline::serve(a.listen, a.channels, a.threads, baseline::naive::Naive::new)
        }
        Cmd::BaselineFloor(a) => {
            check_loopback(a.listen)?;
            baseline::serve(a.listen, a.channels, a.threads, baseline::floor::Floor::new)
        }
        Cmd::Relay {
            server,
            relays,
            scenarios,
            warmup,
            secs: measure,
            rounds,
            flood,
            flood_step,
            flood_loss,
            recv_threads,
            baseline_threads,
        } => {
            let mut target = TargetOpts::detect()?;
            if let Some(s) = server {
                target.server = s;
            }
            if let Some(t) = baseline_threads {
                target.baseline_threads = t.clamp(1, 64);
            }
            let kinds = relays
                .iter()
                .map(|r| match r.as_str() {
                    "kv" => Ok(Kind::Kv),
                    "naive" => Ok(Kind::Naive),
                    "floor" => Ok(Kind::Floor),
                    other => bail!("unknown relay {other:?} (kv, naive, floor)"),
                })
                .collect::<Result<Vec<_>>>()?;
            let opts = relay::RunOpts {
                kinds,
                scenarios,
                warmup: secs(warmup)?,
                measure: secs(measure)?,
                rounds: rounds.clamp(1, 100),
                flood: (flood != "none").then_some(flood),
                flood_step: secs(flood_step)?,
                flood_loss: flood_loss.clamp(0.0, 1.0),
                recv_threads: recv_threads.clamp(1, 16),
                target,
            };
            relay::run(&opts)
        }
    }
}
