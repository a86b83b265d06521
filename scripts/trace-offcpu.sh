#!/usr/bin/env bash
# Where the end-to-end path's threads spend their time off the CPU: `perf record -g` of the
# scheduler's switches and wake-ups during one `smq bench e2e` run (1 KiB, 100,000 msg/s unless
# RATE says otherwise, one queue, async flush), then, from the kernel stacks at each switch:
#   - each broker thread's time off the CPU by state and stack (S: waiting for work or a lock,
#     D: for the disk, R: preempted, kept from its core), the longest first;
#   - the broker's worker and the client kept from the CPU (preempted) over 0.5 ms, by the
#     thread that took their core;
#   - the longest runs on the CPU of the broker's threads (on a PREEMPT_NONE kernel a thread
#     inside a system call keeps its core until the call reaches a `cond_resched`).
# Needs perf (linux-perf) and root. The tracer itself adds to the tail it measures.
#
#   scripts/trace-offcpu.sh
#   RATE=20000 BIN=/path/to/release scripts/trace-offcpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-19975}
DURATION=${DURATION:-10}
RATE=${RATE:-100000}
# shellcheck source=scripts/bench-broker-lib.sh
source scripts/bench-broker-lib.sh
command -v perf >/dev/null || { echo "perf is needed: apt-get install linux-perf"; exit 1; }

echo "# off-CPU time on the e2e path: ${DURATION}s at $RATE msg/s, $(nproc) cores, $(uname -r), $(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes')"
start_broker async
perf record -q -g -o "$WORK/perf.data" -e sched:sched_switch,sched:sched_wakeup -a -- sleep "$((DURATION - 1))" 2>/dev/null &
PERF_PID=$!
out=$("$BIN/smq" --broker "127.0.0.1:$PORT" bench e2e --json --topic e --queues 1 --message-bytes 1024 \
  --rate "$RATE" --duration "$DURATION" --linger-ms 0 2>/dev/null | tail -n 1)
wait "$PERF_PID" || true # perf's own status does not matter
stop_broker
echo "e2e: p50 $(field "$out" "['latency_ms']['p50']") ms, p99 $(field "$out" "['latency_ms']['p99']") ms, p99.9 $(field "$out" "['latency_ms']['p99_9']") ms (under the tracer)"
perf script -i "$WORK/perf.data" -F comm,pid,tid,cpu,time,event,trace,ip,sym 2>/dev/null | python3 -c '
import collections, re, sys
header = re.compile(r"\s*(.+?)\s+(\d+)/(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+sched:(\w+):\s*(.*)")
switch = re.compile(r"prev_comm=(.*?) prev_pid=(\d+) prev_prio=\d+ prev_state=(\S+) ==> next_comm=(.*?) next_pid=(\d+)")
events, event = [], None
for line in sys.stdin:
    match = header.match(line)
    if match:
        event = dict(pid=int(match[2]), t=float(match[5]), kind=match[6], rest=match[7], stack=[])
        events.append(event)
    elif event is not None and line.strip():
        event["stack"].append(line.split()[1] if len(line.split()) > 1 else line.strip())
name, pid_of = {}, {}
for e in events:
    if e["kind"] == "sched_switch":
        s = switch.search(e["rest"])
        name[int(s[2])], pid_of[int(s[2])] = s[1], e["pid"]
broker = {tid for tid, n in name.items() if n.startswith("smq-broker")}
broker_pid = pid_of[next(iter(broker))] if broker else None
ours = {tid for tid in name if pid_of.get(tid) == broker_pid}
path = broker | {tid for tid, n in name.items() if n == "smq"}
off, on_since, off_by, preempted, runs = {}, {}, collections.defaultdict(list), collections.defaultdict(list), []
for e in events:
    if e["kind"] != "sched_switch":
        continue
    s = switch.search(e["rest"])
    prev, state, nxt = int(s[2]), s[3], int(s[5])
    if prev in on_since and prev in ours:
        runs.append((e["t"] - on_since.pop(prev), name[prev]))
    off[prev] = (e["t"], state, [f for f in e["stack"] if not f.startswith("[")][:6], s[4])
    on_since[nxt] = e["t"]
    if nxt in off:
        t0, st, stack, taker = off.pop(nxt)
        waited = e["t"] - t0
        if nxt in ours:
            off_by[(name[nxt], st[0], " < ".join(stack))].append(waited)
        if nxt in path and st.startswith("R") and waited > 0.0005:
            preempted[(name[nxt], taker)].append(waited)
print("broker threads off the CPU, by state and stack (longest first): count, total ms, longest ms")
for (thread, state, stack), waits in sorted(off_by.items(), key=lambda kv: -max(kv[1]))[:14]:
    print(f"  {len(waits):6} {sum(waits)*1e3:9.1f} {max(waits)*1e3:8.2f}  {thread} {state}: {stack}")
print("worker and client kept from the CPU over 0.5 ms, by the thread that took it: count, total ms")
for (thread, taker), waits in sorted(preempted.items(), key=lambda kv: -sum(kv[1]))[:10]:
    print(f"  {len(waits):6} {sum(waits)*1e3:9.1f}  {thread} <- {taker}")
print("longest runs on the CPU of broker threads, ms: " + ", ".join(f"{n} {d*1e3:.1f}" for d, n in sorted(runs)[-8:][::-1]))
'
