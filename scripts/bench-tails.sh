#!/usr/bin/env bash
# End-to-end latency targets of issue 14 (1 KiB messages, one producer, one consumer, broker and
# load on this machine): 20,000 msg/s on one queue and on eight under --flush async, one queue
# under --flush sync (beside the fsync p99 of the moment, idle and under the same write-and-sync
# load), and 100,000 msg/s on one queue.
#
#   scripts/bench-tails.sh                       # 3 rounds, about 5 minutes
#   OTHER=path/to/release scripts/bench-tails.sh # also another build's broker, rounds alternating
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-19951}
DURATION=${DURATION:-10}
# shellcheck source=scripts/bench-broker-lib.sh
source scripts/bench-broker-lib.sh
CLIENT=target/release/smq
BROKERS=("this:target/release")
if [ -n "${OTHER:-}" ]; then BROKERS+=("other:$OTHER"); fi

e2e() { # label, flush, queues, rate (not in a subshell: start_broker keeps the broker's pid)
  local label=$1; shift
  start_broker "$1"
  local out
  out=$("$CLIENT" --broker "127.0.0.1:$PORT" bench e2e --json --topic e --queues "$2" \
    --message-bytes 1024 --rate "$3" --duration "$DURATION" --linger-ms 0 2>/dev/null | tail -n 1)
  echo "$label: e2e $3 msg/s, $2 queue(s), $1 flush: p50 $(field "$out" "['latency_ms']['p50']") ms, p99 $(field "$out" "['latency_ms']['p99']") ms, p99.9 $(field "$out" "['latency_ms']['p99_9']") ms"
}

# The machine's own floor for the same path (scripts/latency-floor.c: two processes, loopback,
# the same pacing, no storage, no runtime), when a C compiler is there.
FLOOR=$WORK/latency-floor
cc -O2 -pthread -o "$FLOOR" scripts/latency-floor.c 2>/dev/null || FLOOR=
floor() { # rate, batch
  if [ -n "$FLOOR" ]; then echo "round $round: $("$FLOOR" "$1" "$DURATION" "$2")"; fi
}

# The group commit of the same writes without the broker (scripts/paced-sync.c: 20 KiB every 1 ms
# into a fallocated file through a map, a syncer thread msyncing what is new): its "durable" p99
# (append to the end of the sync covering it) is the limit for the sync-flush e2e p99, where
# paced_fsync_us is one write and fdatasync at a time (BENCHMARKS.md, "Session 11").
PACED=$WORK/paced-sync
cc -O2 -pthread -o "$PACED" scripts/paced-sync.c 2>/dev/null || PACED=
paced_group_commit() {
  if [ -n "$PACED" ]; then
    "$PACED" "$WORK/paced-sync.bin" fallocated map msync "$DURATION" | sed 's/.*syncs p50 [0-9]* p99 \([0-9]*\) p99.9 \([0-9]*\) us; durable p50 [0-9]* p99 \([0-9]*\) p99.9 \([0-9]*\) us/sync p99 \1 \/ p99.9 \2 us, durable p99 \3 \/ p99.9 \4 us/'
  fi
}

echo "# tails: $ROUNDS rounds of ${DURATION}s, $(nproc) cores, $(uname -r), $(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes')"
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round: dd $(dd_mb_per_s) MB/s, fsync p99 $(fsync_p99_us) us, fsync p99 / p99.9 under 20 KiB synced every 1 ms: $(paced_fsync_us | sed 's| | / |') us"
  if [ -n "$PACED" ]; then echo "round $round: group commit of the same load (paced-sync, map, msync): $(paced_group_commit)"; fi
  for build in "${BROKERS[@]}"; do
    name=${build%%:*} BIN=${build#*:}
    e2e "round $round [$name]" async 1 20000
    e2e "round $round [$name]" async 8 20000
    e2e "round $round [$name]" sync 1 20000
    e2e "round $round [$name]" async 1 100000
  done
  floor 20000 20
  floor 100000 100
done
stop_broker
