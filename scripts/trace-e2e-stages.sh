#!/usr/bin/env bash
# Where one e2e message's time goes between the processes, from kernel events rather than from
# the code: while `smq bench e2e` (1 queue, 20,000 msg/s unless RATE says otherwise, --linger-ms 0, --flush async) runs,
# `perf record` takes the scheduler's wake-ups and switches and the socket system calls of the
# broker and the client for a window, and each producer tick (one Produce write) is followed
# through: the client's write of the Produce, the broker's read of it, the broker's write of the
# consumer's Fetch answer, the client's read of that, the client's next Fetch; and before it, the
# wake-up of the producer's loop (the bench's main thread) to the Produce write. Prints each
# stage's p50/p90/p99 in microseconds. The stages depend on the machine's load; run it beside
# the build to compare (BIN, CLIENT_BIN).
#
#   scripts/trace-e2e-stages.sh                     # target/release, a 1 s window
#   BIN=dir CLIENT_BIN=dir WINDOW=1 QUEUES=1 RATE=20000 scripts/trace-e2e-stages.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release}
CLIENT_BIN=${CLIENT_BIN:-$BIN}
WINDOW=${WINDOW:-1}
QUEUES=${QUEUES:-1}
RATE=${RATE:-20000}
PORT=${PORT:-19981}
WORK=$(mktemp -d -p "$PWD/target" trace-e2e.XXXX)
BROKER=
trap 'if [ -n "$BROKER" ]; then kill "$BROKER" 2>/dev/null || true; wait "$BROKER" 2>/dev/null || true; fi; rm -rf "$WORK"' EXIT
"$BIN/smq-broker" --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --flush async --log-level warn >"$WORK/broker.log" 2>&1 &
BROKER=$!
for _ in $(seq 1 200); do
  if "$CLIENT_BIN/smq" --broker "127.0.0.1:$PORT" topic list >/dev/null 2>&1; then break; fi
  sleep 0.05
done
"$CLIENT_BIN/smq" --broker "127.0.0.1:$PORT" bench e2e --json --topic e --queues "$QUEUES" --message-bytes 1024 \
  --rate "$RATE" --duration $((WINDOW + 5)) --linger-ms 0 >"$WORK/e2e.json" 2>/dev/null &
CLIENT=$!
sleep 2.5
perf record -q -o "$WORK/trace.data" -e sched:sched_switch,sched:sched_wakeup,syscalls:sys_enter_writev,syscalls:sys_exit_writev,syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_exit_recvfrom \
  -p "$BROKER,$CLIENT" -- sleep "$WINDOW" 2>/dev/null
wait "$CLIENT"
echo "e2e of the run (traced for ${WINDOW}s of it): $(tail -n 1 "$WORK/e2e.json")"
perf script -i "$WORK/trace.data" -F comm,pid,tid,time,event,trace 2>/dev/null >"$WORK/trace.txt"
python3 - "$WORK/trace.txt" "$BROKER" "$CLIENT" <<'PY'
import bisect, collections, re, sys
path, B, C = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
events, fd_of, wakes = [], {}, []  # (time, pid, kind, fd, bytes); the client main thread's wake-ups
for line in open(path):
    m = re.match(r'\s*\S.*?\s+(\d+)/(\d+)\s+([\d.]+):\s+(\S+):\s*(.*)', line)
    if not m:
        continue
    pid, tid, t, name, rest = int(m[1]), int(m[2]), float(m[3]), m[4], m[5]
    fd = re.search(r'fd: (0x[0-9a-f]+)', rest)
    if name.endswith(('sys_enter_writev', 'sys_enter_recvfrom')):
        fd_of[tid] = int(fd[1], 16)
    elif name.endswith(('sys_exit_writev', 'sys_exit_recvfrom')):
        ret = int(rest.split()[-1], 16)
        events.append((t, pid, 'w' if 'writev' in name else 'r', fd_of.get(tid), ret if ret < 1 << 63 else -1))
    elif name.endswith('sys_enter_sendto'):
        events.append((t, pid, 's', int(fd[1], 16), int(re.search(r'len: (0x[0-9a-f]+)', rest)[1], 16)))
    elif name.endswith('sched_wakeup') and f' pid={C} ' in rest:
        wakes.append(t)
sizes = collections.Counter()
for t, pid, kind, fd, n in events:
    if n > 0:
        sizes[(pid, kind, fd)] += n
def busiest(pid, kind, but=None):
    return max((k for k in sizes if k[0] == pid and k[1] == kind and k[2] != but), key=sizes.get)[2]
produce_c = busiest(C, 'w')            # the client's Produce connection writes the most
fetch_c = busiest(C, 'w', produce_c)   # its other connection: the consumer's Fetches
produce_b, fetch_b = busiest(B, 'r'), busiest(B, 's')
times = [e[0] for e in events]
def after(t, test):
    for e in events[bisect.bisect_left(times, t):]:
        if test(e):
            return e
stages = collections.defaultdict(list)
for w in (e for e in events if e[1] == C and e[2] == 'w' and e[3] == produce_c):
    read = after(w[0], lambda e: e[1] == B and e[2] == 'r' and e[3] == produce_b and e[4] > 0)
    sent = read and after(read[0], lambda e: e[1] == B and e[2] == 's' and e[3] == fetch_b and e[4] > 100)
    got = sent and after(sent[0], lambda e: e[1] == C and e[2] == 'r' and e[3] != produce_c and e[4] > 100)
    if not got:
        continue
    stages['client Produce write -> broker read'].append(read[0] - w[0])
    stages['broker read -> Fetch answer write'].append(sent[0] - read[0])
    stages['Fetch answer write -> client read'].append(got[0] - sent[0])
    stages['client Produce write -> client read'].append(got[0] - w[0])
    again = after(got[0], lambda e: e[1] == C and e[2] == 'w' and e[3] == fetch_c)
    if again:
        stages['client read -> next Fetch write'].append(again[0] - got[0])
for t in wakes:
    w = after(t, lambda e: e[1] == C and e[2] == 'w' and e[3] == produce_c)
    if w and w[0] - t < 0.01:
        stages['producer loop wake-up -> Produce write'].append(w[0] - t)
def q(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p))] * 1e6
for name, v in stages.items():
    print(f'{name:40s} n={len(v):5d}  p50 {q(v, .5):6.0f} us  p90 {q(v, .9):6.0f}  p99 {q(v, .99):6.0f}')
PY
