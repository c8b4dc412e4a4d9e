//! Starts and stops real `bellows server` processes for tests.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_bellows");

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// What a client needs to talk to a server this test process started.
#[derive(Clone)]
struct Known {
    /// Base URLs: the API and the boot listener (both schemes of the latter).
    bases: Vec<String>,
    token: Option<String>,
    /// The server's own CA certificate (PEM file), when TLS is on.
    ca: Option<PathBuf>,
}

/// The servers this test process started, so `http()`, the CLI and workers
/// can authenticate and trust them.
static SERVERS: std::sync::Mutex<Vec<Known>> = std::sync::Mutex::new(Vec::new());

fn known(url: &str) -> Option<Known> {
    SERVERS
        .lock()
        .ok()?
        .iter()
        .rev()
        .find(|k| {
            k.bases
                .iter()
                .any(|b| !b.is_empty() && url.starts_with(b.as_str()))
        })
        .cloned()
}

/// The admin token of the server at `url` (any URL under its API or boot
/// listener), if this process started it with tokens on.
pub fn token_for(url: &str) -> Option<String> {
    known(url)?.token
}

/// The CA certificate file of the server at `url`, when its TLS is on.
pub fn ca_for(url: &str) -> Option<PathBuf> {
    known(url)?.ca
}

/// The worker service URL for a boot listener URL: `https://` when the
/// server has TLS on.
pub fn worker_url(boot_url: &str) -> String {
    match (ca_for(boot_url), boot_url.strip_prefix("http://")) {
        (Some(_), Some(rest)) => format!("https://{rest}"),
        _ => boot_url.to_string(),
    }
}

/// Every CA certificate of the servers started so far, for HTTP clients.
fn known_cas() -> Vec<reqwest::Certificate> {
    let files: Vec<PathBuf> = SERVERS
        .lock()
        .map(|s| s.iter().filter_map(|k| k.ca.clone()).collect())
        .unwrap_or_default();
    files
        .iter()
        .filter_map(|f| std::fs::read(f).ok())
        .filter_map(|pem| reqwest::Certificate::from_pem(&pem).ok())
        .collect()
}

/// A running server; killed (by PID) when dropped, even if a test fails.
pub struct Server {
    pub child: Child,
    pub url: String,
    /// The admin token the server wrote on its first start (None with
    /// `--insecure`).
    pub token: Option<String>,
    /// The server's own CA certificate (None with `--insecure`).
    pub ca: Option<PathBuf>,
    /// The HTTP boot service (metadata) base URL.
    pub http_url: String,
    /// The syslog receiver's address, when on.
    pub syslog: Option<std::net::SocketAddr>,
    /// The lines it logged until it was ready (start-up warnings).
    pub startup: Vec<String>,
    log: mpsc::Receiver<String>,
}

impl Server {
    /// Starts a server on free loopback ports and waits until it listens.
    pub fn start(data_dir: &Path) -> Server {
        Self::start_with(data_dir, &[])
    }

