#!/usr/bin/env bash
# Replication's cost: produce throughput and p99 acknowledgement latency of a master with one
# slave on this machine, --replication async against sync, under --flush async and sync, rounds
# alternating between the settings, dd in the same run; and the end-to-end latency at 20,000
# msg/s under sync replication (async replication beside it, and the machine's floor for that
# path: scripts/latency-floor.c through a slave, no storage). Master and slave share the disk
# and both cores. The last lines summarise each figure (medians over the rounds).
#
#   scripts/bench-replication.sh          # ROUNDS=2 SCALE=0.25 by default
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-2}
SCALE=${SCALE:-0.25}
PORT=${PORT:-19931}
# shellcheck source=scripts/bench-broker-lib.sh
source scripts/bench-broker-lib.sh
echo "bench" >"$WORK/secret"

stop_pair() {
  stop_slave
  stop_broker
}

start_pair() { # flush, replication
  stop_pair
  rm -rf "$WORK/data"
  "$BIN/smq-broker" --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --flush "$1" \
    --replication "$2" --replication-secret-file "$WORK/secret" --http "127.0.0.1:$((PORT + 2))" \
    --log-level warn >"$WORK/broker.log" 2>&1 &
  BROKER_PID=$!
  start_slave "$1"
}

# The machine's floor for the same path (scripts/latency-floor.c with a slave: producer, master,
# slave, master, consumer over loopback, no storage, no runtime), when a C compiler is there.
FLOOR=$WORK/latency-floor
cc -O2 -pthread -o "$FLOOR" scripts/latency-floor.c 2>/dev/null || FLOOR=

declare -A MB P99
median() { python3 -c "import statistics, sys; print(round(statistics.median(map(float, sys.argv[1:])), 2))" "$@"; }

echo "# replication benchmark: $ROUNDS rounds, scale $SCALE, $(nproc) cores, $(uname -r), $(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes')"
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round: dd $(dd_mb_per_s) MB/s, fsync p99 $(fsync_p99_us) us"
  for flush in async sync; do
    for replication in async sync; do
      start_pair "$flush" "$replication"
      out=$(bench produce --topic p --queues 8 --message-bytes 1024 --count "$(scaled 400000)" --in-flight 32)
      mb=$(field "$out" "['mb_per_sec']")
      MB[$flush/$replication]+=" $mb"
      # A slave that fell behind leaves the disk to the master: say how far, as the run ends.
      lag=$(curl -s "http://127.0.0.1:$((PORT + 2))/metrics" | awk '/^smq_slave_lag_bytes/ { print int($2 / 1e6) }')
      echo "round $round: flush $flush, replication $replication, produce 32 in flight: $mb MB/s, p99 $(field "$out" "['latency_ms']['p99']") ms, slave behind by ${lag:-?} MB at the end"
    done
  done
  for replication in async sync; do
    start_pair async "$replication"
    out=$(bench e2e --topic e --queues 1 --message-bytes 1024 --rate 20000 --duration "$(scaled 40)" --linger-ms 0)
    p99=$(field "$out" "['latency_ms']['p99']")
    P99[$replication]+=" $p99"
    echo "round $round: e2e 20000 msg/s, flush async, replication $replication: p50 $(field "$out" "['latency_ms']['p50']") ms, p99 $p99 ms, p99.9 $(field "$out" "['latency_ms']['p99_9']") ms"
  done
  stop_pair
  if [ -n "$FLOOR" ]; then echo "round $round: $("$FLOOR" 20000 "$(scaled 40)" 20 1)"; fi
done
stop_pair
for flush in async sync; do
  # shellcheck disable=SC2086
  sync_mb=$(median ${MB[$flush/sync]}) async_mb=$(median ${MB[$flush/async]})
  echo "summary: flush $flush, 32 in flight: sync replication $sync_mb MB/s = $(python3 -c "print(round(100 * $sync_mb / $async_mb))")% of async replication's $async_mb MB/s (medians of $ROUNDS rounds; target >= 70%)"
done
# shellcheck disable=SC2086
echo "summary: e2e p99 at 20000 msg/s, flush async: sync replication $(median ${P99[sync]}) ms (target <= 2 ms), async replication $(median ${P99[async]}) ms (medians of $ROUNDS rounds)"
