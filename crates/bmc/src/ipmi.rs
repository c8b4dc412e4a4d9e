//! IPMI over LAN (RMCP+) through `ipmitool -I lanplus`, as bmclib does.
//!
//! The pure half (argument lists, output parsing, failure classification) is
//! tested on recorded ipmitool text; the IO half runs one bounded `ipmitool`
//! process per operation. The password travels in the `IPMI_PASSWORD`
//! environment variable (`-E`), never on the command line where `ps` shows it.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::error::{BmcError, redact, truncate};
use crate::types::{BootDevice, BootOverride, Credentials, PowerAction, PowerState};

/// The IPMI-over-LAN default port.
pub const DEFAULT_IPMI_PORT: u16 = 623;

/// How `ipmitool` is run; the defaults make an unreachable BMC fail in about
/// two seconds per cipher suite tried.
#[derive(Debug, Clone)]
pub struct IpmiSettings {
    /// The `ipmitool` program.
    pub ipmitool: PathBuf,
    /// Cipher suites to try in order (`-C`): 3 (HMAC-SHA1/AES) is what most
    /// BMCs accept, 17 (HMAC-SHA256/AES) what newer ones require.
    pub cipher_suites: Vec<u8>,
    /// ipmitool's per-packet wait in seconds (`-N`).
    pub retransmit_timeout_secs: u32,
    /// ipmitool's retries per packet (`-R`).
    pub retries: u32,
    /// Hard bound on one ipmitool run; the process is killed past it.
    pub process_timeout: Duration,
}

impl Default for IpmiSettings {
    fn default() -> Self {
        IpmiSettings {
            ipmitool: PathBuf::from("ipmitool"),
            cipher_suites: vec![3, 17],
            retransmit_timeout_secs: 1,
            retries: 1,
            process_timeout: Duration::from_secs(15),
        }
    }
}

/// What an ipmitool failure means, read from its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpmiFailure {
    /// The BMC rejected the user name or password (RAKP errors).
    Auth,
    /// Nothing answered (no reply to the first request, name lookup failed).
    Unreachable,
    /// The RMCP+ session could not be opened for another reason, e.g. the
    /// cipher suite is not offered: worth retrying with the next one.
    Session,
    /// The session was up and the BMC refused the command itself.
    Command,
}

/// Classifies ipmitool's combined output of a failed run.
pub fn classify_failure(output: &str) -> IpmiFailure {
    let text = output.to_ascii_lowercase();
    const AUTH: [&str; 6] = [
        "hmac is invalid",
        "unauthorized name",
        "invalid name",
        "rakp 2 message indicates an error",
        "rakp 4 message indicates an error",
        "password",
    ];
    const UNREACHABLE: [&str; 5] = [
        "get auth capabilities error",
        "error issuing get channel authentication capabilities",
        "no response from remote controller",
        "address lookup for",
        "connection refused",
    ];
    if AUTH.iter().any(|needle| text.contains(needle)) {
        IpmiFailure::Auth
    } else if UNREACHABLE.iter().any(|needle| text.contains(needle)) {
        IpmiFailure::Unreachable
    } else if text.contains("unable to establish")
        || text.contains("open session")
        || text.contains("rakp")
        || text.contains("cipher suite")
    {
        IpmiFailure::Session
    } else {
        IpmiFailure::Command
    }
}

/// Reads `chassis power status` output ("Chassis Power is on"); `None` when
/// the text has no power line at all.
pub fn parse_power_status(stdout: &str) -> Option<PowerState> {
    stdout.lines().find_map(|line| {
        let line = line.trim().to_ascii_lowercase();
        let rest = line.strip_prefix("chassis power is")?.trim();
        Some(match rest {
            "on" => PowerState::On,
            "off" => PowerState::Off,
            _ => PowerState::Unknown,
        })
    })
}

/// The `chassis power …` arguments for an action.
pub fn power_arguments(action: PowerAction) -> Vec<String> {
    let verb = match action {
        PowerAction::On => "on",
        PowerAction::Off => "off",
        PowerAction::SoftOff => "soft",
        PowerAction::Cycle => "cycle",
        PowerAction::Reset => "reset",
    };
    vec!["chassis".into(), "power".into(), verb.into()]
}

/// The `chassis bootdev …` arguments for a device and its options.
pub fn bootdev_arguments(device: BootDevice, options: BootOverride) -> Vec<String> {
    let mut arguments = vec![
        "chassis".to_owned(),
        "bootdev".to_owned(),
        device.to_string(),
    ];
    let mut flags = Vec::new();
    if options.efi {
        flags.push("efiboot");
    }
    if options.persistent {
        flags.push("persistent");
    }
    if !flags.is_empty() {
        arguments.push(format!("options={}", flags.join(",")));
    }
    arguments
}

