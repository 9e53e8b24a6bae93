//! `playout-bench`: the Targets table of issue 8 (BENCHMARKS.md "Playout quality").
//!
//! For each condition and speech sample, `--runs` runs of talker → real `kv-server` →
//! impairment proxy (listener's downstream) → listener, each recording scored with PESQ-WB
//! by `bench/playout/score.py` ([`kv_tests::playout`]). Prints a line per run as it ends,
//! then the table in Markdown and one machine-readable line per row.
//!
//! ```text
//! playout-bench [--rows clean,loss10,...] [--samples speech-en-us-m,...] [--runs 3]
//!               [--jobs 3] [--no-held-out] [--no-opus] [--trace FILE]...
//! ```
//!
//! `--trace FILE` adds a row replaying a recorded loss/delay trace (one line per datagram,
//! `lost` or a delay in ms; `kv_tests::lossy::trace`) on the listener's downstream.
//!
//! Binaries: the release `kv-server` and `kv` next to this one (`KV_SERVER_BIN`, `KV_BIN`
//! override); Python: `KV_PYTHON` or `target/pyenv` (`make venv`).

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use kv_tests::playout::{self, median, Condition, RunResult, Sample, Score};
use kv_tests::ServerProcess;
use serde_json::{json, Value};

#[derive(Debug)]
struct Args {
    rows: Option<Vec<String>>,
    samples: Option<Vec<String>>,
    runs: usize,
    jobs: usize,
    held_out: bool,
    opus: bool,
    traces: Vec<PathBuf>,
}

const USAGE: &str = "usage: playout-bench [--rows K,K] [--samples NAME,NAME] [--runs N] \
                     [--jobs N] [--no-held-out] [--no-opus] [--trace FILE]...";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        rows: None,
        samples: None,
        runs: 3,
        jobs: 3,
        held_out: true,
        opus: true,
        traces: vec![],
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))
        };
        let list = |v: String| v.split(',').map(str::to_string).collect::<Vec<_>>();
        match arg.as_str() {
            "--rows" => a.rows = Some(list(value()?)),
            "--samples" => a.samples = Some(list(value()?)),
            "--runs" => a.runs = value()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--jobs" => a.jobs = value()?.parse().map_err(|e| format!("--jobs: {e}"))?,
            "--no-held-out" => a.held_out = false,
            "--no-opus" => a.opus = false,
            "--trace" => a.traces.push(PathBuf::from(value()?)),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if a.runs == 0 || a.jobs == 0 {
        return Err("--runs and --jobs must be at least 1".into());
    }
    Ok(a)
}

/// On SIGINT or SIGTERM: stop the server (its pid in [`SERVER_PID`]) and exit. Without
/// this a signal would end the bench without dropping its `ServerProcess` and leave the
/// server running (listeners stop on their own: their `--duration` is a backstop).
extern "C" fn on_interrupt(sig: libc::c_int) {
    let pid = SERVER_PID.load(Ordering::Relaxed);
    // SAFETY: kill(2) and _exit(2) are async-signal-safe; the atomic load is lock-free.
    unsafe {
        if pid != 0 {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
        libc::_exit(128 + sig);
    }
}

/// Installs [`on_interrupt`] (a handler, not a blocked mask: children inherit a mask,
/// and `kv` and `kv-server` must still get the SIGTERM that stops them).
fn handle_interrupts() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only calls async-signal-safe functions.
        unsafe { libc::signal(sig, on_interrupt as *const () as libc::sighandler_t) };
    }
}

/// One finished run.
struct Done {
    cond: usize,
    sample: usize,
    result: Result<RunResult, String>,
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

/// The machine's load average (1, 5, 15 min), to read the figures with.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |x| format!("{x:.digits$}"))
}

/// "median (lo–hi)" over the per-sample medians.
fn cell(per_sample: &[f64], all: Vec<f64>, digits: usize) -> String {
    let m = median(all);
    let lo = per_sample.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = per_sample.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if per_sample.len() > 1 {
        format!("{} ({lo:.digits$}–{hi:.digits$})", fmt(m, digits))
    } else {
        fmt(m, digits)
    }
}

/// The figures of one row over a set of samples.
struct Summary {
    pesq: String,
    m2e: String,
    adjustments: String,
    spread: String,
    corr: String,
    json: Value,
}

