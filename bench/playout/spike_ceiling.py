#!/usr/bin/env python3
"""How good can any playout be on the jitter row's spikes at a given delay? An oracle.

    spike_ceiling.py SPEECH.wav [SPEECH.wav ...] [--delays 60,80,100,120,140,160,180] [--det-ms 20]
                     [--catch-up 0.25] [--seed 7]

Issue 8's jitter row asks for PESQ-WB >= 3.6 at <= 100 ms mouth-to-ear on 0-30 ms queueing
jitter plus delay spikes: 1 % of the 10 ms packets are held 150 ms, and every packet queued
behind one waits with it (FIFO), so nothing arrives for 150 ms about once a second. This
script asks what the *best* playout could score at a fixed delay on that arrival pattern,
with everything else made ideal: no codec (the packets carry the clean speech), no
queueing jitter at all, no loss, and an oracle that knows each spike's end.

The player runs at DELAY ms behind the talker. A packet is overdue when it has not come
by its send time; DET ms after that the player starts to slow down by WSOLA time-scale
modification (20 ms Hann windows, 10 ms hop, +-5 ms search by normalised correlation,
the way NetEQ's preemptive expand and accelerate work) at the rate that spreads the audio
it still holds evenly over the rest of the gap (the oracle part: it knows when the spike
ends). When the spike's packets arrive it speeds up at 1 + CATCH_UP back to DELAY. Each
output is scored with PESQ-WB against the input; `mean_delay_ms` is the time-averaged
delay the player ran at. A spike is never concealed with made-up audio beyond WSOLA's
repetition of what arrived; a real engine also has jitter to cover and does not know the
spike's end, so it can only do worse.

Prints one JSON line per (speech, delay). The constant-delay player (a delay that covers the
spike, no stretching) is the `--delays 180` row: 4.64, the meter's ceiling.
"""

import argparse
import json

import numpy as np
from pesq import pesq
from scipy.signal import resample_poly

from score import read_mono_48k

RATE = 16_000
PACKET = RATE // 100  # 10 ms
WINDOW = 2 * PACKET  # 20 ms Hann, 50 % overlap
HOP = PACKET
SEARCH = RATE // 200  # +-5 ms
SPIKE_PROBABILITY = 0.01
SPIKE_MS = 150


def read_16k(path):
    """The speech at 16 kHz, as the meter reads it (`score.py`) and PESQ-WB scores it."""
    return resample_poly(read_mono_48k(path), 1, 3)


def arrivals(packets, rng):
    """Arrival time (samples) of each packet: sent when complete, 1 % held SPIKE_MS, FIFO."""
    sent = (np.arange(packets) + 1) * PACKET
    held = rng.random(packets) < SPIKE_PROBABILITY
    arrive = np.empty(packets, dtype=np.int64)
    last = 0
    for k in range(packets):
        t = sent[k] + (SPIKE_MS * RATE // 1000 if held[k] else 0)
        last = max(last, t)
        arrive[k] = last
    return sent, arrive, int(held.sum())


def play(x, delay_ms, det_ms, catch_up, rng):
    packets = len(x) // PACKET
    x = x[: packets * PACKET]
    sent, arrive, spikes = arrivals(packets, rng)
    delay = delay_ms * RATE // 1000
    det = det_ms * RATE // 1000
    window = np.hanning(WINDOW + 1)[:WINDOW]  # periodic: 50 % overlaps sum to 1
    frames = (len(x) + 2 * delay) // HOP
    out = np.zeros(frames * HOP + WINDOW)
    pos = float(-delay)  # input position of the next frame
    prev = None  # input start of the last frame
    delays = []
    for m in range(frames):
        t = m * HOP
        # Contiguous audio that has arrived by t, and the first packet still missing.
        # FIFO arrivals are monotonic: the first `have` packets are all there.
        have = int(np.searchsorted(arrive, t, side="right"))
        avail = have * PACKET
        if pos >= len(x) - WINDOW:
            break
        if have < packets and t >= sent[have] + det:
            # Stretch: spread what is held over the rest of the gap (oracle end).
            remaining = max(arrive[have] - t, HOP)
            lead = max(avail - WINDOW - pos, 0.0)
            rate = min(1.0, lead / remaining)
        elif t - pos > delay + HOP:
            rate = 1.0 + catch_up
        else:
            rate = 1.0
        lo = max(int(pos) - SEARCH, 0)
        hi = min(int(pos) + SEARCH, avail - WINDOW)
        if prev is None or pos < 0:
            start = int(pos)
        else:
            natural = x[prev + HOP : prev + HOP + WINDOW]
            if len(natural) < WINDOW or hi < lo:
                # Nothing new to search in: repeat from as far as the audio reaches.
                start = max(min(int(pos), avail - WINDOW), 0)
            else:
                best, start = -2.0, lo
                for a in range(lo, hi + 1):
                    seg = x[a : a + WINDOW]
                    den = np.sqrt(np.dot(seg, seg) * np.dot(natural, natural)) + 1e-12
                    c = np.dot(seg, natural) / den
                    if c > best:
                        best, start = c, a
        if start >= 0:
            out[t : t + WINDOW] += window * x[start : start + WINDOW]
            prev = start
        delays.append(t - start)
        pos += rate * HOP
        if prev is not None and pos < prev - SEARCH:
            pos = float(prev)
    mean_delay_ms = 1000.0 * (np.mean(delays) if delays else 0.0) / RATE
    return out, spikes, mean_delay_ms


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("speech", nargs="+")
    p.add_argument("--delays", default="60,80,100,120,140,160,180")
    p.add_argument("--det-ms", type=int, default=20)
    p.add_argument("--catch-up", type=float, default=0.25)
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args()
    for path in a.speech:
        x = read_16k(path)
        for d in (int(v) for v in a.delays.split(",")):
            rng = np.random.default_rng(a.seed)
            out, spikes, mean_delay = play(x, d, a.det_ms, a.catch_up, rng)
            # PESQ aligns per utterance; the player's own delay is not a quality loss.
            shift = d * RATE // 1000
            y = out[shift : shift + len(x)]
            score = pesq(RATE, x, y, "wb")
            print(
                json.dumps(
                    {
                        "speech": path.split("/")[-1],
                        "delay_ms": d,
                        "det_ms": a.det_ms,
                        "catch_up": a.catch_up,
                        "spikes": spikes,
                        "pesq_wb": round(score, 2),
                        "mean_delay_ms": round(mean_delay, 1),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
