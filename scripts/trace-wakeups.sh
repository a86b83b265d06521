#!/usr/bin/env bash
# How long a woken thread waits for a core, on the end-to-end path: `perf record` of the
# scheduler's wake-ups and switches during a `smq bench e2e` run (1 KiB, 20,000 msg/s, one
# queue, async flush), and again during scripts/latency-floor.c's run of the same pacing. Each
# wake-up of a broker or client thread is matched with the switch that runs it and split by
# where it ran: on the core of the thread that woke it, or on the other one (an inter-processor
# interrupt; on a virtual machine, the other vCPU must be scheduled by the host). Prints, per
# kind, how many, p50 and p99 of the wait, and how many waited over 0.5 ms; then the cross-core
# wake-ups by waker and wakee. Needs perf (linux-perf) and root.
#
#   scripts/trace-wakeups.sh                       # this tree's release build, defaults
#   BIN=/path/to/release BROKER_ARGS="--worker-threads 2" CLIENT_ARGS="--threads 0" scripts/trace-wakeups.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-19971}
DURATION=${DURATION:-10}
BROKER_ARGS=${BROKER_ARGS:-}
CLIENT_ARGS=${CLIENT_ARGS:-}
# shellcheck source=scripts/bench-broker-lib.sh
source scripts/bench-broker-lib.sh
command -v perf >/dev/null || { echo "perf is needed: apt-get install linux-perf"; exit 1; }

summarize() { # perf.data, comm prefixes (comma separated)
  perf script -i "$1" -F comm,tid,cpu,time,event,trace 2>/dev/null | python3 -c '
import re, sys, collections
prefixes = tuple(sys.argv[1].split(","))
switch = re.compile(r"\s*(.+?)\s+(\d+) \[(\d+)\]\s+([\d.]+):\s+sched:sched_switch: .* next_comm=(.*?) next_pid=(\d+)")
wakeup = re.compile(r"\s*(.+?)\s+(\d+) \[(\d+)\]\s+([\d.]+):\s+sched:sched_wakeup: comm=(.*?) pid=(\d+) prio=\d+ target_cpu=(\d+)")
pending, waits, cross = {}, collections.defaultdict(list), collections.Counter()
for line in sys.stdin:
    m = switch.match(line)
    if m:
        woken = pending.pop(int(m.group(6)), None)
        if woken:
            waits[woken[1]].append(float(m.group(4)) - woken[0])
        continue
    m = wakeup.match(line)
    if m and m.group(5).startswith(prefixes):
        kind = "same core" if m.group(3) == m.group(7) else "other core"
        pending[int(m.group(6))] = (float(m.group(4)), kind)
        if kind == "other core":
            cross[(m.group(1).strip(), m.group(5))] += 1
for kind in ("same core", "other core"):
    w = sorted(waits[kind])
    if w:
        print(f"  {kind}: {len(w)} wake-ups, wait p50 {w[len(w)//2]*1e6:.0f} us, p99 {w[int(len(w)*0.99)]*1e6:.0f} us, over 0.5 ms {sum(x > 0.0005 for x in w)}")
for (waker, wakee), n in cross.most_common(5):
    print(f"  other core: {waker} -> {wakee}: {n}")
' "$2"
}

echo "# wake-ups on the e2e path: ${DURATION}s, $(nproc) cores, $(uname -r), $(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes')"
# shellcheck disable=SC2086
start_broker async $BROKER_ARGS
perf record -q -o "$WORK/smq.data" -e sched:sched_switch,sched:sched_wakeup -a -- sleep "$((DURATION - 2))" 2>/dev/null &
PERF_PID=$!
# shellcheck disable=SC2086
out=$("$BIN/smq" --broker "127.0.0.1:$PORT" bench e2e --json --topic e --queues 1 --message-bytes 1024 \
  --rate 20000 --duration "$DURATION" --linger-ms 0 $CLIENT_ARGS 2>/dev/null | tail -n 1)
wait "$PERF_PID" || true  # not the broker; perf's own status does not matter
stop_broker
echo "smq (broker ${BROKER_ARGS:-with its defaults}, client threads $(field "$out" "['threads']")): p50 $(field "$out" "['latency_ms']['p50']") ms, p99 $(field "$out" "['latency_ms']['p99']") ms, p99.9 $(field "$out" "['latency_ms']['p99_9']") ms"
summarize "$WORK/smq.data" "smq,tokio-rt-worker"

cc -O2 -pthread -o "$WORK/latency-floor" scripts/latency-floor.c
perf record -q -o "$WORK/floor.data" -e sched:sched_switch,sched:sched_wakeup -a -- sleep "$((DURATION - 2))" 2>/dev/null &
PERF_PID=$!
echo "$("$WORK/latency-floor" 20000 "$DURATION" 20)"
wait "$PERF_PID" || true  # not the broker; perf's own status does not matter
summarize "$WORK/floor.data" "latency-floor"
