#!/usr/bin/env bash
# Many queues on one broker (issue 14, point 4): 1,000 topics x 10 queues against one topic of
# 8 queues on the same broker, produce MB/s for each in pairs of runs seconds apart (1 KiB
# messages, async flush, one producer, the default sticky queues), then what the
# 10,000 queues cost: disk of the indexes, memory mappings, open files, and the broker's start
# time with them. dd and loopback are measured in the same run.
#
#   scripts/bench-queues.sh            # 3 rounds of 4 pairs, 2-4 minutes a round
#   PAIRS=6 ROUNDS=1 scripts/bench-queues.sh
#   BROKER_ARGS="--max-mapped-index-files 4096" scripts/bench-queues.sh   # more broker flags
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-19961}
PAIRS=${PAIRS:-4}
# shellcheck source=scripts/bench-broker-lib.sh
source scripts/bench-broker-lib.sh

produce() { # topic, topics, queues per topic; prints MB/s
  local out
  out=$(bench produce --topic "$1" --topics "$2" --queues "$3" --message-bytes 1024 --count "$(scaled 1000000)")
  field "$out" "['mb_per_sec']"
}

echo "# many queues: $ROUNDS rounds of $PAIRS pairs, $(nproc) cores, $(uname -r), $(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes')"
echo "loopback, one TCP stream: $(loopback_mb_per_s) MB/s"
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round: dd $(dd_mb_per_s) MB/s"
  # shellcheck disable=SC2086
  start_broker async ${BROKER_ARGS:-}
  created=$(date +%s.%N)
  # 16,000 messages: `smq bench` sends runs of 16 messages per topic, so every topic (and, one
  # message to each queue in turn, every queue) gets its index files before the measured runs,
  # which use the default producer (sticky queues). The producer knows every route before it
  # sends (smq bench looks them up first), so its first requests carry thousands of queues'
  # first appends, each making an index file: on a slow disk one request takes longer than the
  # default 10 s attempt timeout, hence the longer timeouts here.
  bench produce --topic q --topics 1000 --queues 10 --message-bytes 1024 --count 16000 \
    --sticky-queue-bytes 0 --attempt-timeout-ms 60000 --send-timeout-ms 120000 >/dev/null
  echo "round $round: 1,000 topics x 10 queues created and written in $(python3 -c "import time; print(round(time.time() - $created, 1))") s"
  # Both topics on the same broker (10,008 queues), in pairs whose order alternates: the disk's
  # write-back state moves each figure by +-20% from one minute to the next, so a ratio is only
  # taken between runs seconds apart, and the median of the pairs is reported.
  ratios=()
  for pair in $(seq 1 "$PAIRS"); do
    if [ $((pair % 2)) -eq 1 ]; then
      few=$(produce p 1 8); many=$(produce q 1000 10)
    else
      many=$(produce q 1000 10); few=$(produce p 1 8)
    fi
    ratio=$(python3 -c "print(round(100 * $many / $few))")
    ratios+=("$ratio")
    echo "round $round pair $pair: produce 1 topic x 8 queues: $few MB/s, 1,000 topics x 10 queues: $many MB/s, ratio $ratio%"
  done
  echo "round $round: median ratio $(printf '%s\n' "${ratios[@]}" | sort -n | python3 -c "import sys, statistics; print(statistics.median(int(l) for l in sys.stdin))")%"
  echo "round $round: with 10,000 queues: index files $(find "$WORK/data/index" -type f | wc -l), \
index disk $(du -s --block-size=1M "$WORK/data/index" | cut -f1) MiB (apparent $(du -s --apparent-size --block-size=1M "$WORK/data/index" | cut -f1) MiB), \
mappings $(wc -l < "/proc/$BROKER_PID/maps") ($(grep -c '/index/' "/proc/$BROKER_PID/maps") of index files), \
open files $(find "/proc/$BROKER_PID/fd" -mindepth 1 | wc -l), \
resident $(awk '/VmRSS/{print $2}' "/proc/$BROKER_PID/status") KiB"
  stop_broker
  started=$(date +%s.%N)
  # shellcheck disable=SC2086
  "$BIN/smq-broker" --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --flush async \
    --log-level warn ${BROKER_ARGS:-} >"$WORK/broker.log" 2>&1 &
  BROKER_PID=$!
  until "$BIN/smq" --broker "127.0.0.1:$PORT" topic list >/dev/null 2>&1; do sleep 0.01; done
  echo "round $round: restart with 10,000 queues (clean shutdown) answers after $(python3 -c "import time; print(round(time.time() - $started, 2))") s"
  stop_broker
done
