//! What a BMC is asked and how far it got: power actions and states, boot
//! devices, and a job's steps. The BMC client (`bellows-bmc`) executes
//! them, the API sends them, the CLI prints them: one definition for all.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The machine's power as the BMC reports it; `Unknown` when the BMC answers
/// with something we cannot read (e.g. Redfish `PoweringOn`), so callers keep
/// polling instead of guessing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerState {
    /// The host is powered.
    On,
    /// The host is powered off.
    Off,
    /// The BMC answered, but not with a state we understand.
    Unknown,
}

impl fmt::Display for PowerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PowerState::On => "on",
            PowerState::Off => "off",
            PowerState::Unknown => "unknown",
        })
    }
}

/// A power change to request; each backend maps it to its own verb
/// (ipmitool `chassis power …`, Redfish `ResetType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerAction {
    /// Power on.
    On,
    /// Hard power off, like holding the power button.
    Off,
    /// Ask the operating system to shut down (ACPI), which it may ignore.
    SoftOff,
    /// Power off, then on again.
    Cycle,
    /// Hard reset without removing power.
    Reset,
}

impl PowerAction {
    /// The wire spelling (`soft_off`), as the API sends it and the CLI
    /// prints it in job tables.
    pub fn as_str(self) -> &'static str {
        match self {
            PowerAction::On => "on",
            PowerAction::Off => "off",
            PowerAction::SoftOff => "soft_off",
            PowerAction::Cycle => "cycle",
            PowerAction::Reset => "reset",
        }
    }

    /// The power state the machine should settle in once the action has
    /// landed; the job executor polls for it because BMCs apply changes late.
    pub fn expected_state(self) -> PowerState {
        match self {
            PowerAction::On | PowerAction::Cycle | PowerAction::Reset => PowerState::On,
            PowerAction::Off | PowerAction::SoftOff => PowerState::Off,
        }
    }
}

impl fmt::Display for PowerAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PowerAction::On => "on",
            PowerAction::Off => "off",
            PowerAction::SoftOff => "soft-off",
            PowerAction::Cycle => "cycle",
            PowerAction::Reset => "reset",
        })
    }
}

/// The device the machine should boot from next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootDevice {
    /// Network boot (PXE), what provisioning needs.
    Pxe,
    /// The first local disk.
    Disk,
    /// The firmware setup screen.
    Bios,
    /// The optical drive, or virtual media mounted as one.
    Cdrom,
}

impl fmt::Display for BootDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BootDevice::Pxe => "pxe",
            BootDevice::Disk => "disk",
            BootDevice::Bios => "bios",
            BootDevice::Cdrom => "cdrom",
        })
    }
}

/// How the boot device override applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BootOverride {
    /// Boot in UEFI mode rather than legacy BIOS.
    pub efi: bool,
    /// Keep the override for every boot, not only the next one.
    pub persistent: bool,
}

/// One thing a job asks of a BMC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Operation {
    /// Request a power change, then poll until the power state matches.
    Power {
        /// The change.
        action: PowerAction,
    },
    /// Set the next boot device.
    SetBootDevice {
        /// The device.
        device: BootDevice,
        /// EFI and persistence.
        #[serde(default)]
        options: BootOverride,
    },
    /// Mount an ISO image (Redfish only).
    InsertVirtualMedia {
        /// Where the BMC downloads the image from.
        image_url: String,
    },
    /// Unmount the virtual media (Redfish only).
    EjectVirtualMedia,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operation::Power { action } => write!(f, "power {action}"),
            Operation::SetBootDevice { device, options } => {
                write!(f, "boot device {device}")?;
                if options.efi {
                    f.write_str(" efi")?;
                }
                if options.persistent {
                    f.write_str(" persistent")?;
                }
                Ok(())
            }
            Operation::InsertVirtualMedia { image_url } => {
                write!(f, "insert virtual media {image_url}")
            }
            Operation::EjectVirtualMedia => f.write_str("eject virtual media"),
        }
    }
}

/// Where a step is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Not started.
    Pending,
    /// Being executed.
    Running,
    /// Done.
    Succeeded,
    /// Failed; its `error` says why.
    Failed,
    /// Not run because an earlier step failed.
    Skipped,
}

/// A job's step: its operation, state and error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// What to do.
    pub operation: Operation,
    /// How far it got.
    pub state: StepState,
    /// Why it failed (never contains the password: errors cannot hold it).
    pub error: Option<String>,
}

impl StepState {
    /// The wire spelling, which the CLI also prints.
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running => "running",
            StepState::Succeeded => "succeeded",
            StepState::Failed => "failed",
            StepState::Skipped => "skipped",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_actions_print_as_they_are_sent() {
        for action in [
            PowerAction::On,
            PowerAction::Off,
            PowerAction::SoftOff,
            PowerAction::Cycle,
            PowerAction::Reset,
        ] {
            assert_eq!(
                serde_json::to_value(action).unwrap(),
                serde_json::Value::from(action.as_str())
            );
        }
    }

    #[test]
    fn a_step_reads_as_the_api_has_always_sent_it() {
        let step = Step {
            operation: Operation::SetBootDevice {
                device: BootDevice::Pxe,
                options: BootOverride {
                    efi: true,
                    persistent: false,
                },
            },
            state: StepState::Failed,
            error: None,
        };
        assert_eq!(
            serde_json::to_string(&step).unwrap(),
            r#"{"operation":{"op":"set_boot_device","device":"pxe","options":{"efi":true,"persistent":false}},"state":"failed","error":null}"#
        );
    }
}
