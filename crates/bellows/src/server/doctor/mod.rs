//! `bellows doctor`: pre-flight checks of what the server would use (the
//! same flags, environment and config file as `bellows server`), each with
//! the remedy when it fails. The server runs the quick ones at start and
//! logs the same warnings (see [`log_at_start`]).

use std::process::ExitCode;
use std::time::Duration;

use bellows_model::api::{BmcView, List};
use clap::Args;

use super::args::{DhcpMode, ServerArgs};
use super::config::{self, ServerConfig};
use crate::client::Client;
use crate::error::CliError;

mod checks;
mod probe;

/// `bellows doctor` options: the server's, plus the probe's.
#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// The server's settings, checked as `bellows server` would use them.
    #[command(flatten)]
    pub server: ServerArgs,
    /// Seconds to listen for other DHCP servers' answers to a probe
    /// (dnsmasq and ISC dhcpd ping an address before offering it: dnsmasq
    /// answers after ~3 s).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=30))]
    pub dhcp_probe_secs: u64,
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Nothing to do.
    Ok,
    /// It works, worse than it could (or might not, depending on intent).
    Warn,
    /// Machines will not boot, or the server will not start.
    Fail,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What was checked.
    pub check: String,
    /// How it came out.
    pub level: Level,
    /// What was found.
    pub message: String,
    /// What to do about it (for warnings and failures).
    pub remedy: Option<String>,
}

impl Finding {
    fn ok(check: impl Into<String>, message: impl Into<String>) -> Finding {
        Finding {
            check: check.into(),
            level: Level::Ok,
            message: message.into(),
            remedy: None,
        }
    }

    fn warn(check: impl Into<String>, message: String, remedy: String) -> Finding {
        Finding {
            check: check.into(),
            level: Level::Warn,
            message,
            remedy: Some(remedy),
        }
    }

    fn fail(check: impl Into<String>, message: String, remedy: String) -> Finding {
        Finding {
            check: check.into(),
            level: Level::Fail,
            message,
            remedy: Some(remedy),
        }
    }
}

