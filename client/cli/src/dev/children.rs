//! The server processes `smq dev` runs: found next to the `smq` executable or on PATH, started
//! with their log in the data directory, stopped with SIGTERM (SIGKILL after a deadline) or
//! killed to show a failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long a server may take to stop after SIGTERM before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// Where `name` (`smq-broker`, `smq-nameserver`) is: beside the running `smq`, else on PATH.
pub(crate) fn find_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot tell where the smq executable is")?;
    let beside = exe.with_file_name(name);
    if beside.is_file() {
        return Ok(beside);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file());
    match on_path {
        Some(path) => Ok(path),
        None => bail!(
            "cannot find {name} next to {} or on PATH: build the servers too, with \
             `cargo build --release --bins` (or `cargo install --path broker` and \
             `cargo install --path nameserver`)",
            exe.display()
        ),
    }
}

/// One running server.
pub(crate) struct Server {
    /// `ns1`, `broker-a master`, ...
    pub name: String,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Server {
    /// Starts `program args`, its stdout and stderr appended to `log`, with no `SMQ_*`
    /// variable of this shell (its flags say everything) and, on Linux, SIGTERM when `smq dev`
    /// dies, so that no server outlives it.
    pub fn start(
        name: &str,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> anyhow::Result<Server> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open the log file {}", log.display()))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .env("SMQ_LOG_LEVEL", "info")
            .env("NO_COLOR", "1");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SMQ_") && key != "SMQ_LOG_LEVEL" {
                command.env_remove(key);
            }
        }
        // Its own process group: a Ctrl-C in the terminal reaches `smq dev` only, which then
        // stops the servers in order.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        #[cfg(target_os = "linux")]
        // SAFETY: prctl is async-signal-safe and touches only the child being started. The
        // signal follows the thread that spawned: `smq dev` starts servers from its main thread.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {name} ({})", program.display()))?;
        Ok(Server {
            name: name.to_owned(),
            log: log.to_owned(),
            child: Some(child),
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The last lines of its log, to explain why it stopped.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// SIGKILL, as a crash would; waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within [`STOP_TIMEOUT`]. Says whether it
    /// stopped cleanly.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        // SAFETY: a plain syscall on a child we have not reaped, so the pid is still ours.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return false;
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
