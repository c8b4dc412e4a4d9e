//! What operators watch Bellows with. `GET /metrics` judged by Debian's
//! real Prometheus: after a small boot
//! storm (DHCP, TFTP, HTTP, workers), Prometheus scrapes the API over TLS
//! with a viewer token, and its query API must hold every series the
//! server promises, with the values the storm implies; every query of the
//! Grafana dashboard in `contrib/grafana/` must run and return data. And
//! `--log-format json`: every line an object a log shipper can index. And
//! `bellows doctor` against a rogue dnsmasq and IPv6 switched off.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bellows_testkit::packages::ensure_installed;
use bellows_testkit::process::{ChildGuard, run_checked, wait_for, wait_until};

use crate::harness::{BIN, ok};
use crate::storm::{StormRun, boot_storm};

const MACHINES: usize = 6;
/// Prometheus' web port, on the server namespace's own loopback.
const PROMETHEUS: &str = "127.0.0.1:19090";

/// Every series the server exports, by the name Prometheus stores.
const SERIES: &[&str] = &[
    "bellows_dhcp_received_total",
    "bellows_dhcp_replies_total",
    "bellows_dhcp_dropped_total",
    "bellows_dhcp_send_errors_total",
    "bellows_tftp_requests_total",
    "bellows_tftp_transfers_total",
    "bellows_tftp_refused_total",
    "bellows_tftp_duplicate_requests_total",
    "bellows_tftp_malformed_total",
    "bellows_tftp_data_bytes_total",
    "bellows_tftp_active_transfers",
    "bellows_syslog_messages_total",
    "bellows_http_requests_total",
    "bellows_http_request_seconds_bucket",
    "bellows_workflows",
    "bellows_action_seconds_bucket",
    "bellows_action_seconds_count",
    "bellows_connected_workers",
    "bellows_timeline_dropped_total",
    "bellows_bmc_polls_total",
    "bellows_store_commit_seconds_bucket",
];

