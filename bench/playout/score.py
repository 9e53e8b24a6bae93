#!/usr/bin/env python3
"""Scores a received recording against the speech that was sent: PESQ-WB and timing.

    score.py REFERENCE.wav DEGRADED.wav [--capture-ms T0 --recording-ms T1] [--tail-from S]

REFERENCE is what the talker streamed (`kv join --input`), DEGRADED what the listener
recorded (`kv join --output`), both 48 kHz mono (16-bit or float). Prints one JSON object:

- `lag_samples`: global delay of DEGRADED against REFERENCE at 48 kHz (degraded[i + lag] ~
  reference[i]), from the peak of their cross-correlation; `correlation` is that peak,
  normalised.
- `pesq_wb`: PESQ-WB (ITU-T P.862.2) of the aligned recording, from ITU's C code as the
  `pesq` package wraps it. Both signals are resampled to 16 kHz (scipy `resample_poly`)
  after the global alignment; P.862.2's own time alignment then runs as specified.
- `mouth_to_ear_ms` = recording_started + lag / 48 kHz - capture_started, when both time
  bases (`kv join --json`'s `recording_started` / `capture_started` unix_ms) are given;
  the lag is then searched where the delay is 0-3 s (a recording that does not hold the
  speech shows as a low `correlation` and `window_corr_mean`, not as a negative delay).
- Timing stability over 0.1 s windows of the reference: each *voiced* window (RMS within
  30 dB of the loudest window, and periodic: normalised autocorrelation >= 0.6 at a pitch
  period of 2.5-20 ms; Opus keeps the waveform of voiced speech, not of fricatives) is
  searched for in the aligned recording within +-200 ms by normalised cross-correlation
  (16 kHz). `window_corr_mean` is the mean peak correlation (Opus alone at 48 kb/s:
  0.99); windows whose peak is below 0.5 are
  *not found* (lost, concealed or badly stretched) and counted in `windows_not_found`; over
  the found windows, `lag_spread_ms` is max - min of the local lag and `lag_spread_p90_ms`
  p95 - p5. A jitter buffer that keeps a constant delay gives 0; every re-sync, stretch or
  trim inside speech moves the local lag and widens the spread.
- `lsd_db` (secondary): log-spectral distance of 20 ms frames (16 kHz, Hann, 320-point FFT,
  floor 50 dB below each reference frame's peak bin) over active frames, global alignment.
- With `--tail-from S`: the same delay and spread over the windows from S seconds of the
  reference on, to see where the delay settles after an impairment stops. The tail is
  aligned on its own (the lag of the reference from S on alone), then searched window by
  window like the whole; `tail_mouth_to_ear_ms` uses the median local lag there.
"""

import argparse
import json
import sys

import numpy as np
from scipy.io import wavfile
from scipy.signal import correlate, resample_poly

RATE = 48_000
PESQ_RATE = 16_000
WINDOW_S = 0.1
SEARCH_S = 0.2
MAX_DELAY_MS = 3000
ACTIVE_DB = 30.0
FOUND_CORR = 0.5
# Voiced: the window's normalised autocorrelation peaks at >= VOICED_CORR at a pitch
# period of 2.5-20 ms (400-50 Hz).
VOICED_CORR = 0.6
PITCH_LAGS = (40, 320)


