//! `kv-bench relay`: runs every scenario against KV and both baselines, one fresh relay
//! process per run, and prints one summary line per scenario plus the flood search.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::cpu;
use crate::histogram::Histogram;
use crate::load::{self, Fleet, Receivers};
use crate::target::{Kind, Target, TargetOpts};

/// One load shape.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Short name, `CHANNELSxMEMBERS` (and a suffix when needed).
    pub name: &'static str,
    /// Channels.
    pub channels: usize,
    /// Members per channel.
    pub members: usize,
    /// Talking members per channel.
    pub speakers: usize,
    /// Packets per second per speaker (voice: one 20 ms frame each).
    pub pps: f64,
}

/// The scenarios `kv-bench relay` runs by default.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "1x50",
        channels: 1,
        members: 50,
        speakers: 1,
        pps: 50.0,
    },
    Scenario {
        name: "10x5",
        channels: 10,
        members: 5,
        speakers: 5,
        pps: 50.0,
    },
    Scenario {
        name: "100x5",
        channels: 100,
        members: 5,
        speakers: 5,
        pps: 50.0,
    },
    Scenario {
        name: "1x200",
        channels: 1,
        members: 200,
        speakers: 3,
        pps: 50.0,
    },
];

/// Knobs of a run.
#[derive(Debug, Clone)]
pub struct RunOpts {
    /// Relays to compare, in run order.
    pub kinds: Vec<Kind>,
    /// Scenario names to run (empty: all).
    pub scenarios: Vec<String>,
    /// Traffic before the measured window.
    pub warmup: Duration,
    /// One measured window.
    pub measure: Duration,
    /// Measured windows per relay, alternating between relays.
    pub rounds: usize,
    /// Flood search on this scenario (None: skip).
    pub flood: Option<String>,
    /// Length of one flood step.
    pub flood_step: Duration,
    /// Loss fraction still counted as loss-free in the flood search.
    pub flood_loss: f64,
    /// Generator receiver threads.
    pub recv_threads: usize,
    /// Where relays come from.
    pub target: TargetOpts,
}

/// Highest p99 delay (ms) a flood step may show and still count as sustained.
const FLOOD_MAX_P99_MS: f64 = 50.0;

/// Time left for stragglers after the last send before counting.
const DRAIN: Duration = Duration::from_millis(200);

/// Measured outcome of one relay on one scenario, over all its windows.
#[derive(Debug)]
struct Outcome {
    kind: Kind,
    /// Packets the speakers sent (all windows).
    sent: u64,
    /// Copies that should have arrived.
    expected: u64,
    /// Copies that arrived.
    received: u64,
    /// Relay CPU per forwarded packet of each window, µs (filled by `finish`).
    per_window_us: Vec<f64>,
    /// Tag and relay CPU (ns) of each window, until its arrivals are counted.
    pending: Vec<(u32, u64)>,
    /// Relay CPU over all windows, ns.
    cpu_ns: u64,
    /// Generator CPU over all windows, ns.
    gen_cpu_ns: u64,
    /// Total window time.
    window: Duration,
    /// Delays of the copies received.
    hist: Histogram,
}

impl Outcome {
    fn new(kind: Kind) -> Self {
        Outcome {
            kind,
            sent: 0,
            expected: 0,
            received: 0,
            per_window_us: Vec::new(),
            pending: Vec::new(),
            cpu_ns: 0,
            gen_cpu_ns: 0,
            window: Duration::ZERO,
            hist: Histogram::new(),
        }
    }

    fn loss(&self) -> f64 {
        if self.expected == 0 {
            return 0.0;
        }
        1.0 - self.received.min(self.expected) as f64 / self.expected as f64
    }

    /// Median over windows of the relay's CPU per forwarded packet: robust to a window
    /// disturbed by something else on the machine.
    fn cpu_us_per_pkt(&self) -> f64 {
        let mut v: Vec<f64> = self
            .per_window_us
            .iter()
            .copied()
            .filter(|x| x.is_finite())
            .collect();
        if v.is_empty() {
            return f64::NAN;
        }
        v.sort_by(f64::total_cmp);
        let m = v.len() / 2;
        if v.len() % 2 == 1 {
            v[m]
        } else {
            (v[m - 1] + v[m]) / 2.0
        }
    }