fn summarize(
    cond: &Condition,
    samples: &[&Sample],
    runs: &BTreeMap<String, Vec<&RunResult>>,
    clean_m2e: &BTreeMap<String, f64>,
) -> Summary {
    let get =
        |f: &dyn Fn(&RunResult) -> Option<f64>| -> (Vec<f64>, Vec<f64>, BTreeMap<String, f64>) {
            let mut all = vec![];
            let mut per = vec![];
            let mut by = BTreeMap::new();
            for s in samples {
                let v: Vec<f64> = runs
                    .get(&s.name)
                    .map(|r| r.iter().filter_map(|x| f(x)).collect())
                    .unwrap_or_default();
                if let Some(m) = median(v.clone()) {
                    per.push(m);
                    by.insert(s.name.clone(), m);
                }
                all.extend(v);
            }
            (all, per, by)
        };
    let (pesq_all, pesq_per, pesq_by) = get(&|r| r.score.pesq_wb);
    let (m2e_all, m2e_per, m2e_by) = get(&|r| r.score.mouth_to_ear_ms);
    let (adj_all, _, _) = get(&|r| Some(r.adjustments as f64));
    let (spread_all, _, _) = get(&|r| r.score.lag_spread_ms);
    let (p90_all, _, _) = get(&|r| r.score.lag_spread_p90_ms);
    let (corr_all, _, _) = get(&|r| r.score.window_corr_mean);
    let (tail_all, tail_per, tail_by) = get(&|r| r.score.tail_mouth_to_ear_ms);
    let adj_lo = adj_all.iter().copied().fold(f64::INFINITY, f64::min);
    let adj_hi = adj_all.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let adjustments = if adj_all.is_empty() {
        "–".into()
    } else {
        format!(
            "{} ({adj_lo:.0}–{adj_hi:.0})",
            fmt(median(adj_all.clone()), 0)
        )
    };
    let mut m2e = cell(&m2e_per, m2e_all.clone(), 1);
    let mut json = json!({
        "row": cond.key,
        "runs": pesq_all.len(),
        "pesq_wb_median": median(pesq_all.clone()),
        "pesq_wb_by_sample": pesq_by,
        "mouth_to_ear_ms_median": median(m2e_all),
        "mouth_to_ear_ms_by_sample": m2e_by,
        "adjustments_median": median(adj_all),
        "lag_spread_ms_median": median(spread_all.clone()),
        "lag_spread_p90_ms_median": median(p90_all.clone()),
        "window_corr_median": median(corr_all.clone()),
    });
    if cond.tail_from_s.is_some() {
        // Where the delay settled, against the clean row's delay on the same samples.
        let deltas: Vec<f64> = tail_by
            .iter()
            .filter_map(|(s, t)| clean_m2e.get(s).map(|c| t - c))
            .collect();
        let delta = median(deltas);
        m2e = format!(
            "from {} s: {} (vs clean: {})",
            cond.tail_from_s.unwrap_or(0.0),
            cell(&tail_per, tail_all.clone(), 1),
            delta.map_or("–".into(), |d| format!("{d:+.1} ms"))
        );
        json["tail_mouth_to_ear_ms_median"] = json!(median(tail_all));
        json["tail_vs_clean_ms_median"] = json!(delta);
    }
    Summary {
        pesq: cell(&pesq_per, pesq_all, 2),
        m2e,
        adjustments,
        spread: format!(
            "{} / {}",
            fmt(median(spread_all), 1),
            fmt(median(p90_all), 1)
        ),
        corr: fmt(median(corr_all), 3),
        json,
    }
}

fn run_line(cond: &Condition, sample: &Sample, r: &RunResult) -> Value {
    json!({
        "row": cond.key,
        "sample": sample.name,
        "held_out": sample.held_out,
        "pesq_wb": r.score.pesq_wb,
        "mouth_to_ear_ms": r.score.mouth_to_ear_ms,
        "adjustments": r.adjustments,
        "adjustments_after_first_spurt": r.adjustments_after_first_spurt,
        "lag_spread_ms": r.score.lag_spread_ms,
        "lag_spread_p90_ms": r.score.lag_spread_p90_ms,
        "window_corr_mean": r.score.window_corr_mean,
        "windows_not_found": r.score.windows_not_found,
        "lsd_db": r.score.lsd_db,
        "tail_mouth_to_ear_ms": r.score.tail_mouth_to_ear_ms,
        "relay_down_dropped": r.relay_down.dropped,
        "relay_down_received": r.relay_down.received,
        "relay_down_spikes": r.relay_down.spikes,
        "peer": r.peer,
    })
}

