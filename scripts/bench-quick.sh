#!/usr/bin/env bash
# The quick benchmark (about 3 minutes): run it before and after any change to storage, server,
# codec or client hot paths, and record both in BENCHMARKS.md with their commits.
#
#   scripts/bench-quick.sh                 # this tree's binaries
#   BASE=f81dbb2 scripts/bench-quick.sh    # also another commit's, built side by side, rounds
#                                          # alternating between the two
#   BASE_BIN=DIR BASE_LABEL=NAME scripts/bench-quick.sh   # the same with binaries built before
#
# Each round: dd (2 GiB, one fdatasync) and the fsync p99 of the moment, then for each build a
# fresh broker: end-to-end latency at 20,000 msg/s (1 KiB, one queue, async flush), produce
# MB/s (async flush, 8 queues), drain MB/s of what was produced, produce with sync flush (32 in
# flight). Loopback bandwidth once. Figures of one round are comparable; rounds show the noise.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-2}
SCALE=${SCALE:-0.25}
PORT=${PORT:-19921}
BASE=${BASE:-}
# shellcheck source=scripts/bench-broker-lib.sh
source scripts/bench-broker-lib.sh
BUILDS=("this:target/release")
if [ -n "${BASE_BIN:-}" ]; then
  # Binaries already built (smq, smq-broker in one directory), e.g. kept from before a change.
  BUILDS+=("${BASE_LABEL:-base}:$BASE_BIN")
elif [ -n "$BASE" ]; then
  base_tree="$PWD/target/base-tree"
  git worktree remove --force "$base_tree" 2>/dev/null || true
  git worktree add --detach --quiet "$base_tree" "$BASE"
  # Every binary of the workspace: before the CLI had its own crate (smq-cli), `smq` was a binary
  # of smq-client, so naming packages would fail on older commits.
  (cd "$base_tree" && cargo build --release --quiet --target-dir "$PWD/../base-target" --bins)
  BUILDS+=("$(git rev-parse --short "$BASE"):target/base-target/release")
fi

bench_cleanup() {
  if [ -n "$BASE" ]; then git worktree remove --force "$PWD/target/base-tree" 2>/dev/null || true; fi
}

echo "# quick benchmark: $ROUNDS rounds, scale $SCALE, $(nproc) cores, $(uname -r), $(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes')"
echo "loopback, one TCP stream: $(loopback_mb_per_s) MB/s"
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round: dd $(dd_mb_per_s) MB/s, fsync p99 $(fsync_p99_us) us"
  for build in "${BUILDS[@]}"; do
    name=${build%%:*} BIN=${build#*:}
    start_broker async
    out=$(bench e2e --topic e --queues 1 --message-bytes 1024 --rate 20000 --duration "$(scaled 40)" --linger-ms 0)
    echo "round $round [$name]: e2e 20000 msg/s 1 queue async: p50 $(field "$out" "['latency_ms']['p50']") ms, p99 $(field "$out" "['latency_ms']['p99']") ms, p99.9 $(field "$out" "['latency_ms']['p99_9']") ms"
    out=$(bench produce --topic p --queues 8 --message-bytes 1024 --count "$(scaled 2000000)")
    echo "round $round [$name]: produce async 8 queues: $(field "$out" "['mb_per_sec']") MB/s"
    out=$(bench consume --topic p --count "$(scaled 2000000)")
    echo "round $round [$name]: drain hot: $(field "$out" "['mb_per_sec']") MB/s"
    start_broker sync
    out=$(bench produce --topic s --queues 8 --message-bytes 1024 --count "$(scaled 400000)" --acks flushed --in-flight 32)
    echo "round $round [$name]: produce sync 32 in flight: $(field "$out" "['mb_per_sec']") MB/s, p99 $(field "$out" "['latency_ms']['p99']") ms"
  done
done
stop_broker