    /// Like [`Server::start`], with extra `bellows server` arguments.
    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ]);
        Self::spawn(cmd, data_dir, extra)
    }

    /// Like [`Server::start_with`], with the HTTP boot listener (where
    /// workers connect) on a fixed loopback port, so a restarted server is
    /// found again at the same address.
    pub fn start_on(data_dir: &Path, http_port: u16, extra: &[&str]) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.args(["server", "--listen", "127.0.0.1:0", "--http-listen"])
            .arg(format!("127.0.0.1:{http_port}"));
        Self::spawn(cmd, data_dir, extra)
    }

    /// Starts a server inside network namespace `ns`, listening on `ip`.
    pub fn start_in_netns(ns: &str, ip: &str, data_dir: &Path) -> Server {
        Self::start_in_netns_with(
            ns,
            ip,
            data_dir,
            &["--tftp-listen", "off", "--dhcp-mode", "off"],
        )
    }

    /// Like [`Server::start_in_netns`], with the boot services chosen by `extra`.
    pub fn start_in_netns_with(ns: &str, ip: &str, data_dir: &Path, extra: &[&str]) -> Server {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, BIN, "server"])
            .args(["--listen", &format!("{ip}:42113")])
            .args(["--http-listen", &format!("{ip}:8080")])
            .args(["--syslog-listen", &format!("{ip}:514"), "--public-ip", ip]);
        Self::spawn(cmd, data_dir, extra)
    }

    /// Starts a server in lab namespace `ns` for machines on the lab's
    /// bridge `br0` at `ip`: DHCP in `dhcp_mode` on the bridge, TFTP on
    /// `ip:69`, then `extra`.
    pub fn start_on_lab_bridge(
        ns: &str,
        ip: &str,
        data_dir: &Path,
        dhcp_mode: &str,
        extra: &[&str],
    ) -> Server {
        let tftp = format!("{ip}:69");
        let mut args = vec![
            "--dhcp-mode",
            dhcp_mode,
            "--interface",
            "br0",
            "--tftp-listen",
            tftp.as_str(),
        ];
        args.extend_from_slice(extra);
        Self::start_in_netns_with(ns, ip, data_dir, &args)
    }

    fn spawn(mut cmd: Command, data_dir: &Path, extra: &[&str]) -> Server {
        let mut child = cmd
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            // Each DHCP reply too (debug): tests time and check them.
            .env("BELLOWS_LOG", "info,bellows_dhcp::server=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn bellows server");
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let (mut url, mut http_url, mut syslog) = (None, None, None);
        // "boot URLs start with" is logged once every listener is bound.
        let mut ready = false;
        let mut startup = Vec::new();
        while !ready {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => {
                    let _ = child.kill();
                    panic!("server did not report its addresses within 30 s");
                }
            };
            // The URL after `marker` (which ends in "on "), scheme included.
            let addr = |marker: &str| {
                let i = line.find(marker)? + marker.len();
                let rest = &line[i..];
                Some(rest.split_whitespace().next().unwrap_or(rest).to_string())
            };
            eprintln!("server: {line}");
            ready = line.contains("boot URLs start with");
            startup.push(line.clone());
            if let Some(i) = line.find("syslog receiver listening on udp://") {
                let rest = &line[i + "syslog receiver listening on udp://".len()..];
                syslog = rest.split_whitespace().next().and_then(|a| a.parse().ok());
            }
            if let Some(a) = addr("bellows API listening on ") {
                url = Some(a);
            } else if let Some(a) = addr("HTTP boot service (iPXE, metadata) listening on ") {
                http_url = Some(a);
            }
        }
        let url = url.unwrap_or_default();
        let http_url = http_url.unwrap_or_default();
        let token = std::fs::read_to_string(data_dir.join("admin.token"))
            .ok()
            .map(|t| t.trim().to_string());
        let ca = Some(data_dir.join("tls/ca.crt"))
            .filter(|f| url.starts_with("https://") && f.is_file());
        if let Ok(mut servers) = SERVERS.lock() {
            let https_boot = http_url.replacen("http://", "https://", 1);
            servers.push(Known {
                bases: vec![url.clone(), http_url.clone(), https_boot],
                token: token.clone(),
                ca: ca.clone(),
            });
        }
        Server {
            child,
            url,
            token,
            ca,
            http_url,
            syslog,
            startup,
            log: rx,
        }
    }

    /// Waits for a server log line containing `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// Every log line printed since the last read.
    pub fn drain_log(&self) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(100));
        self.log.try_iter().collect()
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait up to 15 s for the exit status; returns it with
    /// the log lines the server printed.
    pub fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                // The reader thread ends at EOF; give it a moment to drain.
                let mut lines = Vec::new();
                while let Ok(line) = self.log.recv_timeout(Duration::from_secs(2)) {
                    lines.push(line);
                }
                return (status, lines);
            }
            assert!(Instant::now() < deadline, "server ignored SIGTERM for 15 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Pushes (through the CLI in `ns`) a machine `name` whose one NIC `mac`
    /// has reserved address `ip`/24 with `gateway` as its router, may run
    /// workflows, and may network-boot when `allow_pxe`.
    pub fn push_machine(
        &self,
        ns: &str,
        name: &str,
        mac: &str,
        ip: &str,
        gateway: &str,
        allow_pxe: bool,
    ) {
        let hw = serde_json::json!({"id": name, "network": {"interfaces": [{
            "dhcp": {"mac": mac, "hostname": name, "lease_time": 600,
                     "ip": {"address": ip, "netmask": "255.255.255.0", "gateway": gateway}},
            "netboot": {"allow_pxe": allow_pxe, "allow_workflow": true}}]},
            "metadata": {"instance": {"hostname": name}}});
        ok(&self.cli_netns(
            ns,
            &["hardware", "push", "-f", "-"],
            Some(hw.to_string().as_bytes()),
        ));
    }

    /// Runs the CLI against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_stdin(args, None)
    }

    /// Runs the CLI with `stdin` piped in.
    pub fn cli_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        self.cli_in(Command::new(BIN), args, stdin)
    }

    /// Runs the CLI inside network namespace `ns`.
    pub fn cli_netns(&self, ns: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, BIN]);
        self.cli_in(cmd, args, stdin)
    }

    fn cli_in(&self, mut cmd: Command, args: &[&str], stdin: Option<&[u8]>) -> Output {
        use std::io::Write;
        let mut child = cmd
            .args(args)
            .env("BELLOWS_URL", &self.url)
            .envs(self.token.iter().map(|t| ("BELLOWS_TOKEN", t)))
            .envs(self.ca.iter().map(|c| ("BELLOWS_CA", c)))
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn bellows cli");
        if let Some(bytes) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(bytes)
                .expect("write stdin");
        }
        child.wait_with_output().expect("cli output")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// stdout as text, asserting the command succeeded.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "command failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An HTTP client for tests. The workspace builds reqwest with