fn opus_row(samples: &[Sample], dir: &std::path::Path) -> Vec<(String, Value)> {
    let mut rows = vec![];
    let mut scores: Vec<(bool, Score)> = vec![];
    for s in samples {
        match playout::opus_alone(s, dir) {
            Ok(score) => {
                println!(
                    "opus-alone sample={} pesq_wb={} lag_spread_ms={} window_corr_mean={}",
                    s.name,
                    fmt(score.pesq_wb, 3),
                    fmt(score.lag_spread_ms, 2),
                    fmt(score.window_corr_mean, 3)
                );
                scores.push((s.held_out, score));
            }
            Err(e) => eprintln!("opus alone on {}: {e}", s.name),
        }
    }
    for held_out in [false, true] {
        let v: Vec<&Score> = scores
            .iter()
            .filter(|(h, _)| *h == held_out)
            .map(|(_, s)| s)
            .collect();
        if v.is_empty() {
            continue;
        }
        let pesq: Vec<f64> = v.iter().filter_map(|s| s.pesq_wb).collect();
        let text = format!(
            "{} | – | 0 | {} / {} | {}",
            cell(&pesq, pesq.clone(), 2),
            fmt(
                median(v.iter().filter_map(|s| s.lag_spread_ms).collect()),
                1
            ),
            fmt(
                median(v.iter().filter_map(|s| s.lag_spread_p90_ms).collect()),
                1
            ),
            fmt(
                median(v.iter().filter_map(|s| s.window_corr_mean).collect()),
                3
            ),
        );
        rows.push((
            if held_out { "held-out" } else { "committed" }.to_string(),
            json!({"row": "opus-alone", "held_out": held_out, "pesq_wb_median": median(pesq),
                   "text": text}),
        ));
    }
    rows
}

/// The server's pid, for [`on_interrupt`].
static SERVER_PID: AtomicU32 = AtomicU32::new(0);