/// Runs every check, prints one line per finding (and its remedy), and
/// exits 1 if any failed. `client` reaches a running server for the BMC
/// check, when one answers.
pub async fn run(args: DoctorArgs, client: Option<Client>) -> Result<ExitCode, CliError> {
    let cfg = config::resolve(&args.server).map_err(|e| CliError::Usage(e.to_string()))?;
    let mut findings = Vec::new();
    findings.extend(checks::ports(&cfg));
    findings.extend(checks::interface(&cfg));
    findings.extend(checks::ipv6(&cfg));
    findings.extend(dhcp_servers(&cfg, Duration::from_secs(args.dhcp_probe_secs)).await);
    findings.extend(checks::boot_files(&cfg));
    findings.extend(checks::disk(&cfg));
    findings.extend(checks::clock(&cfg));
    findings.extend(bmcs(client).await);
    for f in &findings {
        let tag = match f.level {
            Level::Ok => "ok  ",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        println!("{tag}  {}: {}", f.check, f.message);
        if let Some(remedy) = &f.remedy {
            println!("        → {remedy}");
        }
    }
    let count = |level| findings.iter().filter(|f| f.level == level).count();
    let (failed, warned) = (count(Level::Fail), count(Level::Warn));
    println!(
        "{} checks: {failed} failed, {warned} warnings",
        findings.len()
    );
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Other DHCP servers on the provisioning interface: a rival in
/// reservation mode, the site's own (expected) in proxy mode.
async fn dhcp_servers(cfg: &ServerConfig, listen: Duration) -> Vec<Finding> {
    let Some(interface) = cfg.interface.as_deref() else {
        return vec![Finding::ok(
            "other DHCP servers",
            "not probed: no --interface names the provisioning network",
        )];
    };
    if cfg.dhcp_mode == DhcpMode::Off {
        return Vec::new();
    }
    let check = format!("other DHCP servers on {interface}");
    let offers = match probe::probe(interface, listen).await {
        Ok(offers) => offers,
        Err(e) => {
            return vec![Finding::warn(
                check,
                format!("not probed: {e}"),
                "run doctor as root, with no DHCP client holding port 68 on this machine".into(),
            )];
        }
    };
    let ours = |o: &probe::Offer| std::net::IpAddr::V4(o.server) == cfg.public_ip;
    let others: Vec<&probe::Offer> = offers.iter().filter(|o| !ours(o) && !o.pxe_only).collect();
    vec![finding_for_offers(
        cfg.dhcp_mode,
        interface,
        &others,
        &check,
    )]
}

fn finding_for_offers(
    mode: DhcpMode,
    interface: &str,
    others: &[&probe::Offer],
    check: &str,
) -> Finding {
    let names = others
        .iter()
        .map(|o| format!("{} (offered {})", o.server, o.offered))
        .collect::<Vec<_>>()
        .join(", ");
    match (mode, others.is_empty()) {
        (DhcpMode::Reservation, true) => {
            Finding::ok(check, "none answered: Bellows alone gives addresses here")
        }
        (DhcpMode::Reservation, false) => Finding::fail(
            check.to_string(),
            format!("another DHCP server answers on {interface}: {names}"),
            "machines may take its offer and never boot from Bellows: stop that server on this segment (or exclude the machines' MACs from it), or run Bellows beside it with --dhcp-mode proxy, or let it do everything with --dhcp-mode off and `bellows dhcp-config`".to_string(),
        ),
        (DhcpMode::Proxy, false) => Finding::ok(
            check,
            format!("the site's server answers ({names}); Bellows adds the boot information"),
        ),
        (DhcpMode::Proxy, true) => Finding::warn(
            check.to_string(),
            "no DHCP server answered".to_string(),
            format!(
                "in proxy mode the site's DHCP server gives the addresses and none answered on {interface}: start it, relay it to this segment, or use --dhcp-mode reservation"
            ),
        ),
        (DhcpMode::Off, _) => Finding::ok(check, "DHCP is off"),
    }
}

/// Each BMC's last poll, from the running server (the poller reads every
/// BMC each minute).
async fn bmcs(client: Option<Client>) -> Vec<Finding> {
    let check = "BMCs";
    let Some(client) = client else {
        return vec![Finding::ok(check, "not checked: no server to ask")];
    };
    let list = match client.get::<List<BmcView>>("/api/v1/bmcs").await {
        Ok(answer) => match answer.decode() {
            Ok(list) => list.items,
            Err(e) => return vec![Finding::ok(check, format!("not checked: {e}"))],
        },
        Err(e) => {
            return vec![Finding::ok(
                check,
                format!("not checked: no server answered ({e})"),
            )];
        }
    };
    if list.is_empty() {
        return vec![Finding::ok(check, "none configured")];
    }
    list.iter()
        .map(|b| {
            let r = &b.record;
            let check = format!("BMC of {} ({} {})", r.hardware_id, r.protocol, r.address);
            match (&r.power_error, &r.power_state) {
                (Some(e), _) => Finding::warn(
                    check,
                    format!("last poll failed: {e}"),
                    "check the BMC's address, that this server reaches its network, and the credentials (`bellows bmc set`)".to_string(),
                ),
                (None, Some(state)) => Finding::ok(check, format!("answers (power {state})")),
                (None, None) => Finding::ok(check, "not polled yet"),
            }
        })
        .collect()
}

/// The checks worth a warning in the server's log at start (the ports it
/// binds itself): the interface, IPv6 on it, boot files, disk and clock,
/// and, in the background, other DHCP servers on the segment.
pub fn log_at_start(cfg: &ServerConfig) {
    let quick = [
        checks::interface(cfg),
        checks::ipv6(cfg),
        checks::disk(cfg),
        checks::clock(cfg),
    ];
    for f in quick.iter().flatten().filter(|f| f.level != Level::Ok) {
        tracing::warn!(
            check = %f.check,
            remedy = f.remedy.as_deref().unwrap_or(""),
            "{}",
            f.message
        );
    }
    if cfg.interface.is_some() && cfg.dhcp_mode != DhcpMode::Off {
        let cfg = cfg.clone();
        tokio::spawn(async move {
            for f in dhcp_servers(&cfg, Duration::from_secs(5)).await {
                if f.level != Level::Ok {
                    tracing::warn!(
                        check = %f.check,
                        remedy = f.remedy.as_deref().unwrap_or(""),
                        "{}",
                        f.message
                    );
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn a_rival_fails_in_reservation_mode_and_is_expected_in_proxy_mode() {
        let rival = probe::Offer {
            server: Ipv4Addr::new(10, 0, 0, 2),
            offered: Ipv4Addr::new(10, 0, 0, 150),
            pxe_only: false,
        };
        let found = finding_for_offers(DhcpMode::Reservation, "br0", &[&rival], "c");
        assert_eq!(found.level, Level::Fail);
        assert!(found.message.contains("10.0.0.2"), "{found:?}");
        assert!(found.remedy.unwrap().contains("--dhcp-mode proxy"));
        let ok = finding_for_offers(DhcpMode::Proxy, "br0", &[&rival], "c");
        assert_eq!(ok.level, Level::Ok);
        let none = finding_for_offers(DhcpMode::Proxy, "br0", &[], "c");
        assert_eq!(none.level, Level::Warn);
    }
}