    fn detail(&self) -> String {
        let secs = self.window.as_secs_f64();
        let windows: Vec<String> = self
            .per_window_us
            .iter()
            .map(|v| format!("{v:.2}"))
            .collect();
        format!(
            "  {:<5} sent={} expected={} received={} loss={:.5} fwd_pps={:.0} cpu_us_per_pkt={:.3} (windows {}) mean={:.3} relay_cpu={:.1}% gen_cpu={:.1}% p50_ms={:.3} p99_ms={:.3} max_ms={:.2} samples={}",
            self.kind.name(),
            self.sent,
            self.expected,
            self.received,
            self.loss(),
            self.received as f64 / secs,
            self.cpu_us_per_pkt(),
            windows.join(","),
            self.cpu_ns as f64 / self.received.max(1) as f64 / 1000.0,
            self.cpu_ns as f64 / 1e9 / secs * 100.0,
            self.gen_cpu_ns as f64 / 1e9 / secs * 100.0,
            self.hist.quantile_ms(0.5),
            self.hist.quantile_ms(0.99),
            self.hist.max_ms(),
            self.hist.count(),
        )
    }
}

/// A relay started and set up, with the generator attached.
struct Rig {
    target: Target,
    fleet: Fleet,
    rx: Receivers,
    speakers: Vec<usize>,
}

impl Rig {
    fn start(kind: Kind, sc: &Scenario, opts: &RunOpts, epoch: Instant) -> Result<Rig> {
        let target = Target::start(kind, &opts.target, sc.channels, sc.members)?;
        let fleet = Fleet::bind(
            std::net::Ipv4Addr::LOCALHOST,
            &target.ports,
            &target.uids,
            sc.speakers,
        )?;
        fleet.announce(kind == Kind::Kv)?;
        let rx = Receivers::start(&fleet, opts.recv_threads, epoch)?;
        let speakers = fleet.speakers();
        Ok(Rig {
            target,
            fleet,
            rx,
            speakers,
        })
    }

    fn finish(self) -> Result<()> {
        self.rx.stop()?;
        drop(self.target);
        Ok(())
    }
}

/// Sends one window of `sc`'s traffic through `rig` and adds what it cost to `out`
/// (arrivals are counted by tag in [`finish`], so late ones still count).
fn window(
    rig: &Rig,
    sc: &Scenario,
    dur: Duration,
    tag: u32,
    epoch: Instant,
    out: Option<&mut Outcome>,
) -> Result<()> {
    rig.rx.wait_quiet(Duration::from_secs(2));
    let rate = sc.pps * rig.speakers.len() as f64;
    let stop = AtomicBool::new(false);
    let me = std::process::id();
    let t0 = Instant::now();
    let c0 = cpu::sample(rig.target.pid)?;
    let g0 = cpu::sample(me)?;
    let sent = load::send_paced(&rig.fleet, &rig.speakers, rate, dur, tag, epoch, &stop);
    std::thread::sleep(DRAIN);
    let c1 = cpu::sample(rig.target.pid)?;
    let g1 = cpu::sample(me)?;
    if let Some(out) = out {
        let cpu_ns = c1.since(&c0);
        out.sent += sent.packets;
        out.expected += sent.expected;
        out.cpu_ns += cpu_ns;
        out.gen_cpu_ns += g1.since(&g0);
        out.window += t0.elapsed();
        out.pending.push((tag, cpu_ns));
    }
    Ok(())
}

/// Counts what arrived for each of `out`'s windows, once `rig` is quiet.
fn finish(rig: &Rig, out: &mut Outcome) {
    rig.rx.wait_quiet(Duration::from_secs(3));
    for (tag, cpu_ns) in std::mem::take(&mut out.pending) {
        let got = rig.rx.received(tag);
        out.received += got;
        out.per_window_us
            .push(cpu_ns as f64 / got.max(1) as f64 / 1000.0);
    }
    out.hist = rig.rx.take_histogram();
}

/// First tag of measured windows; warm-up windows use smaller ones.
const MEASURED_TAGS: u32 = 100;

