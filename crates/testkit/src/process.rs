//! Processes a test starts (peers, emulators, daemons): killed by PID when
//! their guard drops, so a failing test leaves none behind; and bounded
//! waits, so a peer that never becomes ready fails the test instead of
//! hanging it.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A child process, killed (SIGKILL, this PID only) and reaped when
/// dropped, even when the test panics.
pub struct ChildGuard {
    child: Child,
    name: String,
}

impl ChildGuard {
    /// Starts `command` with stdin closed; `name` says what it is in
    /// messages.
    pub fn spawn(name: &str, command: &mut Command) -> ChildGuard {
        let child = command
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {name}: {error}"));
        ChildGuard::adopt(name, child)
    }

    /// Runs `args` inside network namespace `ns` (with `ip netns exec`),
    /// stdout and stderr to `log`, for peers that must sit on a lab network.
    pub fn spawn_in(ns: &str, args: &[&str], log: &Path) -> ChildGuard {
        let out = File::create(log).expect("log file");
        let err = out.try_clone().expect("log file");
        ChildGuard::spawn(
            args[0],
            Command::new("ip")
                .args(["netns", "exec", ns])
                .args(args)
                .stdout(out)
                .stderr(err),
        )
    }

    /// Guards a child started elsewhere (one whose pipes the caller set up
    /// or already read from).
    pub fn adopt(name: &str, child: Child) -> ChildGuard {
        ChildGuard {
            child,
            name: name.to_string(),
        }
    }

    /// What it is, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its exit status if it has exited, without waiting.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits, without a bound, for the process to exit (a VM that was told
    /// to power off); its status, or None if it cannot be waited for.
    pub fn wait(&mut self) -> Option<ExitStatus> {
        self.child.wait().ok()
    }

    /// Waits up to `limit` for the process to exit; its status if it did.
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_for(limit, || {
            status = self.try_wait();
            status.is_some()
        });
        status
    }

    /// Fails the test with `log` if the process already exited: a peer
    /// that refused its configuration is reported at once, with its
    /// reason, instead of as a timeout later.
    pub fn assert_running(&mut self, log: &Path) {
        if let Some(status) = self.try_wait() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{} exited early ({status}):\n{text}", self.name);
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` every `every` until it holds (true) or `limit` passes
/// (false); `cond` is always asked at least once.
fn poll(limit: Duration, every: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// Polls `cond` every 50 ms for at most `limit`; whether it came true. For
/// tests that assert on the outcome themselves.
pub fn wait_for(limit: Duration, cond: impl FnMut() -> bool) -> bool {
    poll(limit, Duration::from_millis(50), cond)
}

/// Polls `check` every 100 ms until it holds; after `limit`, fails the test
/// with `what` and the peer's `log`, which usually says why it is not
/// ready.
pub fn wait_until(limit: Duration, what: &str, log: &Path, check: impl FnMut() -> bool) {
    if !poll(limit, Duration::from_millis(100), check) {
        let log = std::fs::read_to_string(log).unwrap_or_default();
        panic!("{what} not ready after {limit:?}; its log:\n{log}");
    }
}

/// Runs `command` (a build script, a peer's tool) to completion and
/// returns its stdout, failing the test with its status and output if it
/// fails; `what` names it in the message.
pub fn run_checked(command: &mut Command, what: &str) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
