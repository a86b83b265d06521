# The physical limits benchmarks are set beside, measured in the same run: sourced by the
# scripts/bench-*.sh scripts (needs $WORK, a scratch directory on the disk under test, and
# `scaled` for dd's size).

# MB/s of dd writing 2 GiB with one fdatasync at the end, timed here.
dd_mb_per_s() {
  local mib; mib=$(scaled 2048)
  python3 - "$WORK/dd.bin" "$mib" <<'PY'
import subprocess, sys, time, os
path, mib = sys.argv[1], int(sys.argv[2])
start = time.perf_counter()
subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={mib}", "conv=fdatasync"],
               check=True, stderr=subprocess.DEVNULL)
print(f"{mib * 1048576 / 1e6 / (time.perf_counter() - start):.0f}")
os.unlink(path)
PY
}

# MB/s of one TCP stream over loopback (1 MiB writes, 4 GiB).
loopback_mb_per_s() {
  python3 - <<'PY'
import socket, threading, time
total = 4 << 30
server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen(1)
def sink():
    conn, _ = server.accept()
    left = total
    while left > 0:
        data = conn.recv(1 << 20)
        if not data: break
        left -= len(data)
    conn.close()
thread = threading.Thread(target=sink); thread.start()
client = socket.create_connection(server.getsockname())
block = b"\0" * (1 << 20)
start = time.perf_counter()
for _ in range(total >> 20):
    client.sendall(block)
client.close(); thread.join()
print(f"{total / 1e6 / (time.perf_counter() - start):.0f}")
PY
}

# p99 of 2,000 fdatasyncs of one 4 KiB write each, in microseconds.
fsync_p99_us() {
  python3 - "$WORK/fsync.bin" <<'PY'
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
block, times = b"\1" * 4096, []
for _ in range(2000):
    os.write(fd, block)
    start = time.perf_counter()
    os.fdatasync(fd)
    times.append(time.perf_counter() - start)
os.close(fd); os.unlink(sys.argv[1])
times.sort()
print(f"{times[int(len(times) * 0.99)] * 1e6:.0f}")
PY
}

# p99 of fdatasync under a broker's sync-flush load: 20 KiB appended and synced every 1 ms (20
# messages of 1 KiB, 20 MB/s) for 10 s into a preallocated file, as `--flush sync` does at
# 20,000 msg/s; in microseconds, "p99 p99.9". The idle-disk figure above is not what a sync
# append waits for while the disk is busy with the same writer.
paced_fsync_us() {
  python3 - "$WORK/paced-fsync.bin" <<'PY'
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
block, times = b"\1" * 20480, []
os.posix_fallocate(fd, 0, 10_000 * len(block))
start = time.perf_counter()
for i in range(10_000):
    due = start + i / 1000
    wait = due - time.perf_counter()
    if wait > 0:
        time.sleep(wait)
    began = time.perf_counter()
    os.write(fd, block)
    os.fdatasync(fd)
    times.append(time.perf_counter() - began)
os.close(fd); os.unlink(sys.argv[1])
times.sort()
print(f"{times[int(len(times) * 0.99)] * 1e6:.0f} {times[int(len(times) * 0.999)] * 1e6:.0f}")
PY
}
