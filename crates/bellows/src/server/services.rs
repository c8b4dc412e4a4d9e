//! The server's long-running tasks and how they stop: every service runs
//! until one fails or a signal asks them all to stop, and a shutdown waits
//! a bounded time for open connections before it cuts them.

use crate::error::CliError;

/// How long a shutdown waits for open connections (worker streams, HTTP
/// requests) to finish before it closes them: a worker on a machine that
/// hung or lost power never answers, and would otherwise hold the server
/// up until systemd's `kill -9`, which skips closing the store.
pub const SHUTDOWN_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// The server's long-running tasks, by name, so a shutdown can say which
/// ones it had to cut.
#[derive(Default)]
pub struct Services {
    tasks: tokio::task::JoinSet<Result<(), String>>,
    names: std::collections::HashMap<tokio::task::Id, String>,
}

impl Services {
    pub fn spawn(
        &mut self,
        name: impl Into<String>,
        task: impl Future<Output = Result<(), String>> + Send + 'static,
    ) {
        let handle = self.tasks.spawn(task);
        self.names.insert(handle.id(), name.into());
    }

    /// Waits for every task. A task that fails ends the server with its
    /// error. Once `stop` resolves, the tasks get `drain` to finish; what
    /// is left then is aborted and logged (with the workers whose streams
    /// were still open, from `workers`), and the shutdown goes on.
    pub async fn run_until_drained(
        mut self,
        stop: impl Future<Output = ()>,
        drain: std::time::Duration,
        workers: impl Fn() -> Vec<String>,
    ) -> Result<(), CliError> {
        tokio::pin!(stop);
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let cut_off = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                done = self.tasks.join_next_with_id() => match done {
                    None => return Ok(()),
                    Some(Ok((id, Ok(())))) => {
                        self.names.remove(&id);
                    }
                    Some(Ok((_, Err(e)))) => return Err(CliError::Server(e)),
                    Some(Err(e)) => {
                        let name = self.names.remove(&e.id()).unwrap_or_default();
                        return Err(CliError::Server(format!("{name} task failed: {e}")));
                    }
                },
                () = &mut stop, if deadline.is_none() => {
                    deadline = Some(tokio::time::Instant::now() + drain);
                }
                () = cut_off => {
                    let mut left: Vec<&str> = self.names.values().map(String::as_str).collect();
                    left.sort_unstable();
                    let workers = workers();
                    tracing::warn!(
                        services = ?left,
                        workers = ?workers,
                        "shutdown: connections still open after {} s (a worker or client that stopped answering); closing them",
                        drain.as_secs()
                    );
                    self.tasks.abort_all();
                    while self.tasks.join_next().await.is_some() {}
                    return Ok(());
                }
            }
        }
    }
}
