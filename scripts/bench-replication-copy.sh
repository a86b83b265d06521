#!/usr/bin/env bash
# A new empty slave copying a long log while a producer runs (issue 16: the producer keeps at
# least 70% of its undisturbed throughput). Each round: dd (2 GiB, one fdatasync); a fresh
# master (async flush and replication) filled with LOG_MIB MiB; a producer's MB/s for DURATION
# seconds with no slave (undisturbed); then an empty slave starts and the same producer runs
# again while it copies (disturbed); how long the slave took to hold everything the master had.
# Master, slave and producer share this machine's disk and cores.
#
#   scripts/bench-replication-copy.sh     # ROUNDS=2 LOG_MIB=2048 DURATION=10 PACE_BYTES_PER_SEC=
#                                         # SEGMENT_BYTES=268435456
#
# Disk: the master's log grows to LOG_MIB plus two producer runs, and the slave copies all of
# it: about 2 x (LOG_MIB + 2 x DURATION x the producer's MB/s), removed at the end of a round.
# PACE_BYTES_PER_SEC sets the master's --replication-max-bytes-per-sec (0: unpaced; empty: the
# broker's default pace). The
# disturbed figure covers only copying time when the copy took at least DURATION seconds: the
# summary line says so.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-2}
SCALE=${SCALE:-1}
LOG_MIB=${LOG_MIB:-2048}
DURATION=${DURATION:-10}
PACE_BYTES_PER_SEC=${PACE_BYTES_PER_SEC:-}
SEGMENT_BYTES=${SEGMENT_BYTES:-268435456}
PORT=${PORT:-19941}
HTTP_PORT=$((PORT + 2))
SLAVE_PORT=$((PORT + 1))
# shellcheck source=scripts/bench-broker-lib.sh
source scripts/bench-broker-lib.sh
SLAVE_PID=
KEPT=
echo "bench" >"$WORK/secret"

stop_slave() {
  if [ -n "$SLAVE_PID" ]; then kill -TERM "$SLAVE_PID" 2>/dev/null || true; wait "$SLAVE_PID" 2>/dev/null || true; SLAVE_PID=; fi
  rm -rf "$WORK/slave"
}
bench_cleanup() { stop_slave; }

start_master() {
  start_broker async --segment-bytes "$SEGMENT_BYTES" --replication async \
    --replication-secret-file "$WORK/secret" --http "127.0.0.1:$HTTP_PORT" \
    ${PACE_BYTES_PER_SEC:+--replication-max-bytes-per-sec "$PACE_BYTES_PER_SEC"}
}

start_slave() {
  stop_slave
  "$BIN/smq-broker" --listen "127.0.0.1:$SLAVE_PORT" --data-dir "$WORK/slave" --flush async \
    --segment-bytes "$SEGMENT_BYTES" --role slave --master "127.0.0.1:$PORT" --replication-secret-file "$WORK/secret" \
    --log-level warn >"$WORK/slave.log" 2>&1 &
  SLAVE_PID=$!
}

# Seconds from now until the master counts its slave in sync (it holds what the master had).
seconds_until_in_sync() {
  local start; start=$(date +%s.%N)
  until curl -s "http://127.0.0.1:$HTTP_PORT/metrics" | grep -q '^smq_slave_in_sync{.*} 1$'; do
    sleep 0.1
  done
  python3 -c "print(round($(date +%s.%N) - $start, 1))"
}

# The producer writes at up to ~400 MB/s here: refuse to fill the disk (other work shares it).
need_mb=$((2 * (LOG_MIB + 2 * DURATION * 400) + 1024))
free_mb=$(df -Pm "$WORK" | awk 'NR == 2 {print $4}')
if [ "$free_mb" -lt "$need_mb" ]; then
  echo "this run needs about $need_mb MB of disk and $free_mb MB are free: lower LOG_MIB or DURATION"; exit 1
fi
echo "# replication copy benchmark: $ROUNDS rounds, log $LOG_MIB MiB, producer $DURATION s, pace ${PACE_BYTES_PER_SEC:-default} B/s, $(nproc) cores, $(uname -r), $(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes')"
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round: dd $(dd_mb_per_s) MB/s, fsync p99 $(fsync_p99_us) us"
  start_master
  bench produce --topic fill --queues 8 --message-bytes 1024 --count $((LOG_MIB * 1000)) >/dev/null
  log_mb=$(curl -s "http://127.0.0.1:$HTTP_PORT/metrics" | awk '/^smq_bytes_in_total/ {sum += $2} END {printf "%d", sum / 1e6}')
  out=$(bench produce --topic p --queues 8 --message-bytes 1024 --duration "$DURATION")
  undisturbed=$(field "$out" "['mb_per_sec']")
  start_slave
  in_sync_file="$WORK/in_sync_s"
  (seconds_until_in_sync >"$in_sync_file") &
  waiter=$!
  out=$(bench produce --topic p --queues 8 --message-bytes 1024 --duration "$DURATION")
  disturbed=$(field "$out" "['mb_per_sec']")
  wait "$waiter"
  copy_s=$(cat "$in_sync_file")
  covered=$(python3 -c "print('the whole run' if $copy_s >= $DURATION else 'only the first $copy_s s of it')")
  kept=$(python3 -c "print(round(100 * $disturbed / $undisturbed))")
  KEPT+=" $kept"
  echo "round $round: log ${log_mb} MB of messages; producer undisturbed $undisturbed MB/s, while an empty slave copies $disturbed MB/s ($kept%); the slave held everything after $copy_s s (the copy overlapped $covered)"
  stop_slave
done
stop_broker
# shellcheck disable=SC2086
echo "summary: while an empty slave copies a $LOG_MIB MiB log (pace ${PACE_BYTES_PER_SEC:-default} B/s), the producer keeps $(python3 -c "import statistics, sys; print(round(statistics.median(map(float, sys.argv[1:]))))" $KEPT)% of its undisturbed throughput (median of $ROUNDS rounds; target >= 70%)"
