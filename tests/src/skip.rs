//! Tests that cannot run on this machine say so, never pass silently: under `scripts/test.sh`
//! (README's test command, which sets [`SKIP_LOG_ENV`]) such a test is recorded with its reason
//! and the run ends with the list; under a plain `cargo test` it fails with the reason.

use std::io::Write;

/// The file `scripts/test.sh` collects skipped tests in: one line each, `test<TAB>reason`.
pub const SKIP_LOG_ENV: &str = "SMQ_TEST_SKIP_LOG";

/// Call when the running test cannot run here for `reason` (e.g. "mounting a tmpfs needs root"),
/// then return from the test. Under `scripts/test.sh` it records the test and its reason;
/// otherwise it panics with `reason`, so that `cargo test` alone never counts a test that did
/// not run as passed.
pub fn cannot_run(reason: &str) {
    let test = test_name();
    let Some(log) = std::env::var_os(SKIP_LOG_ENV) else {
        panic!(
            "{test} cannot run here: {reason}\n(scripts/test.sh runs the tests that can and \
             lists the ones that cannot, with why)"
        );
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap_or_else(|e| panic!("opening {SKIP_LOG_ENV}={}: {e}", log.to_string_lossy()));
    // One write per line: parallel tests append whole lines.
    file.write_all(format!("{test}\t{}\n", reason.replace(['\t', '\n'], " ")).as_bytes())
        .unwrap_or_else(|e| panic!("writing {}: {e}", log.to_string_lossy()));
    eprintln!("skipped {test}: {reason}");
}

/// Raises this process's soft limit of open files (which the processes it starts inherit) to at
/// least `count`, up to the hard limit, which needs no privilege. Returns false, after
/// [`cannot_run`], when the hard limit is lower (raising it needs root: `ulimit -Hn`,
/// /etc/security/limits.conf).
pub fn open_files_at_least(count: u64) -> bool {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        panic!("getrlimit: {}", std::io::Error::last_os_error());
    }
    if limit.rlim_cur >= count {
        return true;
    }
    if limit.rlim_max < count {
        cannot_run(&format!(
            "it needs {count} open files and the hard limit is {} (raise it as root: ulimit -Hn, \
             /etc/security/limits.conf)",
            limit.rlim_max
        ));
        return false;
    }
    limit.rlim_cur = count;
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        panic!(
            "setrlimit(RLIMIT_NOFILE, {count}): {}",
            std::io::Error::last_os_error()
        );
    }
    true
}

/// `binary::module::test`: the test harness names each test's thread after the test.
fn test_name() -> String {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|stem| match stem.rsplit_once('-') {
            // Cargo's test binaries end with `-<hash>`.
            Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_owned(),
            _ => stem,
        })
        .unwrap_or_default();
    let test = std::thread::current()
        .name()
        .unwrap_or("an unnamed test")
        .to_owned();
    format!("{binary}::{test}")
}
