#!/usr/bin/env bash
# Broker benchmarks with `smq bench` on loopback (broker and load generator share this machine),
# each beside dd and loopback bandwidth measured in the same run, rounds interleaved with dd.
#
#   scripts/bench-broker.sh            # 3 rounds, about 10 minutes
#   ROUNDS=1 SCALE=0.25 scripts/bench-broker.sh   # a short look, figures not comparable
#
# Needs root only for the cold drain (it drops the page cache); without root that row is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-19911}
# shellcheck source=scripts/bench-broker-lib.sh
source scripts/bench-broker-lib.sh


echo "# broker benchmark: $ROUNDS rounds, scale $SCALE, $(nproc) cores, $(uname -r)"
echo "loopback, one TCP stream: $(loopback_mb_per_s) MB/s"
RESULTS="$WORK/results.txt"
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round: dd $(dd_mb_per_s) MB/s" | tee -a "$RESULTS"

  start_broker async
  out=$(bench produce --topic p --queues 8 --message-bytes 1024 --count "$(scaled 2000000)")
  echo "round $round: produce async flush: $(field "$out" "['mb_per_sec']") MB/s, p99 $(field "$out" "['latency_ms']['p99']") ms" | tee -a "$RESULTS"
  out=$(bench consume --topic p --count "$(scaled 2000000)")
  echo "round $round: drain hot 2 GB backlog: $(field "$out" "['mb_per_sec']") MB/s" | tee -a "$RESULTS"
  if [ "$(id -u)" = 0 ]; then
    stop_broker
    sync; echo 3 > /proc/sys/vm/drop_caches
    "$BIN/smq-broker" --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --flush async --log-level warn >"$WORK/broker.log" 2>&1 &
    BROKER_PID=$!
    for _ in $(seq 1 200); do "$BIN/smq" --broker "127.0.0.1:$PORT" topic list >/dev/null 2>&1 && break; sleep 0.05; done
    out=$(bench consume --topic p --count "$(scaled 2000000)")
    echo "round $round: drain cold 2 GB backlog (page cache dropped): $(field "$out" "['mb_per_sec']") MB/s" | tee -a "$RESULTS"
  fi

  echo "round $round: dd $(dd_mb_per_s) MB/s" | tee -a "$RESULTS"
  start_broker sync
  out=$(bench produce --topic s --queues 8 --message-bytes 1024 --count "$(scaled 1000000)" --acks flushed --in-flight 32)
  echo "round $round: produce sync flush, 32 in flight: $(field "$out" "['mb_per_sec']") MB/s, p99 $(field "$out" "['latency_ms']['p99']") ms" | tee -a "$RESULTS"

  for flush in sync async; do
    start_broker "$flush"
    out=$(bench e2e --topic e --queues 8 --message-bytes 1024 --rate 20000 --duration "$(scaled 15)" --linger-ms 0)
    echo "round $round: e2e 20000 msg/s, $flush flush: p50 $(field "$out" "['latency_ms']['p50']") ms, p99 $(field "$out" "['latency_ms']['p99']") ms, p99.9 $(field "$out" "['latency_ms']['p99_9']") ms, $(field "$out" "['msgs_per_sec']") msg/s" | tee -a "$RESULTS"
  done
  stop_broker
done
echo "final dd $(dd_mb_per_s) MB/s"
