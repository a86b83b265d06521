#!/usr/bin/env bash
# README's test command, and what .ci/run runs: every test of the workspace, on a fresh Debian
# machine with only the Rust toolchain, as root or not.
#
#   scripts/test.sh                       # cargo test --workspace --no-fail-fast
#   scripts/test.sh -p smq-broker storage # other arguments go to cargo test instead of --workspace
#
# 1. Installs what the tests need beyond Rust: bind9 and bind9-dnsutils (a real named and
#    nsupdate for tests/tests/dns_bind9.rs), through apt-get when it can (as root, or with
#    passwordless sudo); otherwise it says exactly what to install and those tests do not run.
# 2. Installs kubernetes-validate from PyPI (it bundles the Kubernetes schemas, so the test that
#    validates deploy/kubernetes runs offline) in a virtualenv in the target directory, and
#    points the test at it with SMQ_KUBERNETES_VALIDATE; python3-venv comes from apt-get when
#    missing, as above.
# 3. Runs the tests with SMQ_TEST_SKIP_LOG set: a test that cannot run here (bind9 missing; the
#    two storage tests that mount a small tmpfs without root) records itself and why
#    (tests/src/skip.rs) instead of failing, as it would under a plain `cargo test`.
# 4. Ends with one summary line (passed, failed, not run, as which user) and the tests not run,
#    grouped by reason. Exit status: cargo's; with CI=true a test not run is a failure too.
set -euo pipefail
cd "$(dirname "$0")/.."

uid=$(id -u)
if [[ $uid == 0 ]]; then who="root"; else who="uid $uid, not root"; fi

# Debian packages for the programs the tests run; sbin may be off a non-root PATH.
have() { command -v "$1" >/dev/null || [[ -x /usr/sbin/$1 || -x /sbin/$1 ]]; }
packages=()
have named || packages+=(bind9)
have nsupdate || packages+=(bind9-dnsutils)
have mount || packages+=(util-linux)
python3 -c 'import ensurepip, venv' 2>/dev/null || packages+=(python3-venv)
if ((${#packages[@]})); then
    apt=()
    if ! command -v apt-get >/dev/null; then
        :
    elif [[ $uid == 0 ]]; then
        apt=(env DEBIAN_FRONTEND=noninteractive apt-get)
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        apt=(sudo -n env DEBIAN_FRONTEND=noninteractive apt-get)
    fi
    if ((${#apt[@]})); then
        echo "scripts/test.sh: installing ${packages[*]} with apt-get"
        "${apt[@]}" update -q || echo "scripts/test.sh: apt-get update failed" >&2
        "${apt[@]}" install -y -q --no-install-recommends "${packages[@]}" ||
            echo "scripts/test.sh: installing ${packages[*]} failed: the tests that need them will not run" >&2
    else
        echo "scripts/test.sh: ${packages[*]} missing, and this user ($who, no passwordless sudo) cannot install them." >&2
        echo "  To run every test, first run as root: apt-get install -y ${packages[*]}" >&2
        echo "  Now the tests that need them are listed at the end as not run." >&2
    fi
fi

# kubernetes-validate for tests/tests/deploy.rs (the version its KUBERNETES_VALIDATE names).
validator_venv=${CARGO_TARGET_DIR:-target}/kubernetes-validate-1.37.0
if [[ ! -x $validator_venv/bin/kubernetes-validate ]]; then
    echo "scripts/test.sh: installing kubernetes-validate==1.37.0 from PyPI into $validator_venv"
    rm -rf "$validator_venv"
    { python3 -m venv "$validator_venv" &&
        "$validator_venv/bin/pip" install -q --disable-pip-version-check kubernetes-validate==1.37.0; } ||
        echo "scripts/test.sh: installing kubernetes-validate failed: the Kubernetes schema test will not run" >&2
fi
if [[ -x $validator_venv/bin/kubernetes-validate ]]; then
    SMQ_KUBERNETES_VALIDATE=$(cd "$validator_venv/bin" && pwd)/kubernetes-validate
    export SMQ_KUBERNETES_VALIDATE
fi

skip_log=$(mktemp)
output=$(mktemp)
trap 'rm -f "$skip_log" "$output"' EXIT
export SMQ_TEST_SKIP_LOG=$skip_log

args=("$@")
((${#args[@]})) || args=(--workspace --no-fail-fast)
set +e
cargo test "${args[@]}" 2>&1 | tee "$output"
status=${PIPESTATUS[0]}
set -e

# Sum cargo's "test result: ok. 12 passed; 0 failed; 1 ignored; ..." lines.
read -r passed failed ignored < <(awk '/^test result:/ {
        for (i = 2; i <= NF; i++) {
            if ($i ~ /^passed;/) p += $(i - 1)
            if ($i ~ /^failed;/) f += $(i - 1)
            if ($i ~ /^ignored;/) g += $(i - 1)
        }
    } END { print p + 0, f + 0, g + 0 }' "$output")
not_run=$(wc -l <"$skip_log")
# A test that did not run returned early, so cargo counted it as passed.
passed=$((passed - not_run))

echo
echo "scripts/test.sh summary: $passed passed, $failed failed, $not_run not run, $ignored ignored (as $who)"
if ((not_run)); then
    echo "Not run, by reason:"
    awk -F'\t' '{ count[$2]++; tests[$2] = tests[$2] "    " $1 "\n" }
        END { for (r in count) printf "  %d test(s): %s\n%s", count[r], r, tests[r] }' "$skip_log"
    if [[ ${CI:-} == true ]]; then
        echo "CI=true: every test must run here" >&2
        ((status)) || status=1
    fi
fi
if ((status)) && ((failed == 0)); then
    echo "cargo test failed before running every test (exit $status): see above" >&2
fi
exit "$status"
