#!/usr/bin/env bash
# Replication's cost: produce throughput and p99 acknowledgement latency of a master with one
# slave on this machine, --replication async against sync, under --flush async and sync, rounds
# alternating between the settings, dd in the same run; and the end-to-end latency at 20,000
# msg/s under sync replication. Master and slave share the disk and both cores.
#
#   scripts/bench-replication.sh          # ROUNDS=2 SCALE=0.25 by default
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-2}
SCALE=${SCALE:-0.25}
PORT=${PORT:-19931}
SLAVE_PORT=$((PORT + 1))
# shellcheck source=scripts/bench-broker-lib.sh
source scripts/bench-broker-lib.sh
SLAVE_PID=
echo "bench" >"$WORK/secret"

stop_pair() {
  if [ -n "$SLAVE_PID" ]; then kill -TERM "$SLAVE_PID" 2>/dev/null || true; wait "$SLAVE_PID" 2>/dev/null || true; SLAVE_PID=; fi
  stop_broker
}
bench_cleanup() { stop_pair; }

start_pair() { # flush, replication
  stop_pair
  rm -rf "$WORK/data" "$WORK/slave"
  "$BIN/smq-broker" --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --flush "$1" \
    --replication "$2" --replication-secret-file "$WORK/secret" --http "127.0.0.1:$((PORT + 2))" \
    --log-level warn >"$WORK/broker.log" 2>&1 &
  BROKER_PID=$!
  "$BIN/smq-broker" --listen "127.0.0.1:$SLAVE_PORT" --data-dir "$WORK/slave" --flush "$1" \
    --role slave --master "127.0.0.1:$PORT" --replication-secret-file "$WORK/secret" \
    --log-level warn >"$WORK/slave.log" 2>&1 &
  SLAVE_PID=$!
  for _ in $(seq 1 400); do
    if curl -s "http://127.0.0.1:$((PORT + 2))/metrics" | grep -q '^smq_slave_in_sync{.*} 1$'; then return; fi
    sleep 0.05
  done
  echo "the slave did not get in sync:"; cat "$WORK/broker.log" "$WORK/slave.log"; exit 1
}

echo "# replication benchmark: $ROUNDS rounds, scale $SCALE, $(nproc) cores, $(uname -r), $(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes')"
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round: dd $(dd_mb_per_s) MB/s, fsync p99 $(fsync_p99_us) us"
  for flush in async sync; do
    for replication in async sync; do
      start_pair "$flush" "$replication"
      out=$(bench produce --topic p --queues 8 --message-bytes 1024 --count "$(scaled 400000)" --in-flight 32)
      echo "round $round: flush $flush, replication $replication, produce 32 in flight: $(field "$out" "['mb_per_sec']") MB/s, p99 $(field "$out" "['latency_ms']['p99']") ms"
    done
  done
  start_pair async sync
  out=$(bench e2e --topic e --queues 1 --message-bytes 1024 --rate 20000 --duration "$(scaled 40)" --linger-ms 0)
  echo "round $round: e2e 20000 msg/s, flush async, replication sync: p50 $(field "$out" "['latency_ms']['p50']") ms, p99 $(field "$out" "['latency_ms']['p99']") ms"
done
stop_pair