/// `rustls-no-provider` (Redfish uses rustls on ring), so a crypto provider
/// must be installed before any client is built, as the binary does.
pub fn client_builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder();
    for ca in known_cas() {
        builder = builder.add_root_certificate(ca);
    }
    builder
}

/// A blocking HTTP call with a JSON (or raw) body: (status, parsed body);
/// a body that is not JSON by its content type (`/metrics`' text) comes
/// back as a string, and one that claims JSON but is not fails the test.
pub fn http(method: &str, url: &str, body: Option<&[u8]>) -> (u16, serde_json::Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = client_builder().build().expect("client");
        let mut req = client.request(method.parse().expect("method"), url);
        if let Some(token) = token_for(url) {
            req = req.bearer_auth(token);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_vec());
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let json = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_none_or(|v| v.starts_with("application/json"));
        let bytes = resp.bytes().await.expect("body");
        let value = if bytes.is_empty() {
            serde_json::Value::Null
        } else if !json {
            serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!(
                    "non-JSON response {status}: {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        (status, value)
    })
}

/// Percent-encodes one URL path segment: the CLI's own encoder.
pub use bellows::client::segment;

/// The hex SHA-256 of a PEM certificate, as openssl (not our code)
/// computes it: what `bellows.ca=` must carry.
pub fn openssl_fingerprint(pem: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(pem)
        .output()
        .expect("run openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text
        .trim()
        .rsplit('=')
        .next()
        .unwrap_or_default()
        .replace(':', "")
        .to_lowercase();
    assert_eq!(hex.len(), 64, "openssl said {text:?}");
    hex
}

/// Runs `bellows server` expecting it to refuse to start: its exit status
/// and what it printed. Bounded: killed after 30 s.
pub fn server_refuses(data_dir: &Path, extra: &[&str]) -> String {
    let mut child = Command::new(BIN)
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .args([
            "--tftp-listen",
            "off",
            "--syslog-listen",
            "off",
            "--dhcp-mode",
            "off",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bellows server");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("server output");
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}
