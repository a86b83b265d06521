#!/usr/bin/env bash
# Issue 19's hostile peers against one broker while a normal producer and consumer run (about
# 3 minutes with the defaults): do they keep their throughput, does the broker stay within its
# memory bound, is anything acknowledged lost?
#
#   scripts/bench-hostile.sh
#   ROUNDS=5 DURATION=15 scripts/bench-hostile.sh
#
# Each round runs `smq bench mixed` (one producer and one consumer, 8 queues, 1 KiB messages, as
# fast as they go, DURATION s) twice, each time against a fresh broker: undisturbed, and disturbed
# by the `hostile-peers` binary (tests/src/hostile.rs: 5,000 connections sending one byte a
# second, one client pipelining 100,000 long polls, one client that never reads its responses,
# 40 frames announced at 16 MiB and never finished, half of them after a handshake; all from
# 127.0.0.2, the normal clients from 127.0.0.1), started and set up before the bench begins and
# held until it ends. The order alternates between rounds, so that a change in the machine's
# load does not always fall on the same side. Per run: the producer's and the consumer's MB/s;
# that the consumer received every acknowledged message (bench mixed fails otherwise) and the
# topic holds exactly as many; the broker's peak anonymous memory (RssAnon, sampled every 20 ms:
# its heap, buffers and tasks, not the mapped log) against MEMORY_BOUND_MIB, and its peak resident
# size (VmHWM, mapped log pages included). Per round the disturbed/undisturbed ratios; at the end
# their medians.
#
# Limits set here, and why:
# - `ulimit -n` is raised to 16,384 (or the hard limit; at least 12,000 are needed): the hostile
#   peers take 5,000 + 80 descriptors, the broker one per connection plus its files, and a login's
#   default of 1,024 is far too few. The broker inherits the limit.
# - The broker runs with --max-connections 10000 --max-connections-per-ip 10000 (today's defaults,
#   given explicitly): the per-address cap must admit the 5,042 hostile connections from
#   127.0.0.2; a lower cap would refuse most slow connections at accept, which is the cap
#   working, not the broker holding them all.
# - --disk-usage-watermark-percent 99 (the default is 90): a run writes about 2.5 GB on a disk that
#   is often above 85% full here; the data directory is removed after each run.
# - --peer-timeout-ms 120000 (the default is 30,000): no hostile peer is closed during a run, so
#   the benchmark measures the broker holding all of them at once. tests/hostile_peers.rs checks
#   that they are closed after peer_timeout_ms.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
SCALE=${SCALE:-0.25}
PORT=${PORT:-19941}
MEMORY_BOUND_MIB=${MEMORY_BOUND_MIB:-512}
OPEN_FILES=16384

hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt 12000 ]; then
  echo "the hard open-files limit is $hard; 12,000 are needed (raise it as root: ulimit -Hn)" >&2
  exit 1
fi
if [ "$hard" = unlimited ] || [ "$hard" -ge "$OPEN_FILES" ]; then
  ulimit -n "$OPEN_FILES"
else
  ulimit -n "$hard"
fi

# shellcheck source=scripts/bench-broker-lib.sh
source scripts/bench-broker-lib.sh
cargo build --release --quiet -p smq-tests --bin hostile-peers
BROKER_ARGS=(--peer-timeout-ms 120000 --max-connections 10000 --max-connections-per-ip 10000
  --disk-usage-watermark-percent 99)

HOSTILE_PID=
bench_cleanup() {
  if [ -n "$HOSTILE_PID" ]; then kill "$HOSTILE_PID" 2>/dev/null || true; fi
}

# Samples the broker's memory every 20 ms until $WORK/stop-sampling appears, then prints
# "<peak RssAnon MiB> <VmHWM MiB>".
sample_memory() {
  python3 - "$BROKER_PID" "$WORK/stop-sampling" <<'PY'
import os, sys, time
pid, stop = sys.argv[1], sys.argv[2]
def field(name):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(name + ":"):
                return int(line.split()[1]) / 1024
peak = 0
while not os.path.exists(stop):
    peak = max(peak, field("RssAnon"))
    time.sleep(0.02)
print(f"{peak:.0f} {field('VmHWM'):.0f}")
PY
}

