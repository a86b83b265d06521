# What the scripts/bench-*.sh that run one broker under `smq bench` share: sourced after PORT
# is set, and ROUNDS and SCALE where the script's defaults are not 3 rounds at scale 1. Builds the release binaries, makes $WORK (removed on exit, the
# broker stopped), and gives the physical limits (bench-limits.sh) and one broker's start, stop
# and `smq bench` run; $BIN is the directory of the smq-broker and smq binaries. $WORK (the brokers'
# data and logs) is made under target/, or under $WORK_PARENT: WORK_PARENT=/dev/shm keeps the data
# in memory, so that the CPU, not this machine's disk of the hour, is the limit.
ROUNDS=${ROUNDS:-3}
SCALE=${SCALE:-1}
BROKER_PID=
BIN=${BIN:-target/release}
WORK=$(mktemp -d -p "${WORK_PARENT:-$PWD/target}" "bench-$(basename "$0" .sh).XXXX")
cargo build --release --quiet -p smq-broker -p smq-cli --bins
trap 'stop_slave; stop_broker; rm -rf "$WORK"; if declare -F bench_cleanup >/dev/null; then bench_cleanup; fi' EXIT
scaled() { python3 -c "print(max(1, int($1 * $SCALE)))"; }
# shellcheck source=scripts/bench-limits.sh
source scripts/bench-limits.sh

start_broker() { # flush mode, more smq-broker arguments...
  stop_broker
  rm -rf "$WORK/data"
  "$BIN/smq-broker" --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --flush "$1" \
    --log-level warn "${@:2}" >"$WORK/broker.log" 2>&1 &
  BROKER_PID=$!
  for _ in $(seq 1 200); do
    # Its own broker, not one left on the port by another run (this one then fails to bind).
    kill -0 "$BROKER_PID" 2>/dev/null || break
    if "$BIN/smq" --broker "127.0.0.1:$PORT" topic list >/dev/null 2>&1; then return; fi
    sleep 0.05
  done
  echo "the broker did not start:"; cat "$WORK/broker.log"; exit 1
}

stop_broker() {
  if [ -n "$BROKER_PID" ]; then
    kill -TERM "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=
  fi
}

bench() { # mode, extra args...; prints the JSON summary line
  local mode=$1; shift
  "$BIN/smq" --broker "127.0.0.1:$PORT" bench "$mode" --json "$@" 2>/dev/null | tail -n 1
}

field() { python3 -c "import json,sys; d=json.loads(sys.argv[1]); v=eval('d' + sys.argv[2]); print(round(v, 2) if v < 100 else round(v))" "$1" "$2"; }

# A slave of the broker on $PORT, listening on $PORT + 1; returns once the master's /metrics (its
# --http on $PORT + 2) count it in sync. Both use --replication-secret-file "$WORK/secret".
SLAVE_PID=
start_slave() { # flush mode
  stop_slave
  rm -rf "$WORK/slave"
  "$BIN/smq-broker" --listen "127.0.0.1:$((PORT + 1))" --data-dir "$WORK/slave" --flush "$1" \
    --role slave --master "127.0.0.1:$PORT" --replication-secret-file "$WORK/secret" \
    --log-level warn >"$WORK/slave.log" 2>&1 &
  SLAVE_PID=$!
  for _ in $(seq 1 400); do
    if curl -s "http://127.0.0.1:$((PORT + 2))/metrics" | grep -q '^smq_slave_in_sync{.*} 1$'; then return; fi
    sleep 0.05
  done
  echo "the slave did not get in sync:"; cat "$WORK/broker.log" "$WORK/slave.log"; exit 1
}

stop_slave() {
  if [ -n "$SLAVE_PID" ]; then
    kill -TERM "$SLAVE_PID" 2>/dev/null || true
    wait "$SLAVE_PID" 2>/dev/null || true
    SLAVE_PID=
  fi
}

# A broker left running on one of the ports would answer in place of the ones started here.
for port in "$PORT" "$((PORT + 1))" "$((PORT + 2))"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "something already listens on 127.0.0.1:$port (a broker left running?): stop it or set PORT"; exit 1
  fi
done
