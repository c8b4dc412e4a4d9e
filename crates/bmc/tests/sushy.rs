//! The Redfish backend against `sushy-emulator` (fake driver, HTTP basic
//! auth), checking the emulator's own resources with curl after each step.
//! Its fake driver applies power changes 1–11 s late on purpose: we poll.

use std::time::{Duration, Instant};

use bellows_bmc::job::{PollPolicy, wait_for_power};
use bellows_bmc::{
    Bmc, BmcClient, BmcEndpoint, BmcError, BmcSettings, BootDevice, BootOverride, Credentials, Job,
    JobState, PowerAction, PowerState, Protocol, RedfishClient, RedfishSettings,
};
use bellows_testkit::bmc::{FileServer, PASSWORD, Sushy, USERNAME, assert_no_password};
use bellows_testkit::files::write_file;
use bellows_testkit::ports::free_tcp_port;
use serde_json::Value;

const POLL: PollPolicy = PollPolicy {
    interval: Duration::from_millis(500),
    timeout: Duration::from_secs(30),
};

fn client(url: &str, password: &str) -> RedfishClient {
    RedfishClient::new(
        url,
        None,
        false,
        Credentials::new(USERNAME, password),
        RedfishSettings::default(),
    )
    .unwrap_or_else(|error| panic!("{error}"))
}

