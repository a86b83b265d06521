#!/usr/bin/env bash
# What an end-to-end message costs in scheduling, counted rather than timed, so that a busy
# machine changes the figures little: while `smq bench e2e` runs at a fixed rate (1 KiB, --flush
# async, --linger-ms 0), `perf stat` counts over a window of each process (broker, slave, the
# bench client) its context switches, the thread wake-ups it issues (sched:sched_wakeup fires in
# the waker) and its CPU migrations, printed per message. The e2e latency of the same run is
# printed beside (that one does depend on the machine's load). Setups: one broker with one queue
# and with eight, and a master with a slave under sync replication.
#
#   scripts/bench-hops.sh                        # this tree, 1 round
#   OTHER=path/to/release ROUNDS=3 scripts/bench-hops.sh   # also another build, alternating
#   PER_THREAD=1 scripts/bench-hops.sh           # also the counts per thread (perf --per-thread)
#   SETUPS="1q 8q syncrepl" RATE=20000 DURATION=10 WINDOW=6
# Each round ends with the machine's floor (scripts/latency-floor.c), counted the same way.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-1}
SCALE=${SCALE:-1}
PORT=${PORT:-19961}
RATE=${RATE:-20000}
DURATION=${DURATION:-10}
WINDOW=${WINDOW:-6}
SETUPS=${SETUPS:-1q 8q syncrepl}
EVENTS=context-switches,sched:sched_wakeup,cpu-migrations
# shellcheck source=scripts/bench-broker-lib.sh
source scripts/bench-broker-lib.sh
echo "hops" >"$WORK/secret"
BUILDS=("this:target/release")
if [ -n "${OTHER:-}" ]; then BUILDS+=("other:$OTHER"); fi

start_sync_pair() {
  stop_slave
  start_broker async --replication sync --replication-secret-file "$WORK/secret" \
    --http "127.0.0.1:$((PORT + 2))"
  start_slave async
}

# Counts of process $2 over the window, written to $WORK/perf-$1.
count() { # name, pid
  local thread=()
  if [ -n "${PER_THREAD:-}" ]; then thread=(--per-thread); fi
  perf stat -x, -e "$EVENTS" "${thread[@]}" -p "$2" -o "$WORK/perf-$1" -- sleep "$WINDOW" 2>/dev/null
}

# "name: N.NN switches, N.NN wake-ups, N.NN migrations per message" from $WORK/perf-$1.
per_message() { # name
  python3 - "$WORK/perf-$1" "$1" "$((RATE * WINDOW))" "${PER_THREAD:-}" <<'PY'
import collections, sys
path, name, messages, per_thread = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
totals, threads = collections.Counter(), collections.defaultdict(collections.Counter)
for line in open(path):
    fields = line.strip().split(",")
    if len(fields) < 3 or line.startswith("#"):
        continue
    if per_thread:  # comm-tid,count,unit,event,...
        thread, value, event = fields[0], fields[1], fields[3]
    else:           # count,unit,event,...
        thread, value, event = None, fields[0], fields[2]
    try:
        value = float(value)
    except ValueError:
        continue
    totals[event] += value
    if thread:
        threads[thread.rsplit("-", 1)[0]][event] += value
def text(counts):
    return ", ".join(f"{counts[e] / messages:.2f} {label}" for e, label in
                     (("context-switches", "switches"), ("sched:sched_wakeup", "wake-ups"),
                      ("cpu-migrations", "migrations")))
print(f"{name}: {text(totals)} per message")
for thread, counts in sorted(threads.items()):
    if sum(counts.values()) >= messages / 100:
        print(f"  {name} {thread}: {text(counts)}")
PY
}

run() { # label, queues
  local client
  "$BIN/smq" --broker "127.0.0.1:$PORT" bench e2e --json --topic e --queues "$2" \
    --message-bytes 1024 --rate "$RATE" --duration "$DURATION" --linger-ms 0 \
    >"$WORK/e2e.json" 2>/dev/null &
  client=$!
  sleep $(((DURATION - WINDOW) / 2))
  count broker "$BROKER_PID" &
  local counting=($!)
  count client "$client" &
  counting+=($!)
  if [ -n "$SLAVE_PID" ]; then count slave "$SLAVE_PID" & counting+=($!); fi
  wait "${counting[@]}"
  wait "$client"
  local out; out=$(tail -n 1 "$WORK/e2e.json")
  echo "$1: e2e $RATE msg/s: p50 $(field "$out" "['latency_ms']['p50']") ms, p99 $(field "$out" "['latency_ms']['p99']") ms, p99.9 $(field "$out" "['latency_ms']['p99_9']") ms"
  per_message broker | sed "s/^/$1 /"
  if [ -n "$SLAVE_PID" ]; then per_message slave | sed "s/^/$1 /"; fi
  per_message client | sed "s/^/$1 /"
}

# The machine's floor for the same path (scripts/latency-floor.c: two processes, three thread
# wake-ups per handed batch, no storage, no runtime), counted the same way over its whole run.
FLOOR=$WORK/latency-floor
cc -O2 -pthread -o "$FLOOR" scripts/latency-floor.c 2>/dev/null || FLOOR=
floor() {
  if [ -z "$FLOOR" ]; then return; fi
  local out
  out=$(perf stat -x, -e "$EVENTS" -o "$WORK/perf-floor" -- "$FLOOR" "$RATE" "$DURATION" "$((RATE / 1000))")
  echo "round $round [floor]: $out"
  python3 - "$WORK/perf-floor" "$((RATE * DURATION))" <<'PY' | sed "s/^/round $round /"
import sys
counts = {}
for line in open(sys.argv[1]):
    fields = line.strip().split(",")
    if len(fields) >= 3 and not line.startswith("#"):
        try:
            counts[fields[2]] = float(fields[0])
        except ValueError:
            pass
messages = int(sys.argv[2])
print(f"[floor] both processes: {counts.get('context-switches', 0) / messages:.2f} switches, "
      f"{counts.get('sched:sched_wakeup', 0) / messages:.2f} wake-ups, "
      f"{counts.get('cpu-migrations', 0) / messages:.2f} migrations per message")
PY
}

echo "# hops: $ROUNDS rounds, window ${WINDOW}s of ${DURATION}s at $RATE msg/s, $(nproc) cores, $(uname -r), $(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes'), load $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 1 "$ROUNDS"); do
  for build in "${BUILDS[@]}"; do
    name=${build%%:*} BIN=${build#*:}
    for setup in $SETUPS; do
      case $setup in
        1q) stop_slave; start_broker async; run "round $round [$name] 1 queue" 1 ;;
        8q) stop_slave; start_broker async; run "round $round [$name] 8 queues" 8 ;;
        syncrepl) start_sync_pair; run "round $round [$name] sync replication" 1 ;;
      esac
    done
  done
  floor
done
stop_slave
stop_broker