# One run against a fresh broker, quiet or hostile; sets RESULT to
# "<producer MB/s> <consumer MB/s> <peak RssAnon MiB> <VmHWM MiB> <messages acknowledged>".
run() {
  local mode=$1
  start_broker async "${BROKER_ARGS[@]}"
  rm -f "$WORK/stop-sampling"
  sample_memory >"$WORK/memory" &
  local sampler=$!
  if [ "$mode" = hostile ]; then
    rm -f "$WORK/hold" && mkfifo "$WORK/hold"
    target/release/hostile-peers "127.0.0.1:$PORT" <"$WORK/hold" >"$WORK/hostile.out" 2>&1 &
    HOSTILE_PID=$!
    exec 3>"$WORK/hold"
    for _ in $(seq 1 1200); do
      if grep -q '^ready' "$WORK/hostile.out"; then break; fi
      if ! kill -0 "$HOSTILE_PID" 2>/dev/null; then cat "$WORK/hostile.out" >&2; exit 1; fi
      sleep 0.05
    done
    grep '^ready' "$WORK/hostile.out" >&2 || { echo "the hostile peers did not start" >&2; exit 1; }
  fi
  local out
  out=$(bench mixed --topic m --queues 8 --producers 1 --consumers 1 --rate 0 \
    --message-bytes 1024 --duration "$DURATION") || {
    echo "bench mixed failed (a message acknowledged and not received?); the broker's log ends:" >&2
    tail -n 20 "$WORK/broker.log" >&2
    exit 1
  }
  if [ "$mode" = hostile ]; then
    exec 3>&-
    wait "$HOSTILE_PID"
    HOSTILE_PID=
    grep '^held' "$WORK/hostile.out" >&2
  fi
  touch "$WORK/stop-sampling"
  wait "$sampler"
  local sent received stored
  sent=$(field "$out" "['sent']")
  received=$(field "$out" "['received']")
  stored=$("$BIN/smq" --broker "127.0.0.1:$PORT" topic describe m --json |
    python3 -c "import json,sys; print(sum(q['messages'] for q in json.load(sys.stdin)['queues']))")
  if [ "$received" != "$sent" ] || [ "$stored" != "$sent" ]; then
    echo "LOST OR EXTRA: $sent acknowledged, $received received, $stored stored" >&2
    exit 1
  fi
  RESULT="$(field "$out" "['sent_mb_per_sec']") $(field "$out" "['mb_per_sec']") $(cat "$WORK/memory") $sent"
  # About 2.5 GB a run at 300 MB/s: gone before the next one.
  stop_broker
  rm -rf "$WORK/data"
}

ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
median() { python3 -c "import statistics, sys; print(f'{statistics.median(map(float, sys.argv[1:])):.2f}')" "$@"; }

echo "# hostile-peers benchmark: $ROUNDS rounds of $DURATION s, $(nproc) cores, $(uname -r), $(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes')"
echo "load before: $(uptime)"
echo "loopback, one TCP stream: $(loopback_mb_per_s) MB/s; open files: $(ulimit -n)"
producer_ratios=() consumer_ratios=()
peak_anon=0
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round: dd $(dd_mb_per_s) MB/s, load $(cut -d' ' -f1-3 /proc/loadavg)"
  if ((round % 2)); then order=(quiet hostile); else order=(hostile quiet); fi
  declare -A result=()
  for mode in "${order[@]}"; do
    run "$mode"
    result[$mode]=$RESULT
    read -r produced consumed anon hwm acked <<<"${result[$mode]}"
    echo "round $round [$mode]: producer $produced MB/s, consumer $consumed MB/s, $acked acknowledged = received = stored; broker peak RssAnon $anon MiB, VmHWM $hwm MiB"
    if [ "$mode" = hostile ] && ((anon > peak_anon)); then peak_anon=$anon; fi
  done
  read -r quiet_produced quiet_consumed _ <<<"${result[quiet]}"
  read -r hostile_produced hostile_consumed _ <<<"${result[hostile]}"
  producer_ratios+=("$(ratio "$hostile_produced" "$quiet_produced")")
  consumer_ratios+=("$(ratio "$hostile_consumed" "$quiet_consumed")")
  echo "round $round: disturbed/undisturbed: producer ${producer_ratios[-1]}, consumer ${consumer_ratios[-1]}"
  unset result
done
stop_broker
echo "median disturbed/undisturbed: producer $(median "${producer_ratios[@]}"), consumer $(median "${consumer_ratios[@]}") (issue 19: at least 0.80)"
echo "broker peak RssAnon under attack: $peak_anon MiB (bound $MEMORY_BOUND_MIB MiB)"
echo "load after: $(uptime)"
if ((peak_anon >= MEMORY_BOUND_MIB)); then
  echo "the broker's memory went above the bound" >&2
  exit 1
fi