fn text<'a>(resource: &'a Value, pointer: &str) -> &'a str {
    resource
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Polls the emulator itself (curl) until the system's PowerState is `wanted`.
async fn emulator_power_becomes(sushy: &Sushy, system: &str, wanted: &str) {
    let started = Instant::now();
    loop {
        let state = text(&sushy.get(system), "/PowerState").to_owned();
        if state == wanted {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "emulator PowerState stayed {state}, wanted {wanted}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn power_transitions_land_on_the_emulator() {
    let sushy = Sushy::start();
    let system = sushy.system_path();
    let bmc = client(&sushy.url(), PASSWORD);

    assert_eq!(bmc.power_status().await.ok(), Some(PowerState::Off));

    for (action, wanted) in [
        (PowerAction::On, "On"),
        (PowerAction::Reset, "On"),
        (PowerAction::SoftOff, "Off"),
        (PowerAction::Cycle, "On"),
        (PowerAction::Off, "Off"),
    ] {
        bmc.power(action)
            .await
            .unwrap_or_else(|error| panic!("power {action}: {error}"));
        let seen = wait_for_power(&bmc, action.expected_state(), POLL)
            .await
            .unwrap_or_else(|error| panic!("after power {action}: {error}"));
        assert_eq!(seen, action.expected_state());
        emulator_power_becomes(&sushy, &system, wanted).await;
    }
}

#[tokio::test]
async fn netboot_sets_boot_override_and_powers_on() {
    let sushy = Sushy::start();
    let system = sushy.system_path();
    let endpoint = BmcEndpoint {
        address: sushy.url(),
        port: None,
        protocol: Protocol::Auto,
        insecure_tls: false,
    };
    let bmc = BmcClient::connect(
        &endpoint,
        Credentials::new(USERNAME, PASSWORD),
        &BmcSettings::default(),
    )
    .await
    .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        bmc.protocol(),
        Protocol::Redfish,
        "Auto tries Redfish first"
    );

    let mut job = Job::netboot(true);
    job.run(&bmc, POLL)
        .await
        .unwrap_or_else(|error| panic!("netboot: {error}"));
    assert_eq!(job.state(), JobState::Succeeded);
    let seen = sushy.get(&system);
    assert_eq!(text(&seen, "/PowerState"), "On");
    assert_eq!(text(&seen, "/Boot/BootSourceOverrideTarget"), "Pxe");
    // sushy-emulator ignores BootSourceOverrideEnabled and always shows
    // "Continuous"; the Once/Continuous PATCH body is checked in the unit
    // test `boot_patch_matches_options`.
    assert_eq!(text(&seen, "/Boot/BootSourceOverrideMode"), "UEFI");

    bmc.set_boot_device(
        BootDevice::Disk,
        BootOverride {
            efi: false,
            persistent: true,
        },
    )
    .await
    .unwrap_or_else(|error| panic!("boot disk: {error}"));
    let seen = sushy.get(&system);
    assert_eq!(text(&seen, "/Boot/BootSourceOverrideTarget"), "Hdd");
    assert_eq!(text(&seen, "/Boot/BootSourceOverrideMode"), "Legacy");

    // sushy's fake system does not list BiosSetup among its targets.
    let refused = bmc
        .set_boot_device(BootDevice::Bios, BootOverride::default())
        .await;
    assert!(
        matches!(refused, Err(BmcError::Unsupported { .. })),
        "{refused:?}"
    );
    assert_eq!(
        text(&sushy.get(&system), "/Boot/BootSourceOverrideTarget"),
        "Hdd"
    );
}

#[tokio::test]
async fn virtual_media_insert_and_eject() {
    let sushy = Sushy::start();
    let media_dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    write_file(&media_dir.path().join("boot.iso"), "not really an ISO\n");
    let files = FileServer::start(media_dir.path());
    let image = format!("http://127.0.0.1:{}/boot.iso", files.port);
    let bmc = client(&sushy.url(), PASSWORD);

    bmc.insert_virtual_media(&image)
        .await
        .unwrap_or_else(|error| panic!("insert: {error}"));
    let status = bmc
        .virtual_media_status()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    // Check with curl too: the device our client chose, as the emulator shows it.
    let seen = sushy.get(&status.path);
    assert_eq!(seen.get("Inserted"), Some(&Value::Bool(true)), "{seen}");
    assert_eq!(text(&seen, "/Image"), image);

    bmc.eject_virtual_media()
        .await
        .unwrap_or_else(|error| panic!("eject: {error}"));
    let seen = sushy.get(&status.path);
    assert_eq!(seen.get("Inserted"), Some(&Value::Bool(false)), "{seen}");
    assert_eq!(text(&seen, "/Image"), "");

    // Ejecting an empty drive is not an error.
    bmc.eject_virtual_media()
        .await
        .unwrap_or_else(|error| panic!("second eject: {error}"));
}

#[tokio::test]
async fn wrong_password_and_unreachable_fail_clearly() {
    let sushy = Sushy::start();
    let wrong = format!("{PASSWORD}-wrong");
    let bmc = client(&sushy.url(), &wrong);
    let mut errors = Vec::new();

    let error = match bmc.power(PowerAction::On).await {
        Err(error) => error,
        Ok(()) => panic!("wrong password accepted"),
    };
    assert!(matches!(error, BmcError::AuthFailed { .. }), "{error}");
    errors.push(error);
    let system = sushy.system_path();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(text(&sushy.get(&system), "/PowerState"), "Off");

    // Auto reports the Redfish credential failure instead of trying IPMI.
    let endpoint = BmcEndpoint {
        address: sushy.url(),
        port: None,
        protocol: Protocol::Auto,
        insecure_tls: false,
    };
    match BmcClient::connect(
        &endpoint,
        Credentials::new(USERNAME, wrong.as_str()),
        &BmcSettings::default(),
    )
    .await
    {
        Err(error @ BmcError::AuthFailed { .. }) => errors.push(error),
        other => panic!("Auto with a wrong password: {other:?}"),
    }

    // Nothing listens on this port: an error in seconds, not a hang.
    let closed = format!("http://127.0.0.1:{}", free_tcp_port());
    let started = Instant::now();
    let error = match client(&closed, PASSWORD).power_status().await {
        Err(error) => error,
        Ok(state) => panic!("status of nothing: {state}"),
    };
    assert!(error.is_unreachable(), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
    errors.push(error);

    // A server that accepts the connection but never answers times out.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let silent_url = format!(
        "http://{}",
        silent.local_addr().unwrap_or_else(|e| panic!("{e}"))
    );
    let impatient = RedfishClient::new(
        &silent_url,
        None,
        false,
        Credentials::new(USERNAME, PASSWORD),
        RedfishSettings {
            request_timeout: Duration::from_secs(2),
            ..RedfishSettings::default()
        },
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let started = Instant::now();
    let error = match impatient.power_status().await {
        Err(error) => error,
        Ok(state) => panic!("status from a silent server: {state}"),
    };
    assert!(matches!(error, BmcError::Timeout { .. }), "{error}");
    assert!(started.elapsed() < Duration::from_secs(4));
    errors.push(error);

    for error in &errors {
        assert_no_password(error);
        assert!(!error.to_string().contains(&wrong), "{error}");
        assert!(!format!("{error:?}").contains(&wrong), "{error:?}");
    }
    assert_no_password(&Credentials::new(USERNAME, PASSWORD));
}

#[tokio::test]
async fn self_signed_https_needs_insecure_tls() {
    let sushy = Sushy::start_with(true);
    assert!(sushy.url().starts_with("https://"));
    let connect = |insecure_tls| {
        RedfishClient::new(
            &sushy.url(),
            None,
            insecure_tls,
            Credentials::new(USERNAME, PASSWORD),
            RedfishSettings::default(),
        )
        .unwrap_or_else(|error| panic!("{error}"))
    };
    let state = connect(true)
        .power_status()
        .await
        .unwrap_or_else(|error| panic!("insecure_tls over HTTPS: {error}"));
    assert_eq!(state, PowerState::Off);

    let error = match connect(false).power_status().await {
        Err(error) => error,
        Ok(state) => panic!("self-signed certificate accepted: {state}"),
    };
    assert!(
        error
            .to_string()
            .to_ascii_lowercase()
            .contains("certificate"),
        "{error}"
    );
    assert_no_password(&error);
}