/// Runs a PromQL query through Prometheus' HTTP API (inside `ns`); the
/// result vector, or the failure as text.
fn query(ns: &str, expr: &str) -> Result<Vec<serde_json::Value>, String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-sS", "--max-time", "10", "-G"])
        .arg(format!("http://{PROMETHEUS}/api/v1/query"))
        .arg("--data-urlencode")
        .arg(format!("query={expr}"))
        .output()
        .map_err(|e| format!("curl: {e}"))?;
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "{expr}: not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if body["status"] != "success" {
        return Err(format!("{expr}: {body}"));
    }
    Ok(body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// The single number `expr` evaluates to (summed over its series).
fn value(ns: &str, expr: &str) -> f64 {
    let result = query(ns, expr).unwrap_or_else(|e| panic!("{e}"));
    result
        .iter()
        .filter_map(|r| r["value"][1].as_str()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn prometheus_scrapes_every_series_after_a_storm_and_the_dashboard_queries_answer() {
    if !Path::new("/usr/bin/prometheus").exists() && std::env::var_os("CI").is_none() {
        eprintln!("skipped: no prometheus (apt install prometheus)");
        return;
    }
    let prometheus = ensure_installed("prometheus", "prometheus");
    let Some(StormRun { server, lab, work }) = boot_storm(MACHINES, "met") else {
        return;
    };
    let ns = lab.server_ns.clone();

    // Prometheus needs no more than a viewer's token.
    let token = ok(&server.cli_netns(
        &ns,
        &[
            "token",
            "create",
            "--name",
            "prometheus",
            "--role",
            "viewer",
        ],
        None,
    ));
    let dir = work.path().join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("token"), token.trim()).unwrap();
    let ca = work.path().join("data/tls/ca.crt");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: bellows\n    scheme: https\n\
         \x20   tls_config:\n      ca_file: {ca}\n\
         \x20   authorization:\n      type: Bearer\n      credentials_file: {token}\n\
         \x20   static_configs:\n      - targets: ['10.88.0.1:42113']\n",
        ca = ca.display(),
        token = dir.join("token").display(),
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let log = dir.join("prometheus.log");
    let config_arg = format!("--config.file={}", dir.join("prometheus.yml").display());
    let storage_arg = format!("--storage.tsdb.path={}", dir.join("data").display());
    let listen_arg = format!("--web.listen-address={PROMETHEUS}");
    let mut peer = ChildGuard::spawn_in(
        &ns,
        &[&prometheus, &config_arg, &storage_arg, &listen_arg],
        &log,
    );
    wait_until(Duration::from_secs(60), "prometheus", &log, || {
        peer.assert_running(&log);
        query(&ns, "up").is_ok_and(|r| !r.is_empty())
    });

    // The scrape itself: Prometheus parsed our exposition and stored it.
    let scraped = wait_for(Duration::from_secs(30), || {
        value(&ns, r#"up{job="bellows"}"#) == 1.0
            && value(&ns, r#"bellows_workflows{state="SUCCESS"}"#) == MACHINES as f64
    });
    let targets = Command::new("ip")
        .args(["netns", "exec", &ns, "curl", "-sS", "--max-time", "10"])
        .arg(format!("http://{PROMETHEUS}/api/v1/targets"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(
        scraped,
        "Prometheus did not scrape the storm's workflows; its targets: {targets}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    for series in SERIES {
        let found = query(&ns, series).unwrap_or_else(|e| panic!("{e}"));
        assert!(!found.is_empty(), "Prometheus holds no {series}");
    }

    // What the storm implies. Each machine: DHCP as firmware (offer + ack
    // with a TFTP boot file), then as iPXE (offer + ack with the script);
    // one TFTP transfer; three actions, each reported finished once.
    let n = MACHINES as f64;
    let acks = |boot: &str| {
        value(
            &ns,
            &format!(r#"bellows_dhcp_replies_total{{message_type="ack",boot="{boot}"}}"#),
        )
    };
    assert!(acks("tftp") >= n, "firmware ACKs: {}", acks("tftp"));
    assert!(acks("script") >= n, "iPXE ACKs: {}", acks("script"));
    let completed = value(&ns, r#"bellows_tftp_transfers_total{outcome="completed"}"#);
    assert!(completed >= n, "TFTP transfers completed: {completed}");
    assert!(value(&ns, "bellows_tftp_data_bytes_total") > 0.0);
    let actions = value(&ns, r#"bellows_action_seconds_count{outcome="success"}"#);
    assert_eq!(actions, 3.0 * n, "successful actions recorded");
    let failed = value(&ns, r#"bellows_action_seconds_count{outcome="failed"}"#);
    assert_eq!(failed, 0.0, "failed actions recorded");
    // The script, kernel and initramfs of every machine came from the boot
    // listener with 2xx.
    let boot_ok = value(
        &ns,
        r#"sum(bellows_http_requests_total{listener="boot",status=~"2.."})"#,
    );
    assert!(boot_ok >= 3.0 * n, "boot listener 2xx: {boot_ok}");
    // Every report and credential went through a commit.
    let commits = value(&ns, "bellows_store_commit_seconds_count");
    assert!(commits > 0.0, "store commits: {commits}");
    // The storm is over: nobody holds a stream, nothing is running.
    assert_eq!(value(&ns, "bellows_connected_workers"), 0.0);
    assert_eq!(value(&ns, "bellows_tftp_active_transfers"), 0.0);
    assert_eq!(value(&ns, r#"bellows_workflows{state="RUNNING"}"#), 0.0);

    // The dashboard: valid JSON with panels, every query accepted by this
    // Prometheus and answering with data ($__rate_interval is Grafana's;
    // 30 s spans many 1 s scrapes here).
    // A rate needs two scrapes in its window.
    assert!(wait_for(Duration::from_secs(30), || value(
        &ns,
        r#"count_over_time(up{job="bellows"}[30s])"#
    ) >= 3.0));
    let file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/grafana/bellows-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let panels = dashboard["panels"].as_array().cloned().unwrap_or_default();
    assert!(panels.len() >= 10, "{} panels", panels.len());
    let mut exprs = 0;
    for panel in &panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            let expr = expr.replace("$__rate_interval", "30s");
            let result = query(&ns, &expr).unwrap_or_else(|e| {
                panic!("panel {:?}: {e}", panel["title"]);
            });
            assert!(
                !result.is_empty(),
                "panel {:?}: {expr} answers nothing",
                panel["title"]
            );
            exprs += 1;
        }
    }
    assert!(exprs >= panels.len());
    drop(peer);
    drop(server);
    drop(lab);
}

#[test]
fn json_logs_are_one_object_per_line_with_fields_at_the_top() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(BIN);
    command
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .args([
            "--dhcp-mode",
            "off",
            "--tftp-listen",
            "off",
            "--syslog-listen",
            "off",
        ])
        .args(["--log-format", "json", "--data-dir"])
        .arg(dir.path())
        .env_remove("BELLOWS_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut server = ChildGuard::adopt("bellows server", child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !lines
        .iter()
        .any(|l: &String| l.contains("boot URLs start with"))
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => panic!("no start-up line within 30 s: {lines:#?}"),
        }
    }
    assert!(server.try_wait().is_none());
    for line in &lines {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for key in ["timestamp", "level", "target", "message"] {
            assert!(event.get(key).is_some(), "no {key}: {line}");
        }
    }
    // An event's fields sit beside the message, not nested.
    let listening = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("bellows API listening on https://127.0.0.1:"))
        })
        .unwrap_or_else(|| panic!("no API line: {lines:#?}"));
    assert_eq!(listening["level"], "INFO");
    assert_eq!(
        listening["data_dir"].as_str(),
        Some(dir.path().to_str().unwrap()),
        "{listening}"
    );
}

/// Runs `bellows doctor` inside `ns` with `args`; (exit code, stdout).
fn doctor(ns: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, BIN, "doctor", "--dhcp-probe-secs", "5"])
        .args(args)
        .output()
        .expect("run bellows doctor");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), stdout)
}

/// `bellows doctor` on a lab network: a rogue DHCP server (Debian's
/// dnsmasq, answering everyone) fails the check in reservation mode, with
/// the way out in the message, and is what proxy mode expects; IPv6
/// switched off on the provisioning bridge is a warning that explains the
/// 13 s iPXE waits, and the server logs the same warning at start.
#[test]
fn doctor_finds_a_rogue_dhcp_server_and_ipv6_switched_off() {
    use bellows_testkit::netns::{Lab, can_run};

    if !can_run() {
        assert!(std::env::var_os("CI").is_none(), "CI runs as root");
        return;
    }
    let dnsmasq = ensure_installed("dnsmasq", "dnsmasq-base");
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let mut lab = Lab::new("doc", "10.91.0.1/24");
    let ns = lab.server_ns.clone();
    let common = [
        "--interface",
        "br0",
        "--public-ip",
        "10.91.0.1",
        "--listen",
        "10.91.0.1:0",
        "--http-listen",
        "10.91.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let with = |mode: &'static str| {
        let mut args: Vec<&str> = common.to_vec();
        args.extend(["--dhcp-mode", mode]);
        args
    };

    // Alone on the segment: nothing to say about DHCP or IPv6.
    let (_, alone) = doctor(&ns, &with("reservation"));
    assert!(
        alone.contains("ok    other DHCP servers on br0: none answered"),
        "{alone}"
    );
    assert!(alone.contains("ok    IPv6 on br0: usable"), "{alone}");
    assert!(
        alone.contains("ok    interface br0: holds 10.91.0.1"),
        "{alone}"
    );

    // A rogue server on a host of the segment.
    let rogue = lab.host("rog").addr("10.91.0.2/24").add();
    let conf = work.path().join("rogue.conf");
    std::fs::write(
        &conf,
        format!(
            "interface={}\nbind-interfaces\nport=0\nno-resolv\nno-hosts\n\
             dhcp-range=10.91.0.100,10.91.0.200,255.255.255.0,10m\n\
             dhcp-leasefile={}\npid-file={}\n",
            rogue.ifname,
            work.path().join("rogue.leases").display(),
            work.path().join("rogue.pid").display(),
        ),
    )
    .unwrap();
    let log = work.path().join("rogue.log");
    let conf_arg = format!("--conf-file={}", conf.display());
    let mut peer = ChildGuard::spawn_in(&rogue.ns, &[&dnsmasq, "-k", &conf_arg], &log);
    std::thread::sleep(Duration::from_millis(500));
    peer.assert_running(&log);

    let (code, found) = doctor(&ns, &with("reservation"));
    assert_eq!(code, 1, "a rival DHCP server is a failure:\n{found}");
    assert!(
        found.contains("FAIL  other DHCP servers on br0: another DHCP server answers on br0: 10.91.0.2 (offered 10.91.0.1"),
        "{found}"
    );
    assert!(found.contains("--dhcp-mode proxy"), "{found}");
    let (_, proxy) = doctor(&ns, &with("proxy"));
    assert!(
        proxy.contains("ok    other DHCP servers on br0: the site's server answers (10.91.0.2"),
        "{proxy}"
    );
    drop(peer);

    // IPv6 off on the provisioning bridge.
    run_checked(
        Command::new("ip").args([
            "netns",
            "exec",
            &ns,
            "sysctl",
            "-qw",
            "net.ipv6.conf.br0.disable_ipv6=1",
        ]),
        "sysctl",
    );
    let (code, off) = doctor(&ns, &with("reservation"));
    assert_eq!(code, 0, "a warning is not a failure:\n{off}");
    assert!(
        off.contains("WARN  IPv6 on br0: IPv6 is disabled on br0"),
        "{off}"
    );
    assert!(
        off.contains("sysctl -w net.ipv6.conf.br0.disable_ipv6=0") && off.contains("~13 s"),
        "{off}"
    );
    // The server says the same when it starts.
    let server = crate::harness::Server::start_in_netns_with(
        &ns,
        "10.91.0.1",
        &work.path().join("server"),
        &["--interface", "br0", "--tftp-listen", "off"],
    );
    assert!(
        server
            .startup
            .iter()
            .any(|l| l.contains("WARN") && l.contains("IPv6 is disabled on br0")),
        "the server did not warn about IPv6 at start: {:#?}",
        server.startup
    );
    drop(server);
    drop(lab);
}