/// Runs `sc` on every relay: all are started and set up first, then measured in
/// alternating windows (kv, naive, floor, kv, ...) so that a change in the machine's load
/// hits them alike.
fn run_scenario(sc: &Scenario, opts: &RunOpts, epoch: Instant) -> Result<Vec<Outcome>> {
    let mut rigs = Vec::new();
    for &k in &opts.kinds {
        let rig = Rig::start(k, sc, opts, epoch)?;
        rig.rx.set_min_tag(MEASURED_TAGS);
        rigs.push(rig);
    }
    let mut outs: Vec<Outcome> = opts.kinds.iter().map(|&k| Outcome::new(k)).collect();
    for (i, rig) in rigs.iter().enumerate() {
        window(rig, sc, opts.warmup, i as u32 + 1, epoch, None)?;
    }
    let mut tag = MEASURED_TAGS;
    for _ in 0..opts.rounds {
        for (rig, out) in rigs.iter().zip(outs.iter_mut()) {
            window(rig, sc, opts.measure, tag, epoch, Some(out))?;
            tag += 1;
        }
    }
    for (rig, out) in rigs.iter().zip(outs.iter_mut()) {
        finish(rig, out);
    }
    for rig in rigs {
        rig.finish()?;
    }
    Ok(outs)
}

/// One flood step's result.
#[derive(Debug, Clone, Copy)]
struct Step {
    rate_in: f64,
    fwd_pps: f64,
    loss: f64,
    cpu_us_per_pkt: f64,
    p99_ms: f64,
}

fn flood_step(rig: &Rig, rate: f64, tag: u32, opts: &RunOpts, epoch: Instant) -> Result<Step> {
    rig.rx.set_min_tag(tag);
    let _ = rig.rx.take_histogram();
    let stop = AtomicBool::new(false);
    let t0 = Instant::now();
    let c0 = cpu::sample(rig.target.pid)?;
    let sent = load::send_paced(
        &rig.fleet,
        &rig.speakers,
        rate,
        opts.flood_step,
        tag,
        epoch,
        &stop,
    );
    let sent_secs = t0.elapsed().as_secs_f64();
    std::thread::sleep(DRAIN);
    let c1 = cpu::sample(rig.target.pid)?;
    // Whatever is still queued arrives now, and counts: loss is what never arrives.
    rig.rx.wait_quiet(Duration::from_secs(3));
    let got = rig.rx.received(tag);
    let loss = if sent.expected == 0 {
        1.0
    } else {
        1.0 - got.min(sent.expected) as f64 / sent.expected as f64
    };
    Ok(Step {
        rate_in: sent.packets as f64 / sent_secs,
        fwd_pps: got as f64 / sent_secs,
        loss,
        cpu_us_per_pkt: c1.since(&c0) as f64 / got.max(1) as f64 / 1000.0,
        p99_ms: rig.rx.take_histogram().quantile_ms(0.99),
    })
}

/// Finds the highest packets-in rate with loss at most `opts.flood_loss` and p99 at most
/// [`FLOOD_MAX_P99_MS`]: doubling from a low rate, then bisecting. Returns the best step
/// that passed both (if any).
fn flood(kind: Kind, sc: &Scenario, opts: &RunOpts, epoch: Instant) -> Result<Option<Step>> {
    let rig = Rig::start(kind, sc, opts, epoch)?;
    let mut tag = 1000;
    let mut best: Option<Step> = None;
    let mut lo = 0.0;
    let mut hi = f64::INFINITY;
    let mut rate = 500.0;
    let max_rate = 400_000.0 / (sc.members.saturating_sub(1).max(1) as f64) * 4.0;
    for _ in 0..12 {
        tag += 1;
        let st = flood_step(&rig, rate, tag, opts, epoch)?;
        // Sustained means no loss and no standing queue: a relay that only buffers the
        // excess in its socket would otherwise pass a short step.
        let ok = st.loss <= opts.flood_loss && st.p99_ms <= FLOOD_MAX_P99_MS;
        println!(
            "    {} rate_in={:.0} got_in={:.0} fwd_pps={:.0} loss={:.5} cpu_us_per_pkt={:.3} p99_ms={:.3} {}",
            kind.name(),
            rate,
            st.rate_in,
            st.fwd_pps,
            st.loss,
            st.cpu_us_per_pkt,
            st.p99_ms,
            match (ok, st.loss <= opts.flood_loss) {
                (true, _) => "ok",
                (false, true) => "TOO_SLOW",
                (false, false) => "LOSS",
            }
        );
        if ok {
            lo = rate;
            if best.is_none_or(|b| st.fwd_pps > b.fwd_pps) {
                best = Some(st);
            }
        } else {
            hi = rate;
        }
        rate = if hi.is_infinite() {
            rate * 2.0
        } else {
            (lo + hi) / 2.0
        };
        if rate > max_rate || (hi.is_finite() && (hi - lo) / hi < 0.08) {
            break;
        }
    }
    rig.finish()?;
    Ok(best)
}

