#!/usr/bin/env bash
# How long a woken thread waits for a core, on the end-to-end path: `perf record` of the
# scheduler's wake-ups and switches during a `smq bench e2e` run (1 KiB, 20,000 msg/s unless RATE says otherwise, one
# queue, async flush), and again during scripts/latency-floor.c's run of the same pacing. Each
# wake-up of a broker or client thread is matched with the switch that runs it and split by
# where it ran: on the core of the thread that woke it, or on the other one (an inter-processor
# interrupt; on a virtual machine, the other vCPU must be scheduled by the host). Prints, per
# kind, how many, p50 and p99 of the wait, and how many waited over 0.5 ms; then the cross-core
# wake-ups by waker and wakee, and for the waits over 0.5 ms which threads held the core
# meanwhile (swapper: the core was idle, so the vCPU itself had to be scheduled). With
# SLAVE=sync the broker is a master under --replication sync with one slave (the slave's
# threads are traced too, marked "slave"). Needs perf (linux-perf) and root.
#
#   scripts/trace-wakeups.sh                       # this tree's release build, defaults
#   BIN=/path/to/release BROKER_ARGS="--worker-threads 2" CLIENT_ARGS="--threads 0" scripts/trace-wakeups.sh
#   SLAVE=sync scripts/trace-wakeups.sh            # master and slave, sync replication
#   RATE=100000 scripts/trace-wakeups.sh           # another rate (the floor's batch follows it)
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-19971}
DURATION=${DURATION:-10}
BROKER_ARGS=${BROKER_ARGS:-}
CLIENT_ARGS=${CLIENT_ARGS:-}
SLAVE=${SLAVE:-}
RATE=${RATE:-20000}
# shellcheck source=scripts/bench-broker-lib.sh
source scripts/bench-broker-lib.sh
command -v perf >/dev/null || { echo "perf is needed: apt-get install linux-perf"; exit 1; }

summarize() { # perf.data, comm prefixes (comma separated), pid of the slave (marked) or empty
  perf script -i "$1" -F comm,pid,tid,cpu,time,event,trace 2>/dev/null | python3 -c '
import re, sys, collections
prefixes, slave = tuple(sys.argv[1].split(",")), sys.argv[2]
line_re = re.compile(r"\s*(.+?)\s+(\d+)/(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+sched:(sched_switch|sched_wakeup):\s*(.*)")
switch = re.compile(r"next_comm=(.*?) next_pid=(\d+)")
wakeup = re.compile(r"comm=(.*?) pid=(\d+) prio=\d+ target_cpu=(\d+)")
pending, waits, cross = {}, collections.defaultdict(list), collections.Counter()
pid_of, running, held, long_waits = {}, {}, collections.defaultdict(list), []
name = lambda comm, tid: comm + (" (slave)" if pid_of.get(tid) == slave else "")
for line in sys.stdin:
    m = line_re.match(line)
    if not m:
        continue
    comm, pid, tid, cpu, t, event, rest = m[1].strip(), m[2], int(m[3]), int(m[4]), float(m[5]), m[6], m[7]
    pid_of[tid] = pid
    if event == "sched_switch":
        n = switch.search(rest)
        if cpu in running:
            held[cpu].append((running[cpu][0], t, running[cpu][1]))
        running[cpu] = (t, name(n[1], int(n[2])))
        woken = pending.pop(int(n[2]), None)
        if woken:
            waits[woken[1]].append(t - woken[0])
            if t - woken[0] > 0.0005:
                long_waits.append((woken[0], t, cpu))
        continue
    w = wakeup.search(rest)
    if w and w[1].startswith(prefixes):
        kind = "same core" if cpu == int(w[3]) else "other core"
        pending[int(w[2])] = (t, kind)
        if kind == "other core":
            cross[(name(comm, tid), name(w[1], int(w[2])))] += 1
for kind in ("same core", "other core"):
    w = sorted(waits[kind])
    if w:
        print(f"  {kind}: {len(w)} wake-ups, wait p50 {w[len(w)//2]*1e6:.0f} us, p99 {w[int(len(w)*0.99)]*1e6:.0f} us, over 0.5 ms {sum(x > 0.0005 for x in w)}")
for (waker, wakee), n in cross.most_common(5):
    print(f"  other core: {waker} -> {wakee}: {n}")
# For each wait over 0.5 ms, the thread that held its core longest meanwhile.
holders = collections.Counter()
for start, end, cpu in long_waits:
    by_thread = collections.Counter()
    for begin, finish, thread in held[cpu]:
        if min(finish, end) > max(begin, start):
            by_thread[re.sub(r"[/:]\d+$", "", thread)] += min(finish, end) - max(begin, start)
    if by_thread:
        holders[by_thread.most_common(1)[0][0]] += 1
print("  waits over 0.5 ms, by the thread that held the core: " + ", ".join(f"{thread} {n}" for thread, n in holders.most_common(8)))
' "$2" "${3:-}"
}

echo "# wake-ups on the e2e path: ${DURATION}s, $(nproc) cores, $(uname -r), $(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes')"
if [ -n "$SLAVE" ]; then
  echo "bench" >"$WORK/secret"
  # shellcheck disable=SC2086
  start_broker async --replication "$SLAVE" --replication-secret-file "$WORK/secret" \
    --http "127.0.0.1:$((PORT + 2))" $BROKER_ARGS
  start_slave async
else
  # shellcheck disable=SC2086
  start_broker async $BROKER_ARGS
fi
perf record -q -o "$WORK/smq.data" -e sched:sched_switch,sched:sched_wakeup -a -- sleep "$((DURATION - 2))" 2>/dev/null &
PERF_PID=$!
# shellcheck disable=SC2086
out=$("$BIN/smq" --broker "127.0.0.1:$PORT" bench e2e --json --topic e --queues 1 --message-bytes 1024 \
  --rate "$RATE" --duration "$DURATION" --linger-ms 0 $CLIENT_ARGS 2>/dev/null | tail -n 1)
wait "$PERF_PID" || true  # not the broker; perf's own status does not matter
slave_pid=$SLAVE_PID
stop_slave
stop_broker
echo "smq (broker ${BROKER_ARGS:-with its defaults}${SLAVE:+, replication $SLAVE with a slave}, client threads $(field "$out" "['threads']")): p50 $(field "$out" "['latency_ms']['p50']") ms, p99 $(field "$out" "['latency_ms']['p99']") ms, p99.9 $(field "$out" "['latency_ms']['p99_9']") ms"
summarize "$WORK/smq.data" "smq,tokio-rt-worker" "$slave_pid"

cc -O2 -pthread -o "$WORK/latency-floor" scripts/latency-floor.c
perf record -q -o "$WORK/floor.data" -e sched:sched_switch,sched:sched_wakeup -a -- sleep "$((DURATION - 2))" 2>/dev/null &
PERF_PID=$!
echo "$("$WORK/latency-floor" "$RATE" "$DURATION" "$((RATE / 1000))")"
wait "$PERF_PID" || true  # not the broker; perf's own status does not matter
summarize "$WORK/floor.data" "latency-floor"
