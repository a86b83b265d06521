#!/usr/bin/env bash
# README's `cargo install` lines, checked as a user runs them (--locked; the release profile
# unless INSTALL_PROFILE names another): the three binaries install into a fresh root, and the
# installed `smq dev`, started from there with nothing of the checkout on PATH, finds the
# installed servers beside it, runs the whole local cluster and stops it on SIGTERM. .ci/run runs
# it after the tests.
#
#   scripts/install-check.sh                       # builds into target/release (shared with README's first command)
#   INSTALL_PROFILE=test scripts/install-check.sh  # CI: the test profile, reusing what the tests built
#
# The release profile compiles everything a third time after clippy and the tests (10 minutes on
# 2 cores from an empty target directory); with INSTALL_PROFILE=test the same three installs
# (the same code, lock file and per-package features) reuse the tests' build and take about 4.
set -euo pipefail
cd "$(dirname "$0")/.."

root=$(mktemp -d)
log=$(mktemp)
dev_pid=
cleanup() {
    [[ -n $dev_pid ]] && kill "$dev_pid" 2>/dev/null || true
    rm -rf "$root" "$log"
}
trap cleanup EXIT

# One target directory for the three, so that they share the dependencies' release builds.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
profile=${INSTALL_PROFILE:-release}
started=$SECONDS
for crate in client/cli broker nameserver; do
    cargo install --quiet --locked --path "$crate" --root "$root" --profile "$profile"
done
echo "scripts/install-check.sh: cargo install of smq, smq-broker and smq-nameserver ($profile profile) took $((SECONDS - started)) s"
for binary in smq smq-broker smq-nameserver; do
    "$root/bin/$binary" --version >/dev/null
done

# The installed smq dev, on ports of its own, with only the install root and the system on PATH.
base=$((20000 + RANDOM % 20000))
PATH="$root/bin:/usr/bin:/bin" smq dev --base-port "$base" >"$log" 2>&1 </dev/null &
dev_pid=$!
for _ in $(seq 600); do
    grep -q "Ctrl-C stops everything." "$log" && break
    kill -0 "$dev_pid" 2>/dev/null || break
    sleep 0.1
done
if ! grep -q "Ctrl-C stops everything." "$log"; then
    echo "scripts/install-check.sh: the installed smq dev did not start within 60 s:" >&2
    cat "$log" >&2
    exit 1
fi
kill -TERM "$dev_pid"
status=0
wait "$dev_pid" || status=$?
dev_pid=
if ((status)); then
    echo "scripts/install-check.sh: the installed smq dev exited with $status on SIGTERM:" >&2
    cat "$log" >&2
    exit 1
fi
echo "scripts/install-check.sh: the installed smq dev ran its cluster (base port $base) and stopped on SIGTERM"
