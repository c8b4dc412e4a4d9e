//! The pure half of Redfish: reading the resources a service returns and
//! deciding what to send, with no IO, so link-following is tested on recorded
//! JSON. Everything is read leniently from `serde_json::Value` because BMC
//! vendors differ in which optional properties they fill.

use serde_json::{Value, json};

use crate::types::{BootDevice, BootOverride, PowerAction, PowerState};

/// The `@odata.id` link held at `pointer` (a JSON pointer) in `resource`.
pub fn link(resource: &Value, pointer: &str) -> Option<String> {
    resource
        .pointer(pointer)?
        .get("@odata.id")?
        .as_str()
        .map(str::to_owned)
}

/// The member links of a collection, in the service's order.
pub fn members(collection: &Value) -> Vec<String> {
    collection
        .get("Members")
        .and_then(Value::as_array)
        .map(|members| {
            members
                .iter()
                .filter_map(|member| member.get("@odata.id")?.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Picks the computer system to control: the one named by `wanted` (its Id,
/// the last path segment, or its whole path), else the first member.
pub fn select_system(collection: &Value, wanted: Option<&str>) -> Result<String, String> {
    let all = members(collection);
    match wanted {
        Some(wanted) => all
            .iter()
            .find(|path| {
                let path = path.trim_end_matches('/');
                path == wanted.trim_end_matches('/') || path.rsplit('/').next() == Some(wanted)
            })
            .cloned()
            .ok_or_else(|| format!("no system {wanted:?} among {all:?}")),
        None => all
            .into_iter()
            .next()
            .ok_or_else(|| "the Systems collection is empty".to_owned()),
    }
}

/// What we need from a ComputerSystem resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemInfo {
    /// `PowerState`, mapped.
    pub power_state: PowerState,
    /// `Actions.#ComputerSystem.Reset.target`.
    pub reset_target: Option<String>,
    /// `ResetType@Redfish.AllowableValues`, when the service lists them.
    pub reset_types: Option<Vec<String>>,
    /// `Boot.BootSourceOverrideTarget@Redfish.AllowableValues`, when listed.
    pub boot_targets: Option<Vec<String>>,
    /// Whether the system exposes `Boot.BootSourceOverrideMode` (UEFI/Legacy).
    pub has_boot_mode: bool,
    /// The system's own VirtualMedia collection (Redfish 2021.1 and later).
    pub virtual_media: Option<String>,
    /// `Links.ManagedBy`: the managers, whose VirtualMedia older services use.
    pub managers: Vec<String>,
}

fn strings(value: Option<&Value>) -> Option<Vec<String>> {
    Some(
        value?
            .as_array()?
            .iter()
            .filter_map(|item| item.as_str().map(str::to_owned))
            .collect(),
    )
}

impl SystemInfo {
    /// Reads a ComputerSystem resource.
    pub fn from_json(system: &Value) -> SystemInfo {
        let reset = system.pointer("/Actions/#ComputerSystem.Reset");
        SystemInfo {
            power_state: power_state(system.get("PowerState").and_then(Value::as_str)),
            reset_target: reset
                .and_then(|reset| reset.get("target"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            reset_types: strings(
                reset.and_then(|reset| reset.get("ResetType@Redfish.AllowableValues")),
            ),
            boot_targets: strings(
                system.pointer("/Boot/BootSourceOverrideTarget@Redfish.AllowableValues"),
            ),
            has_boot_mode: system.pointer("/Boot/BootSourceOverrideMode").is_some(),
            virtual_media: link(system, "/VirtualMedia"),
            managers: system
                .pointer("/Links/ManagedBy")
                .and_then(Value::as_array)
                .map(|managers| {
                    managers
                        .iter()
                        .filter_map(|m| m.get("@odata.id")?.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// Maps a Redfish `PowerState`; transitional states are `Unknown` so that
/// pollers wait for the final one.
pub fn power_state(value: Option<&str>) -> PowerState {
    match value {
        Some("On") => PowerState::On,
        Some("Off") => PowerState::Off,
        _ => PowerState::Unknown,
    }
}

/// The `ResetType` names that perform an action, best first.
pub fn reset_type_preferences(action: PowerAction) -> &'static [&'static str] {
    match action {
        PowerAction::On => &["On", "ForceOn"],
        PowerAction::Off => &["ForceOff"],
        PowerAction::SoftOff => &["GracefulShutdown"],
        PowerAction::Cycle => &["PowerCycle", "ForceRestart"],
        PowerAction::Reset => &["ForceRestart", "GracefulRestart"],
    }
}

/// The `ResetType` to send: the first preference the service allows, or the
/// first preference when it lists nothing; `None` when it allows none.
pub fn choose_reset_type(action: PowerAction, allowed: Option<&[String]>) -> Option<&'static str> {
    let preferences = reset_type_preferences(action);
    match allowed {
        None => preferences.first().copied(),
        Some(allowed) => preferences
            .iter()
            .copied()
            .find(|name| allowed.iter().any(|allowed| allowed == name)),
    }
}

/// The `BootSourceOverrideTarget` for a device.
pub fn boot_target(device: BootDevice) -> &'static str {
    match device {
        BootDevice::Pxe => "Pxe",
        BootDevice::Disk => "Hdd",
        BootDevice::Bios => "BiosSetup",
        BootDevice::Cdrom => "Cd",
    }
}

/// The PATCH body setting the boot override; the mode is sent only to
/// services that expose it, since others reject unknown properties.
pub fn boot_override_patch(device: BootDevice, options: BootOverride, send_mode: bool) -> Value {
    let mut boot = json!({
        "BootSourceOverrideTarget": boot_target(device),
        "BootSourceOverrideEnabled": if options.persistent { "Continuous" } else { "Once" },
    });
    if send_mode && let Some(fields) = boot.as_object_mut() {
        fields.insert(
            "BootSourceOverrideMode".into(),
            json!(if options.efi { "UEFI" } else { "Legacy" }),
        );
    }
    json!({ "Boot": boot })
}

/// What we need from a VirtualMedia resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualMediaInfo {
    /// Its own link, for PATCH-based insertion on services without actions.
    pub path: String,
    /// `Actions.#VirtualMedia.InsertMedia.target`.
    pub insert_target: Option<String>,
    /// `Actions.#VirtualMedia.EjectMedia.target`.
    pub eject_target: Option<String>,
    /// Whether it accepts CD or DVD images.
    pub is_optical: bool,
    /// `Inserted`.
    pub inserted: bool,
    /// `Image`, empty when none.
    pub image: String,
}

impl VirtualMediaInfo {
    /// Reads a VirtualMedia resource fetched from `path`.
    pub fn from_json(path: &str, media: &Value) -> VirtualMediaInfo {
        let target = |action: &str| {
            media
                .pointer(&format!("/Actions/#VirtualMedia.{action}/target"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        VirtualMediaInfo {
            path: path.to_owned(),
            insert_target: target("InsertMedia"),
            eject_target: target("EjectMedia"),
            is_optical: strings(media.get("MediaTypes"))
                .unwrap_or_default()
                .iter()
                .any(|kind| kind == "CD" || kind == "DVD"),
            inserted: media
                .get("Inserted")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            image: media
                .get("Image")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        }
    }
}

/// The device to mount an ISO in: the first optical one, else the first.
pub fn select_optical(media: &[VirtualMediaInfo]) -> Option<&VirtualMediaInfo> {
    media
        .iter()
        .find(|device| device.is_optical)
        .or_else(|| media.first())
}

/// A readable message from a Redfish error body (`error.message` and the
/// first extended message), or `None` when it is not one.
pub fn error_message(body: &Value) -> Option<String> {
    let error = body.get("error")?;
    let mut parts = Vec::new();
    if let Some(message) = error.get("message").and_then(Value::as_str) {
        parts.push(message.to_owned());
    }
    if let Some(extended) = error
        .pointer("/@Message.ExtendedInfo/0/Message")
        .and_then(Value::as_str)
    {
        parts.push(extended.to_owned());
    }
    (!parts.is_empty()).then(|| parts.join(": "))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Recorded from sushy-emulator 2.2.0 (fake driver), trimmed.
    const ROOT: &str = r#"{"@odata.id":"/redfish/v1/","Systems":{"@odata.id":"/redfish/v1/Systems"},
        "Managers":{"@odata.id":"/redfish/v1/Managers"}}"#;
    const SYSTEMS: &str = r#"{"Members@odata.count":1,"Members":[
        {"@odata.id":"/redfish/v1/Systems/27946b59-9e44-4fa7-8e91-f3527a1ef094"}]}"#;
    const SYSTEM: &str = r##"{"PowerState":"Off",
        "Boot":{"BootSourceOverrideEnabled":"Continuous","BootSourceOverrideTarget":"Hdd",
          "BootSourceOverrideTarget@Redfish.AllowableValues":["Pxe","Cd","Hdd","UefiHttp"],
          "BootSourceOverrideMode":"UEFI"},
        "Actions":{"#ComputerSystem.Reset":{
          "target":"/redfish/v1/Systems/27946b59-9e44-4fa7-8e91-f3527a1ef094/Actions/ComputerSystem.Reset",
          "ResetType@Redfish.AllowableValues":["On","ForceOff","GracefulShutdown","GracefulRestart","ForceRestart","Nmi","ForceOn"]}},
        "Links":{"ManagedBy":[{"@odata.id":"/redfish/v1/Managers/27946b59-9e44-4fa7-8e91-f3527a1ef094"}]},
        "VirtualMedia":{"@odata.id":"/redfish/v1/Systems/27946b59-9e44-4fa7-8e91-f3527a1ef094/VirtualMedia"}}"##;
    const CD: &str = r##"{"Id":"Cd","MediaTypes":["CD","DVD"],"Image":"","Inserted":false,
        "Actions":{"#VirtualMedia.EjectMedia":{"target":"/vm/Cd/Actions/VirtualMedia.EjectMedia"},
          "#VirtualMedia.InsertMedia":{"target":"/vm/Cd/Actions/VirtualMedia.InsertMedia"}}}"##;
    const FLOPPY: &str =
        r#"{"Id":"Floppy","MediaTypes":["Floppy","USBStick"],"Image":"","Inserted":false}"#;

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).unwrap_or_else(|error| panic!("{error}"))
    }

    #[test]
    fn follows_root_to_the_first_system() {
        let root = parse(ROOT);
        assert_eq!(
            link(&root, "/Systems").as_deref(),
            Some("/redfish/v1/Systems")
        );
        let systems = parse(SYSTEMS);
        let first = "/redfish/v1/Systems/27946b59-9e44-4fa7-8e91-f3527a1ef094";
        assert_eq!(select_system(&systems, None).as_deref(), Ok(first));
        assert_eq!(
            select_system(&systems, Some("27946b59-9e44-4fa7-8e91-f3527a1ef094")).as_deref(),
            Ok(first)
        );
        assert!(select_system(&systems, Some("other")).is_err());
        assert!(select_system(&parse(r#"{"Members":[]}"#), None).is_err());
    }

    #[test]
    fn reads_the_system() {
        let info = SystemInfo::from_json(&parse(SYSTEM));
        assert_eq!(info.power_state, PowerState::Off);
        assert!(
            info.reset_target
                .as_deref()
                .is_some_and(|target| { target.ends_with("/Actions/ComputerSystem.Reset") })
        );
        assert!(info.has_boot_mode);
        assert_eq!(info.managers.len(), 1);
        assert!(info.virtual_media.is_some());
        let allowed = info.reset_types.unwrap_or_default();
        assert_eq!(
            choose_reset_type(PowerAction::Cycle, Some(&allowed)),
            Some("ForceRestart")
        );
        assert_eq!(
            choose_reset_type(PowerAction::SoftOff, Some(&allowed)),
            Some("GracefulShutdown")
        );
        assert_eq!(choose_reset_type(PowerAction::Off, Some(&[])), None);
        assert_eq!(
            choose_reset_type(PowerAction::Cycle, None),
            Some("PowerCycle")
        );
        let bare = SystemInfo::from_json(&parse(r#"{"PowerState":"PoweringOn"}"#));
        assert_eq!(bare.power_state, PowerState::Unknown);
        assert_eq!(bare.reset_target, None);
        assert!(!bare.has_boot_mode);
    }

    #[test]
    fn boot_patch_matches_options() {
        let once_efi = boot_override_patch(
            BootDevice::Pxe,
            BootOverride {
                efi: true,
                persistent: false,
            },
            true,
        );
        assert_eq!(
            once_efi,
            json!({"Boot": {"BootSourceOverrideTarget": "Pxe",
                "BootSourceOverrideEnabled": "Once", "BootSourceOverrideMode": "UEFI"}})
        );
        let persistent = boot_override_patch(
            BootDevice::Disk,
            BootOverride {
                efi: false,
                persistent: true,
            },
            false,
        );
        assert_eq!(
            persistent,
            json!({"Boot": {"BootSourceOverrideTarget": "Hdd",
                "BootSourceOverrideEnabled": "Continuous"}})
        );
    }

    #[test]
    fn picks_the_optical_device() {
        let media = vec![
            VirtualMediaInfo::from_json("/vm/Floppy", &parse(FLOPPY)),
            VirtualMediaInfo::from_json("/vm/Cd", &parse(CD)),
        ];
        let chosen = select_optical(&media);
        assert_eq!(chosen.map(|m| m.path.as_str()), Some("/vm/Cd"));
        assert_eq!(
            chosen.and_then(|m| m.insert_target.as_deref()),
            Some("/vm/Cd/Actions/VirtualMedia.InsertMedia")
        );
        assert!(select_optical(&[]).is_none());
    }

    #[test]
    fn reads_error_bodies() {
        let body = parse(
            r#"{"error":{"code":"Base.1.0.GeneralError","message":"boom",
            "@Message.ExtendedInfo":[{"Message":"details"}]}}"#,
        );
        assert_eq!(error_message(&body).as_deref(), Some("boom: details"));
        assert_eq!(error_message(&json!({"x": 1})), None);
    }
}