def read_mono_48k(path):
    """A WAV file as float64 mono at 48 kHz (any PCM/float format, any rate)."""
    rate, data = wavfile.read(path)
    if data.dtype == np.int16:
        x = data.astype(np.float64) / 32768.0
    elif data.dtype == np.int32:
        x = data.astype(np.float64) / 2147483648.0
    elif data.dtype == np.uint8:
        x = (data.astype(np.float64) - 128.0) / 128.0
    else:
        x = data.astype(np.float64)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if rate != RATE:
        g = np.gcd(rate, RATE)
        x = resample_poly(x, RATE // g, rate // g)
    return x


def global_lag(ref, deg, lags=None):
    """(lag, normalised correlation) with deg[i + lag] ~ ref[i], the lag searched in
    `lags` = (lo, hi) when given."""
    xc = correlate(deg, ref, mode="full", method="fft")
    if lags is not None:
        lo = max(lags[0] + len(ref) - 1, 0)
        hi = min(lags[1] + len(ref) - 1, len(xc) - 1)
        if lo > hi:
            raise SystemExit(f"score.py: no lag in {lags} fits the recording")
        k = lo + int(np.argmax(xc[lo : hi + 1]))
    else:
        k = int(np.argmax(xc))
    lag = k - (len(ref) - 1)
    norm = np.sqrt(np.dot(ref, ref) * np.dot(deg, deg)) or 1.0
    return lag, float(xc[k] / norm)


def shifted(x, lag, n):
    """x[lag : lag + n], zero where out of range."""
    out = np.zeros(n)
    lo, hi = max(lag, 0), min(lag + n, len(x))
    if hi > lo:
        out[lo - lag : hi - lag] = x[lo:hi]
    return out


def voiced(w):
    """Whether a 16 kHz window is periodic at a pitch period (voiced speech)."""
    lo, hi = PITCH_LAGS
    e = np.dot(w, w)
    if e <= 0:
        return False
    ac = correlate(w, w, mode="full", method="fft")[len(w) - 1 :]
    return float(ac[lo:hi].max() / e) >= VOICED_CORR


def local_lags(ref16, deg16):
    """Per active voiced 0.1 s window: (start s, local lag ms, peak correlation)."""
    n = int(WINDOW_S * PESQ_RATE)
    s = int(SEARCH_S * PESQ_RATE)
    starts = range(0, len(ref16) - n + 1, n)
    rms = np.array([np.sqrt(np.mean(ref16[i : i + n] ** 2)) for i in starts])
    if len(rms) == 0 or rms.max() <= 0:
        return []
    floor = rms.max() * 10 ** (-ACTIVE_DB / 20)
    padded = np.concatenate([np.zeros(s), deg16, np.zeros(s + n)])
    out = []
    for i, r in zip(starts, rms):
        w = ref16[i : i + n]
        if r < floor or not voiced(w):
            continue
        seg = padded[i : i + 2 * s + n]  # deg16[i - s : i + s + n]
        num = correlate(seg, w, mode="valid")  # 2s + 1 lags
        e = np.concatenate([[0.0], np.cumsum(seg**2)])
        energy = e[n:] - e[:-n]
        den = np.sqrt(np.maximum(energy, 1e-12) * np.dot(w, w))
        c = num / den
        k = int(np.argmax(c))
        out.append((i / PESQ_RATE, (k - s) / PESQ_RATE * 1000.0, float(c[k])))
    return out


def spread(lags):
    if not lags:
        return None, None
    a = np.array(lags)
    return float(a.max() - a.min()), float(np.percentile(a, 95) - np.percentile(a, 5))


def lsd(ref16, deg16):
    n, hop = 320, 160
    win = np.hanning(n)
    frames = range(0, len(ref16) - n + 1, hop)
    if not frames:
        return None
    r = np.array([np.abs(np.fft.rfft(ref16[i : i + n] * win)) ** 2 for i in frames])
    d = np.array([np.abs(np.fft.rfft(deg16[i : i + n] * win)) ** 2 for i in frames])
    energy = r.sum(axis=1)
    active = energy >= energy.max() * 10 ** (-ACTIVE_DB / 10)
    r, d = r[active], d[active]
    floor = r.max(axis=1, keepdims=True) * 10 ** (-50 / 10)
    lr = 10 * np.log10(np.maximum(r, floor))
    ld = 10 * np.log10(np.maximum(d, floor))
    return float(np.mean(np.sqrt(np.mean((lr - ld) ** 2, axis=1))))


def score(ref_path, deg_path, capture_ms=None, recording_ms=None, tail_from=None):
    from pesq import pesq  # ITU-T P.862.2 reference code

    ref = read_mono_48k(ref_path)
    deg = read_mono_48k(deg_path)
    if len(ref) < RATE // 2 or not np.any(ref):
        raise SystemExit(f"score.py: reference {ref_path} is too short or silent")
    res = {}
    if not np.any(deg):
        res.update(pesq_wb=None, error="degraded recording is silent")
        return res
    lags = None
    if capture_ms is not None and recording_ms is not None:
        # Sound cannot be heard before it is spoken, nor (here) seconds later: search
        # mouth-to-ear in 0..MAX_DELAY_MS, so a recording without the speech in it cannot
        # report a negative delay.
        lo = int(np.ceil((capture_ms - recording_ms) * RATE / 1000))
        lags = (lo, lo + MAX_DELAY_MS * RATE // 1000)
    lag, corr = global_lag(ref, deg, lags)
    aligned = shifted(deg, lag, len(ref))
    ref16 = resample_poly(ref, 1, 3)
    deg16 = resample_poly(aligned, 1, 3)
    res["lag_samples"] = lag
    res["correlation"] = round(corr, 4)
    try:
        res["pesq_wb"] = round(float(pesq(PESQ_RATE, ref16, deg16, "wb")), 3)
    except Exception as e:  # the C code rejects e.g. recordings without any utterance
        res["pesq_wb"] = None
        res["error"] = f"pesq: {e}"
    if capture_ms is not None and recording_ms is not None:
        res["mouth_to_ear_ms"] = round(recording_ms + lag / (RATE / 1000) - capture_ms, 2)
    windows = local_lags(ref16, deg16)
    found = [w for w in windows if w[2] >= FOUND_CORR]
    res["windows"] = len(windows)
    res["windows_not_found"] = len(windows) - len(found)
    res["window_corr_mean"] = (
        round(float(np.mean([w[2] for w in windows])), 4) if windows else None
    )
    full, p90 = spread([w[1] for w in found])
    res["lag_spread_ms"] = None if full is None else round(full, 2)
    res["lag_spread_p90_ms"] = None if p90 is None else round(p90, 2)
    if tail_from is not None:
        # The tail is aligned on its own: after an impairment the delay may have held far
        # from where the global lag (the longest stretch at one delay) found it, further
        # than the local search reaches.
        head = min(int(tail_from * RATE), len(ref))
        ref_tail = np.concatenate([np.zeros(head), ref[head:]])
        tail_lag, _ = global_lag(ref_tail, deg, lags) if np.any(ref_tail) else (lag, 0.0)
        tail16 = resample_poly(shifted(deg, tail_lag, len(ref)), 1, 3)
        tail = [
            w for w in local_lags(ref16, tail16) if w[2] >= FOUND_CORR and w[0] >= tail_from
        ]
        full, p90 = spread([w[1] for w in tail])
        res["tail_windows"] = len(tail)
        res["tail_lag_spread_ms"] = None if full is None else round(full, 2)
        if tail and "mouth_to_ear_ms" in res:
            med = float(np.median([w[1] for w in tail]))
            at = recording_ms + tail_lag / (RATE / 1000) - capture_ms
            res["tail_mouth_to_ear_ms"] = round(at + med, 2)
    value = lsd(ref16, deg16)
    res["lsd_db"] = None if value is None else round(value, 3)
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("reference")
    p.add_argument("degraded")
    p.add_argument("--capture-ms", type=float, help="capture_started unix_ms of the talker")
    p.add_argument("--recording-ms", type=float, help="recording_started unix_ms of the listener")
    p.add_argument("--tail-from", type=float, metavar="S", help="also score the part from S s on")
    a = p.parse_args()
    res = score(a.reference, a.degraded, a.capture_ms, a.recording_ms, a.tail_from)
    json.dump(res, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