/// A BMC spoken to over IPMI-over-LAN with ipmitool.
#[derive(Debug, Clone)]
pub struct IpmiClient {
    host: String,
    port: u16,
    credentials: Credentials,
    settings: IpmiSettings,
}

impl IpmiClient {
    /// Prepares a client; no network traffic happens until an operation.
    pub fn new(
        host: &str,
        port: Option<u16>,
        credentials: Credentials,
        settings: IpmiSettings,
    ) -> Result<Self, BmcError> {
        let host = host.trim();
        if host.is_empty()
            || host.starts_with('-')
            || host.contains("://")
            || host.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(BmcError::Config(format!(
                "IPMI address {host:?} must be a bare host name or IP address"
            )));
        }
        if settings.cipher_suites.is_empty() {
            return Err(BmcError::Config("no IPMI cipher suite to try".into()));
        }
        Ok(IpmiClient {
            host: host.to_owned(),
            port: port.unwrap_or(DEFAULT_IPMI_PORT),
            credentials,
            settings,
        })
    }

    /// Reads the chassis power state.
    pub async fn power_status(&self) -> Result<PowerState, BmcError> {
        let operation = "power status";
        let stdout = self
            .run(
                operation,
                &["chassis".into(), "power".into(), "status".into()],
            )
            .await?;
        parse_power_status(&stdout).ok_or_else(|| BmcError::Protocol {
            address: self.host.clone(),
            operation: operation.into(),
            detail: format!(
                "unexpected ipmitool output {:?}",
                truncate(&self.scrub(&stdout), 200)
            ),
        })
    }

    /// Requests a power change. Cycle and reset of a machine that is off
    /// power it on instead, since BMCs refuse them in that state.
    pub async fn power(&self, action: PowerAction) -> Result<(), BmcError> {
        let action = match action {
            PowerAction::Cycle | PowerAction::Reset
                if self.power_status().await? == PowerState::Off =>
            {
                PowerAction::On
            }
            other => other,
        };
        self.run(&format!("power {action}"), &power_arguments(action))
            .await
            .map(drop)
    }

    /// Sets the next boot device.
    pub async fn set_boot_device(
        &self,
        device: BootDevice,
        options: BootOverride,
    ) -> Result<(), BmcError> {
        self.run(
            &format!("boot device {device}"),
            &bootdev_arguments(device, options),
        )
        .await
        .map(drop)
    }

    /// Runs ipmitool with each cipher suite in turn until one opens a
    /// session, returning its standard output.
    async fn run(&self, operation: &str, command: &[String]) -> Result<String, BmcError> {
        let mut first_error = None;
        for &suite in &self.settings.cipher_suites {
            match self.run_once(operation, command, suite).await {
                Ok(stdout) => return Ok(stdout),
                Err((IpmiFailure::Session, error)) | Err((IpmiFailure::Auth, error)) => {
                    tracing::debug!(host = %self.host, suite, %error, "ipmitool session failed");
                    // A wrong password beats "cipher suite not offered".
                    let keep_new = matches!(error, BmcError::AuthFailed { .. })
                        && !matches!(first_error, Some(BmcError::AuthFailed { .. }));
                    if first_error.is_none() || keep_new {
                        first_error = Some(error);
                    }
                }
                Err((_, error)) => return Err(error),
            }
        }
        Err(first_error.unwrap_or_else(|| BmcError::Config("no IPMI cipher suite to try".into())))
    }

    async fn run_once(
        &self,
        operation: &str,
        command: &[String],
        suite: u8,
    ) -> Result<String, (IpmiFailure, BmcError)> {
        let mut process = Command::new(&self.settings.ipmitool);
        process
            .args(["-v", "-I", "lanplus", "-H", &self.host])
            .args(["-p", &self.port.to_string()])
            .args(["-U", &self.credentials.username, "-E"])
            .args(["-C", &suite.to_string()])
            .args(["-N", &self.settings.retransmit_timeout_secs.to_string()])
            .args(["-R", &self.settings.retries.to_string()])
            .args(command)
            .env("IPMI_PASSWORD", self.credentials.password.expose())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = process.spawn().map_err(|error| {
            (
                IpmiFailure::Command,
                BmcError::Config(format!(
                    "cannot run {}: {error} (install the ipmitool package)",
                    self.settings.ipmitool.display()
                )),
            )
        })?;
        // Dropping the wait on timeout drops the child, which kill_on_drop
        // kills (SIGKILL) and tokio reaps.
        let output =
            match tokio::time::timeout(self.settings.process_timeout, child.wait_with_output())
                .await
            {
                Ok(Ok(output)) => output,
                Ok(Err(error)) => {
                    return Err((
                        IpmiFailure::Command,
                        self.protocol_error(operation, &format!("ipmitool failed: {error}")),
                    ));
                }
                Err(_) => {
                    return Err((
                        IpmiFailure::Unreachable,
                        BmcError::Timeout {
                            address: self.host.clone(),
                            operation: operation.into(),
                            after: self.settings.process_timeout,
                        },
                    ));
                }
            };
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            return Ok(stdout);
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let combined = format!("{stderr}\n{stdout}");
        let failure = classify_failure(&combined);
        let detail = self.failure_detail(&combined, suite);
        let error = match failure {
            IpmiFailure::Auth => BmcError::AuthFailed {
                address: self.host.clone(),
                username: self.credentials.username.clone(),
                detail,
            },
            IpmiFailure::Unreachable => BmcError::Unreachable {
                address: format!("{}:{}", self.host, self.port),
                operation: operation.into(),
                detail,
            },
            IpmiFailure::Session | IpmiFailure::Command => self.protocol_error(operation, &detail),
        };
        Err((failure, error))
    }

    /// The meaningful lines of ipmitool's output, without the verbose noise.
    fn failure_detail(&self, combined: &str, suite: u8) -> String {
        let lines: Vec<&str> = combined
            .lines()
            .map(str::trim)
            .filter(|line| {
                !line.is_empty()
                    && !line.starts_with("Loading IANA")
                    && !line.starts_with("Running Get")
                    && !line.eq_ignore_ascii_case("Unable to Get Channel Cipher Suites")
            })
            .collect();
        let text = if lines.is_empty() {
            "ipmitool failed without a message".to_owned()
        } else {
            lines.join("; ")
        };
        format!(
            "{} (cipher suite {suite})",
            truncate(&self.scrub(&text), 300)
        )
    }

    fn protocol_error(&self, operation: &str, detail: &str) -> BmcError {
        BmcError::Protocol {
            address: self.host.clone(),
            operation: operation.into(),
            detail: self.scrub(detail),
        }
    }

    fn scrub(&self, text: &str) -> String {
        redact(text, self.credentials.password.expose())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_power_lines() {
        assert_eq!(
            parse_power_status("Chassis Power is on\n"),
            Some(PowerState::On)
        );
        assert_eq!(
            parse_power_status("Discovered IPMB address 0x0\n  chassis power is OFF  \n"),
            Some(PowerState::Off)
        );
        assert_eq!(
            parse_power_status("Chassis Power is flaky"),
            Some(PowerState::Unknown)
        );
        assert_eq!(parse_power_status("Set Boot Device to pxe"), None);
        assert_eq!(parse_power_status(""), None);
    }

    #[test]
    fn classifies_recorded_failures() {
        // ipmitool 1.8.19 -v against ipmi_sim with a wrong password.
        let wrong_password = "Loading IANA PEN Registry...\n> RAKP 2 HMAC is invalid\n\
                              Error: Unable to establish IPMI v2 / RMCP+ session";
        assert_eq!(classify_failure(wrong_password), IpmiFailure::Auth);
        // A BMC that does not know the user.
        let unknown_user = "> RAKP 2 message indicates an error : unauthorized name\n\
                            Error: Unable to establish IPMI v2 / RMCP+ session";
        assert_eq!(classify_failure(unknown_user), IpmiFailure::Auth);
        // Nothing listening on the port.
        let silent = "Loading IANA PEN Registry...\nGet Auth Capabilities error\n\
                      Error issuing Get Channel Authentication Capabilities request\n\
                      Error: Unable to establish IPMI v2 / RMCP+ session";
        assert_eq!(classify_failure(silent), IpmiFailure::Unreachable);
        // ipmi_sim offered cipher suite 17, which it does not implement.
        let cipher = "Error in open session response message : invalid authentication algorithm\n\
                      Error: Unable to establish IPMI v2 / RMCP+ session";
        assert_eq!(classify_failure(cipher), IpmiFailure::Session);
        let refused = "Set Chassis Power Control to Soft failed: Unspecified error";
        assert_eq!(classify_failure(refused), IpmiFailure::Command);
    }

    #[test]
    fn builds_arguments() {
        assert_eq!(
            power_arguments(PowerAction::SoftOff),
            ["chassis", "power", "soft"]
        );
        assert_eq!(
            bootdev_arguments(
                BootDevice::Pxe,
                BootOverride {
                    efi: true,
                    persistent: true
                }
            ),
            ["chassis", "bootdev", "pxe", "options=efiboot,persistent"]
        );
        assert_eq!(
            bootdev_arguments(BootDevice::Disk, BootOverride::default()),
            ["chassis", "bootdev", "disk"]
        );
    }

    #[test]
    fn refuses_addresses_that_could_be_options() {
        let credentials = Credentials::new("admin", "pw");
        for bad in ["-o evil", "", "http://x", "a b"] {
            assert!(
                IpmiClient::new(bad, None, credentials.clone(), IpmiSettings::default()).is_err(),
                "{bad:?} accepted"
            );
        }
    }
}
