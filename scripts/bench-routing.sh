#!/usr/bin/env bash
# What routing through the NameServer costs on the data path: `smq bench produce` to one broker
# through --broker and through --nameserver, rounds interleaved, beside loopback bandwidth measured
# in the same run; then the same load spread over two broker groups on this one machine.
#
#   scripts/bench-routing.sh                    # 3 rounds, about 4 minutes
#   ROUNDS=1 SCALE=0.25 scripts/bench-routing.sh
#   OLD_SMQ=/path/to/old/smq scripts/bench-routing.sh   # also an older `smq` through --broker
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
SCALE=${SCALE:-1}
BIN=target/release
WORK=$(mktemp -d -p "$PWD/target" bench-routing.XXXX)
PIDS=()

cargo build --release --quiet -p smq-broker -p smq-cli -p smq-nameserver --bins

cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

scaled() { python3 -c "print(max(1, int($1 * $SCALE)))"; }

# shellcheck source=scripts/bench-limits.sh
source scripts/bench-limits.sh

wait_until() { # what, command...
  local what=$1; shift
  for _ in $(seq 1 200); do
    if "$@" >/dev/null 2>&1; then return; fi
    sleep 0.05
  done
  echo "$what did not happen; logs:"; cat "$WORK"/*.log; exit 1
}

NS=127.0.0.1:19876
"$BIN/smq-nameserver" --listen "$NS" --log-level warn >"$WORK/ns.log" 2>&1 &
PIDS+=($!)
for group in 1 2; do
  "$BIN/smq-broker" --listen "127.0.0.1:1991$group" --data-dir "$WORK/data$group" --flush async \
    --group "g$group" --nameserver "$NS" --log-level warn >"$WORK/broker$group.log" 2>&1 &
  PIDS+=($!)
done
wait_until "both brokers registered" \
  bash -c "[ \$(curl -s http://$NS/v1/cluster | grep -o '\"addr\"' | wc -l) = 2 ]"

# One group: topic `one` on g1 only. Two groups: topic `two` on both.
"$BIN/smq" --nameserver "$NS" topic create one --queues 8 --groups g1 2>/dev/null
"$BIN/smq" --nameserver "$NS" topic create two --queues 8 2>/dev/null

bench() { # smq binary, topic, discovery flags...; prints MB/s and p99 ms
  local smq=$1 topic=$2; shift 2
  "$smq" "$@" bench produce --topic "$topic" --message-bytes 1024 \
    --count "$(scaled 1000000)" --json 2>/dev/null | tail -n 1 |
    python3 -c "import json,sys; d=json.load(sys.stdin); print(f\"{d['mb_per_sec']:.0f} MB/s, p99 {d['latency_ms']['p99']:.2f} ms\")"
}

echo "# routing benchmark: $ROUNDS rounds, scale $SCALE, $(nproc) cores, $(uname -r)"
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round: loopback $(loopback_mb_per_s) MB/s"
  echo "round $round: one group, --broker:      $(bench "$BIN/smq" one --broker 127.0.0.1:19911)"
  echo "round $round: one group, --nameserver:  $(bench "$BIN/smq" one --nameserver "$NS")"
  if [ -n "${OLD_SMQ:-}" ]; then
    echo "round $round: one group, old smq --broker: $(bench "$OLD_SMQ" one --broker 127.0.0.1:19911)"
  fi
  echo "round $round: two groups, --nameserver: $(bench "$BIN/smq" two --nameserver "$NS")"
done