fn main() -> ExitCode {
    handle_interrupts();
    let started = Instant::now();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = kv_tests::use_sibling_binaries() {
        eprintln!("playout-bench: {e}");
        return ExitCode::FAILURE;
    }
    let python = playout::python();
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("playout-bench: temporary dir: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut samples: Vec<Sample> = playout::committed_samples();
    if args.held_out {
        match playout::held_out_sample(dir.path()) {
            Ok(s) => samples.push(s),
            Err(e) => {
                eprintln!("playout-bench: held-out sample: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Some(names) = &args.samples {
        samples.retain(|s| names.contains(&s.name));
    }
    let mut conds = playout::conditions();
    if let Some(keys) = &args.rows {
        conds.retain(|c| keys.contains(&c.key));
    }
    for path in &args.traces {
        match playout::trace_condition(path) {
            Ok(c) => conds.push(c),
            Err(e) => {
                eprintln!("playout-bench: trace {e}");
                return ExitCode::from(2);
            }
        }
    }
    if samples.is_empty() || conds.is_empty() {
        eprintln!(
            "playout-bench: nothing to run; rows: {}; samples: {}",
            playout::conditions()
                .iter()
                .map(|c| c.key.clone())
                .collect::<Vec<_>>()
                .join(","),
            playout::committed_samples()
                .iter()
                .map(|s| s.name.clone())
                .chain(["held-out-en-sc-f".to_string()])
                .collect::<Vec<_>>()
                .join(",")
        );
        return ExitCode::from(2);
    }
    println!(
        "# playout-bench: {} rows x {} samples x {} runs, {} at a time; server {}, client {}, \
         meter {} ({}); load average {}",
        conds.len(),
        samples.len(),
        args.runs,
        args.jobs,
        std::env::var("KV_SERVER_BIN").unwrap_or_default(),
        std::env::var("KV_BIN").unwrap_or_default(),
        playout::score_script().display(),
        python.display(),
        load_average()
    );
    let server = ServerProcess::start();
    SERVER_PID.store(server.child.id(), Ordering::Relaxed);
    let mut work = vec![];
    for ci in 0..conds.len() {
        for si in 0..samples.len() {
            for run in 0..args.runs {
                work.push((ci, si, run));
            }
        }
    }
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<Done>> = Mutex::new(vec![]);
    std::thread::scope(|scope| {
        for _ in 0..args.jobs.min(work.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(ci, si, run)) = work.get(i) else {
                    break;
                };
                let (cond, sample) = (&conds[ci], &samples[si]);
                // Seeds differ per row, sample and run; the same on every bench.
                let seed = 1 + 1000 * ci as u64 + 10 * si as u64 + run as u64;
                let t0 = Instant::now();
                let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    playout::run(&server, cond, sample, seed, dir.path())
                }))
                .map_err(panic_text);
                match &result {
                    Ok(r) => println!(
                        "playout-run {} ({:.0} s)",
                        run_line(cond, sample, r),
                        t0.elapsed().as_secs_f64()
                    ),
                    Err(e) => println!(
                        "playout-run {}",
                        json!({"row": cond.key, "sample": sample.name, "error": e})
                    ),
                }
                done.lock().unwrap_or_else(|p| p.into_inner()).push(Done {
                    cond: ci,
                    sample: si,
                    result,
                });
            });
        }
    });
    let done = done.into_inner().unwrap_or_else(|p| p.into_inner());
    let failures = done.iter().filter(|d| d.result.is_err()).count();

    // Results by row, then by sample.
    let mut by_row: Vec<BTreeMap<String, Vec<&RunResult>>> = vec![BTreeMap::new(); conds.len()];
    for d in &done {
        if let Ok(r) = &d.result {
            by_row[d.cond]
                .entry(samples[d.sample].name.clone())
                .or_default()
                .push(r);
        }
    }
    let clean_m2e: BTreeMap<String, f64> = conds
        .iter()
        .position(|c| c.key == "clean")
        .map(|ci| {
            by_row[ci]
                .iter()
                .filter_map(|(s, r)| {
                    median(r.iter().filter_map(|x| x.score.mouth_to_ear_ms).collect())
                        .map(|m| (s.clone(), m))
                })
                .collect()
        })
        .unwrap_or_default();
    let committed: Vec<&Sample> = samples.iter().filter(|s| !s.held_out).collect();
    let held: Vec<&Sample> = samples.iter().filter(|s| s.held_out).collect();
    let opus = if args.opus {
        opus_row(&samples, dir.path())
    } else {
        vec![]
    };

    println!();
    println!(
        "Samples: {} (committed){}; {} runs each; PESQ-WB and mouth-to-ear: median over all \
         runs (range of the per-sample medians); adjustments: median (range) per run; lag \
         spread: median max−min / p95−p5 of the local lag over 0.1 s windows.",
        committed
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        held.first()
            .map_or(String::new(), |s| format!(", {} (held out)", s.name)),
        args.runs
    );
    println!();
    println!(
        "| condition | target | PESQ-WB | mouth-to-ear ms | adjustments | lag spread ms | \
         window corr | held out: PESQ-WB / ms |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut rows_json = vec![];
    for (ci, cond) in conds.iter().enumerate() {
        let s = summarize(cond, &committed, &by_row[ci], &clean_m2e);
        let h = summarize(cond, &held, &by_row[ci], &clean_m2e);
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} / {} |",
            cond.label,
            cond.target,
            s.pesq,
            s.m2e,
            s.adjustments,
            s.spread,
            s.corr,
            h.pesq,
            if cond.tail_from_s.is_some() {
                h.json["tail_vs_clean_ms_median"]
                    .as_f64()
                    .map_or("–".into(), |d| format!("{d:+.1} vs clean"))
            } else {
                h.m2e
            }
        );
        let mut j = s.json;
        j["held_out"] = h.json;
        rows_json.push(j);
    }
    let committed_opus = opus.iter().find(|(k, _)| k == "committed");
    let held_opus = opus.iter().find(|(k, _)| k == "held-out");
    if let Some((_, o)) = committed_opus {
        println!(
            "| Opus alone (opusenc/opusdec 48 kb/s CBR, 20 ms; no network) | reference | {} | {} / – |",
            o["text"].as_str().unwrap_or(""),
            held_opus.map_or("–".into(), |(_, h)| fmt(h["pesq_wb_median"].as_f64(), 2))
        );
    }
    println!();
    for j in rows_json {
        println!("playout-row {j}");
    }
    for (_, o) in &opus {
        println!("playout-row {o}");
    }
    println!(
        "# {} runs, {failures} failed, {:.0} s; load average {}",
        done.len(),
        started.elapsed().as_secs_f64(),
        load_average()
    );
    drop(server);
    if failures > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
