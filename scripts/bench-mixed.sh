#!/usr/bin/env bash
# `smq bench mixed` like OpenMessaging Benchmark's workload (issue 14, point 5): 4 producers,
# 4 consumers, 100 queues, 50,000 msg/s of 1 KiB, against a fresh release broker each round
# (--flush async), after a 5 s warm-up that creates the topic; dd and loopback in the same run.
#
#   scripts/bench-mixed.sh             # 3 rounds of 30 s, about 3 minutes
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-19931}
DURATION=${DURATION:-30}
# shellcheck source=scripts/bench-broker-lib.sh
source scripts/bench-broker-lib.sh

mixed() { # seconds
  bench mixed --producers 4 --consumers 4 --queues 100 --rate 50000 --message-bytes 1024 \
    --duration "$1" --topic mixed
}

echo "# mixed: $ROUNDS rounds of ${DURATION}s, $(nproc) cores, $(uname -r), $(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes')"
echo "loopback, one TCP stream: $(loopback_mb_per_s) MB/s"
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round: dd $(dd_mb_per_s) MB/s"
  start_broker async
  warm=$(mixed 5)
  out=$(mixed "$DURATION")
  echo "round $round: warm-up p99 $(field "$warm" "['latency_ms']['p99']") ms; sent $(field "$out" "['sent']"), received $(field "$out" "['received']") ($(field "$out" "['msgs_per_sec']") msg/s); e2e p50 $(field "$out" "['latency_ms']['p50']"), p99 $(field "$out" "['latency_ms']['p99']"), p99.9 $(field "$out" "['latency_ms']['p99_9']"), p99.99 $(field "$out" "['latency_ms']['p99_99']"), max $(field "$out" "['latency_ms']['max']") ms; publish p99 $(field "$out" "['publish_latency_ms']['p99']") ms"
done
stop_broker
