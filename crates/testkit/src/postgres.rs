//! A throwaway PostgreSQL from Debian's `postgresql` package, for the store
//! tests on the PostgreSQL backend and the replica tests.
//!
//! CI starts one server for the whole run (`scripts/postgres-test-server.sh`
//! exports `BELLOWS_TEST_POSTGRES`); each test then takes a database of its
//! own on it. Without that variable (one test run by hand) the test starts
//! a private server in a temporary directory, on a free loopback port, and
//! stops it when done. As root, the server runs as the `postgres` user the
//! package made (PostgreSQL refuses to run as root).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::netns::is_root;
use crate::packages::apt_install;
use crate::ports::free_tcp_port;
use crate::process::{ChildGuard, run_checked, wait_for};

/// The variable naming a server the run started (its admin URL).
pub const SERVER_VAR: &str = "BELLOWS_TEST_POSTGRES";

/// The superuser the test servers are made with (trust authentication,
/// loopback only).
const SUPERUSER: &str = "bellows";

/// A PostgreSQL server this test started.
pub struct TestServer {
    /// Its data directory, sockets and log.
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
    postmaster: Option<ChildGuard>,
}

impl TestServer {
    /// Initialises and starts a private server.
    pub fn start() -> TestServer {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("bellows-test-pg-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temporary directory: {e}"));
        as_server_user_owns(dir.path());
        let data = dir.path().join("data");
        run_checked(
            server_user(&bin.join("initdb"))
                .args([
                    "--no-sync",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "-U",
                    SUPERUSER,
                    "-D",
                ])
                .arg(&data),
            "initdb",
        );
        let mut server = TestServer {
            port: free_tcp_port(),
            dir,
            bin,
            postmaster: None,
        };
        server.run_postmaster();
        server
    }

    fn run_postmaster(&mut self) {
        let log = self.dir.path().join("postgres.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let err = out.try_clone().unwrap_or_else(|e| panic!("log: {e}"));
        let mut guard = ChildGuard::spawn(
            "postgres",
            server_user(&self.bin.join("postgres"))
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-k"])
                .arg(self.dir.path())
                // A test database: speed over durability across OS crashes.
                .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
                .args(["-c", "max_connections=300"])
                .stdout(out)
                .stderr(err),
        );
        let url = self.admin_url();
        let ready = wait_for(Duration::from_secs(30), || {
            guard.try_wait().is_none() && psql(&url, "SELECT 1").status.success()
        });
        guard.assert_running(&log);
        assert!(
            ready,
            "postgres did not accept connections in 30 s; see {}",
            log.display()
        );
        self.postmaster = Some(guard);
    }

    /// The URL of its `postgres` database, as the superuser.
    pub fn admin_url(&self) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/postgres", self.port)
    }

    /// A fresh database on this server; its URL.
    pub fn database(&self) -> String {
        create_database(&self.admin_url())
    }

    /// Stops the server the way an operator's restart or a crash would:
    /// `fast` (SIGINT, sessions cut, a clean shutdown) or not (SIGKILL of
    /// the postmaster: recovery at the next start).
    pub fn stop(&mut self, fast: bool) {
        if let Some(mut guard) = self.postmaster.take() {
            if fast {
                run_checked(
                    server_user(&self.bin.join("pg_ctl"))
                        .args(["stop", "-m", "fast", "-w", "-t", "30", "-D"])
                        .arg(self.dir.path().join("data")),
                    "pg_ctl stop",
                );
                guard.wait_timeout(Duration::from_secs(10));
            }
            drop(guard);
        }
    }

    /// Starts it again on the same port, with the same data.
    pub fn restart(&mut self) {
        self.stop(true);
        self.run_postmaster();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // A fast shutdown, so no backend outlives the test; then the
        // directory goes with the TempDir.
        if self.postmaster.is_some() {
            let _ = server_user(&self.bin.join("pg_ctl"))
                .args(["stop", "-m", "immediate", "-w", "-t", "10", "-D"])
                .arg(self.dir.path().join("data"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// A database of its own for one test, on the run's server or a private one.
pub struct TestDatabase {
    /// The URL the store opens.
    pub url: String,
    /// Held while the database is used, when the test started its server.
    pub server: Option<TestServer>,
}

impl TestDatabase {
    /// The same database over the server's Unix socket: servers in a
    /// network namespace reach it there (sockets in the file system are
    /// not confined to a namespace, loopback ports are). The server is
    /// asked where its socket is, so this works on the run's server and on
    /// a private one alike.
    pub fn unix_socket_url(&self) -> String {
        let out = psql(&self.url, "SHOW unix_socket_directories");
        let dirs = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "SHOW unix_socket_directories: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dir = dirs.split(',').map(str::trim).find(|d| d.starts_with('/'));
        let dir = dir.unwrap_or_else(|| panic!("the server has no Unix socket: {dirs:?}"));
        // The port names the socket file (.s.PGSQL.PORT): keep it.
        format!("{}?host={dir}", self.url)
    }
}

/// A fresh, empty database.
pub fn database() -> TestDatabase {
    let (admin, server) = match std::env::var(SERVER_VAR) {
        Ok(url) if !url.is_empty() => (url, None),
        _ => {
            let server = TestServer::start();
            (server.admin_url(), Some(server))
        }
    };
    TestDatabase {
        url: create_database(&admin),
        server,
    }
}

/// Creates a database no other test uses on the server of `admin` (a URL
/// of one of its databases, as a superuser); its URL.
fn create_database(admin: &str) -> String {
    let name = unique_name();
    let out = psql(admin, &format!("CREATE DATABASE {name}"));
    assert!(
        out.status.success(),
        "CREATE DATABASE {name} on {admin}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("{admin:?} has no database path"),
    }
}

/// A database name no other test (in this or another process) uses.
fn unique_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "t{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs one statement with Debian's `psql` (a client we did not write).
pub fn psql(url: &str, sql: &str) -> std::process::Output {
    Command::new("psql")
        .args([
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run psql: {e}"))
}

/// The newest PostgreSQL's programs, installing the package if none is.
fn bin_dir() -> PathBuf {
    let newest = || -> Option<PathBuf> {
        let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| {
                let e = e.ok()?;
                let version = e.file_name().to_str()?.parse::<u32>().ok()?;
                let bin = e.path().join("bin");
                bin.join("postgres").exists().then_some((version, bin))
            })
            .collect();
        dirs.sort();
        dirs.pop().map(|(_, bin)| bin)
    };
    if let Some(bin) = newest() {
        return bin;
    }
    apt_install(&["postgresql", "postgresql-client"]);
    newest().unwrap_or_else(|| panic!("postgresql installed but no /usr/lib/postgresql/*/bin"))
}

/// `program` as the user PostgreSQL runs as: this one, or `postgres` when
/// this is root. The server dies with the test (a parent-death signal),
/// even if the test process is killed before it can stop it.
fn server_user(program: &Path) -> Command {
    let mut command = Command::new("setpriv");
    if is_root() {
        command.args(["--reuid=postgres", "--regid=postgres", "--init-groups"]);
    }
    command.args(["--pdeathsig=KILL", "--"]).arg(program);
    command
}

/// Hands `dir` to the `postgres` user when this is root.
fn as_server_user_owns(dir: &Path) {
    if is_root() {
        run_checked(
            Command::new("chown").arg("postgres:postgres").arg(dir),
            "chown the test server's directory",
        );
    }
}
