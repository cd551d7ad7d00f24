#!/usr/bin/env python3
"""A rough discrete-event model of `cargo bench --bench fleet`, for choosing the adaptive pacer's
constants (src/sender/pacer.rs) without a 10-minute benchmark run per try.

N lanes, each with the pacer's rules (slow start, its end at the lane's part of the full window,
additive increase with probing, multiplicative decrease, fast recovery when alone), one sliding
window of 50 requests per second at the stand-in, replies after 100 ms, a pause of the reset (1 s)
stretched by up to 10% on each refusal, and a small random delay on the way (the loaded machine).
It leaves out everything else (claims, SQLite, HTTP). A variant with the previous pacer's rules gave
that pacer's benchmark figures to within about 0.01, and this one gives the new pacer's (0.957,
0.924, 0.925 against the benchmark's 0.956, 0.924, 0.916 for N = 1, 3, 10). The benchmark, not this,
is what the README quotes.

    python3 scripts/fleet-model.py                      # the pacer's constants
    python3 scripts/fleet-model.py DECREASE=0.7 INCREASE=0.05
"""
import heapq
import random
import sys
from collections import deque

LIMIT = 50          # the platform's window (requests per sliding second, per app)
LATENCY = 0.100     # the stand-in's reply time
RESET = 1.0         # x-ogw-ratelimit-reset when the window is full


class Pacer:
    START_FRACTION = 0.1
    MIN_RATE = 0.5
    SLOW_START_GAIN = 2.0
    INCREASE = 0.01
    PROBE_SECS = 20.0
    INCREASE_JITTER = 0.2
    DECREASE = 0.75
    SLOW_START_DECREASE = 0.95
    PAUSE_JITTER = 0.1
    ALONE_SLACK = 2
    RECOVERY_GAIN = 0.5
    RECOVERY_FRACTION = 1.0

    def __init__(self, rng, ceiling=49.0):
        self.rng, self.ceiling = rng, ceiling
        self.start = max(ceiling * self.START_FRACTION, self.MIN_RATE)
        self.rate, self.slow_start, self.next = self.start, True, 0.0
        self.since, self.last_decrease, self.recover_to = 0.0, None, None
        self.sent = deque()

    def reserve(self, now):
        slot = max(self.next, now)
        self.next = slot + 1.0 / self.rate
        return slot

    def on_sent(self, at):
        while self.sent and at - self.sent[0] > 2.0:
            self.sent.popleft()
        self.sent.append(at)

    def on_success(self, now):
        rec = self.recover_to if self.recover_to and self.rate < self.recover_to * self.RECOVERY_FRACTION else None
        if self.slow_start:
            step = self.SLOW_START_GAIN
        elif rec:
            step = self.RECOVERY_GAIN * rec / self.rate
        else:
            p = (now - self.since) / self.PROBE_SECS
            jitter = 1 + self.INCREASE_JITTER * (2 * self.rng.random() - 1)
            step = self.INCREASE * (1 + p * p) * jitter / self.rate
        self.rate = min(self.rate + step, self.ceiling)
        if self.slow_start and self.rate >= self.ceiling:
            self.slow_start, self.since = False, now

    def on_rate_limited(self, sent, now):
        if self.last_decrease is not None and sent <= self.last_decrease:
            return
        mine = sum(1 for t in self.sent if t < sent and sent - t <= 1.0)
        self.recover_to = self.rate if mine + self.ALONE_SLACK >= LIMIT else None
        if self.slow_start:
            lowered = min(self.rate, max(mine, self.start)) * self.SLOW_START_DECREASE
        else:
            lowered = self.rate * self.DECREASE
        self.rate = max(lowered, self.MIN_RATE)
        self.slow_start, self.last_decrease, self.since = False, now, now
        self.next = max(self.next, now + 1 / self.rate)

    def pause(self):
        return RESET * (1 + self.PAUSE_JITTER * self.rng.random())


def run(n, secs=45.0, warmup=10.0, seed=1, delay=0.002, stagger=0.0):
    """One run: aggregate (of the 2,500/s ceiling), steady aggregate, Jain's index, 429 share."""
    rng = random.Random(seed)
    lanes = [Pacer(rng) for _ in range(n)]
    window, paused, log, events, seq = deque(), [0.0] * n, [], [], 0

    def push(t, kind, i, data=None):
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, seq, kind, i, data))

    for i in range(n):
        push(rng.random() * 0.01 + i * stagger, "try", i)
    while events:
        t, _, kind, i, data = heapq.heappop(events)
        if t > secs:
            break
        lane = lanes[i]
        if kind == "try":  # take the next slot (after the pause)
            if t < paused[i]:
                push(paused[i], "try", i)
            else:
                push(lane.reserve(t), "go", i)
        elif kind == "go":  # the slot came: send unless paused meanwhile
            if t < paused[i]:
                push(paused[i], "try", i)
                continue
            lane.on_sent(t)
            push(t + rng.expovariate(1 / delay), "arrive", i, t)
            push(t, "try", i)
        elif kind == "arrive":  # the stand-in's sliding window
            while window and t - window[0] >= 1.0:
                window.popleft()
            ok = len(window) < LIMIT
            if ok:
                window.append(t)
            log.append((t, i, ok))
            push(t + LATENCY, "reply", i, (data, ok))
        else:
            sent, ok = data
            if ok:
                lane.on_success(t)
            else:
                lane.on_rate_limited(sent, t)
                paused[i] = max(paused[i], t + lane.pause())
    stored = [0] * n
    steady = [0] * n
    for t, i, ok in log:
        if ok:
            stored[i] += 1
            steady[i] += t >= warmup
    total = sum(stored)
    jain = total * total / (n * sum(x * x for x in stored)) if total else 1.0
    refused = sum(1 for _, _, ok in log if not ok)
    return (total / secs / LIMIT, sum(steady) / (secs - warmup) / LIMIT, jain,
            refused / max(1, len(log)))


def main():
    for arg in sys.argv[1:]:
        name, value = arg.split("=")
        if not hasattr(Pacer, name):
            sys.exit(f"fleet-model: no constant {name}")
        setattr(Pacer, name, float(value))
    for n in (1, 3, 10):
        runs = [run(n, seed=s) for s in range(4)]
        mean = [sum(r[k] for r in runs) / len(runs) for k in range(4)]
        print(f"N={n:<2} aggregate {mean[0]:.3f} (steady {mean[1]:.3f}) | fairness {mean[2]:.3f} | "
              f"429s {mean[3] * 100:.2f}%   (mean of {len(runs)} seeds)")


if __name__ == "__main__":
    main()