fn fmt(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.3}"),
        _ => "n/a".into(),
    }
}

/// Runs the selected scenarios and the flood search, printing as it goes.
pub fn run(opts: &RunOpts) -> Result<()> {
    let epoch = Instant::now();
    let chosen: Vec<&Scenario> = SCENARIOS
        .iter()
        .filter(|s| opts.scenarios.is_empty() || opts.scenarios.iter().any(|n| n == s.name))
        .collect();
    if chosen.is_empty() && opts.flood.is_none() {
        bail!("no scenario selected");
    }
    let mut summary = Vec::new();
    for sc in &chosen {
        println!(
            "# {}: {} channel(s) x {} members, {} speaker(s) per channel at {} pps, {} x {} s windows per relay",
            sc.name,
            sc.channels,
            sc.members,
            sc.speakers,
            sc.pps,
            opts.rounds,
            opts.measure.as_secs_f64()
        );
        let outs = run_scenario(sc, opts, epoch)?;
        for o in &outs {
            println!("{}", o.detail());
        }
        let get = |k: Kind| outs.iter().find(|o| o.kind == k);
        let cpu = |k: Kind| get(k).map(|o| o.cpu_us_per_pkt());
        let ratio = match (cpu(Kind::Kv), cpu(Kind::Floor)) {
            (Some(a), Some(b)) => Some(a / b),
            _ => None,
        };
        let main = get(Kind::Kv).or(outs.first());
        let line = format!(
            "scenario={} kv_cpu_us_per_pkt={} naive={} floor={} ratio_vs_floor={} p50_ms={} p99_ms={} loss={}",
            sc.name,
            fmt(cpu(Kind::Kv)),
            fmt(cpu(Kind::Naive)),
            fmt(cpu(Kind::Floor)),
            fmt(ratio),
            fmt(main.map(|o| o.hist.quantile_ms(0.5))),
            fmt(main.map(|o| o.hist.quantile_ms(0.99))),
            main.map(|o| format!("{:.5}", o.loss())).unwrap_or_else(|| "n/a".into()),
        );
        println!("{line}");
        summary.push(line);
    }
    if let Some(name) = &opts.flood {
        let Some(sc) = SCENARIOS.iter().find(|s| s.name == name) else {
            bail!("unknown flood scenario {name}");
        };
        println!(
            "# flood {}: highest rate in (pps) with loss <= {} and p99 <= {} ms, {} s steps",
            sc.name,
            opts.flood_loss,
            FLOOD_MAX_P99_MS,
            opts.flood_step.as_secs_f64()
        );
        let mut best = Vec::new();
        for &k in &opts.kinds {
            best.push((k, flood(k, sc, opts, epoch)?));
        }
        let get = |k: Kind| best.iter().find(|b| b.0 == k).and_then(|b| b.1);
        let ratio = match (get(Kind::Kv), get(Kind::Floor)) {
            (Some(a), Some(b)) => Some(a.fwd_pps / b.fwd_pps),
            _ => None,
        };
        let f = |k: Kind| {
            get(k)
                .map(|s| format!("{:.0}", s.fwd_pps))
                .unwrap_or_else(|| "n/a".into())
        };
        let line = format!(
            "flood={} kv_lossfree_fwd_pps={} naive={} floor={} ratio_vs_floor={} kv_in_pps={} kv_cpu_us_per_pkt={}",
            sc.name,
            f(Kind::Kv),
            f(Kind::Naive),
            f(Kind::Floor),
            fmt(ratio),
            get(Kind::Kv).map(|s| format!("{:.0}", s.rate_in)).unwrap_or_else(|| "n/a".into()),
            fmt(get(Kind::Kv).map(|s| s.cpu_us_per_pkt)),
        );
        println!("{line}");
        summary.push(line);
    }
    println!("# summary");
    for l in summary {
        println!("{l}");
    }
    Ok(())
}
