//! The IPMI backend against OpenIPMI's `ipmi_sim` (lanplus on 127.0.0.1),
//! checking the emulator's own state after every operation.

use std::time::{Duration, Instant};

use bellows_bmc::job::{PollPolicy, wait_for_power};
use bellows_bmc::{
    Bmc, BmcClient, BmcEndpoint, BmcError, BmcSettings, BootDevice, BootOverride, Credentials,
    IpmiClient, IpmiSettings, Job, JobState, PowerAction, PowerState, Protocol,
};
use bellows_testkit::bmc::{IpmiSim, PASSWORD, USERNAME, assert_no_password};
use bellows_testkit::packages::ensure_programs;
use bellows_testkit::ports::free_udp_port;

const POLL: PollPolicy = PollPolicy {
    interval: Duration::from_millis(300),
    timeout: Duration::from_secs(20),
};

fn client(port: u16, password: &str) -> IpmiClient {
    IpmiClient::new(
        "127.0.0.1",
        Some(port),
        Credentials::new(USERNAME, password),
        IpmiSettings::default(),
    )
    .unwrap_or_else(|error| panic!("{error}"))
}

async fn act(bmc: &IpmiClient, action: PowerAction) {
    bmc.power(action)
        .await
        .unwrap_or_else(|error| panic!("power {action}: {error}"));
    wait_for_power(bmc, action.expected_state(), POLL)
        .await
        .unwrap_or_else(|error| panic!("after power {action}: {error}"));
}

#[tokio::test]
async fn power_and_boot_device_change_the_emulator() {
    let sim = IpmiSim::start();
    let bmc = client(sim.port, PASSWORD);

    assert_eq!(bmc.power_status().await.ok(), Some(PowerState::Off));

    act(&bmc, PowerAction::On).await;
    assert_eq!(sim.power_file(), "1");

    act(&bmc, PowerAction::Off).await;
    assert_eq!(sim.power_file(), "0");

    // Cycle of a machine that is off powers it on.
    act(&bmc, PowerAction::Cycle).await;
    assert_eq!(sim.power_file(), "1");

    // Cycle while on: the emulator sees power go down, then up again.
    let calls_before = sim.calls().lines().count();
    act(&bmc, PowerAction::Cycle).await;
    let cycle_calls: Vec<String> = sim
        .calls()
        .lines()
        .skip(calls_before)
        .filter(|line| line.starts_with("set"))
        .map(str::to_owned)
        .collect();
    assert!(
        cycle_calls.iter().any(|call| call == "set power 0"),
        "{cycle_calls:?}"
    );
    wait_until_file(&sim, "1").await;

    bmc.power(PowerAction::Reset)
        .await
        .unwrap_or_else(|error| panic!("reset: {error}"));
    assert!(sim.calls().contains("set reset 1"), "{}", sim.calls());

    act(&bmc, PowerAction::SoftOff).await;
    assert!(sim.calls().contains("set shutdown 1"), "{}", sim.calls());
    assert_eq!(sim.power_file(), "0");

    bmc.set_boot_device(
        BootDevice::Pxe,
        BootOverride {
            efi: true,
            persistent: true,
        },
    )
    .await
    .unwrap_or_else(|error| panic!("bootdev pxe: {error}"));
    assert!(sim.calls().contains("set boot pxe"), "{}", sim.calls());
    assert!(
        sim.boot_flags().contains("Force PXE"),
        "{}",
        sim.boot_flags()
    );

    bmc.set_boot_device(BootDevice::Disk, BootOverride::default())
        .await
        .unwrap_or_else(|error| panic!("bootdev disk: {error}"));
    assert!(
        sim.boot_flags().contains("Hard-Drive"),
        "{}",
        sim.boot_flags()
    );

    let unsupported = Bmc::insert_virtual_media(&bmc, "http://127.0.0.1/x.iso").await;
    assert!(matches!(unsupported, Err(BmcError::Unsupported { .. })));
}

async fn wait_until_file(sim: &IpmiSim, wanted: &str) {
    let started = Instant::now();
    while sim.power_file() != wanted {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "power file stayed {}",
            sim.power_file()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn netboot_job_through_the_client_enum() {
    let sim = IpmiSim::start();
    let endpoint = BmcEndpoint {
        address: "127.0.0.1".into(),
        port: Some(sim.port),
        protocol: Protocol::Ipmi,
        insecure_tls: false,
    };
    let bmc = BmcClient::connect(
        &endpoint,
        Credentials::new(USERNAME, PASSWORD),
        &BmcSettings::default(),
    )
    .await
    .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(bmc.protocol(), Protocol::Ipmi);
    let mut job = Job::netboot(true);
    job.run(&bmc, POLL)
        .await
        .unwrap_or_else(|error| panic!("netboot: {error}"));
    assert_eq!(job.state(), JobState::Succeeded);
    let calls = sim.calls();
    let set_calls: Vec<&str> = calls
        .lines()
        .filter(|line| line.starts_with("set"))
        .collect();
    let off = set_calls.iter().position(|call| *call == "set power 0");
    let pxe = set_calls.iter().position(|call| *call == "set boot pxe");
    let on = set_calls.iter().rposition(|call| *call == "set power 1");
    assert!(off < pxe && pxe < on && off.is_some(), "{set_calls:?}");
    assert_eq!(sim.power_file(), "1");
    assert!(sim.boot_flags().contains("Force PXE"));
}

#[tokio::test]
async fn wrong_password_is_an_auth_failure() {
    let sim = IpmiSim::start();
    let wrong = format!("{PASSWORD}-wrong");
    let bmc = client(sim.port, &wrong);
    let started = Instant::now();
    let error = match bmc.power_status().await {
        Err(error) => error,
        Ok(state) => panic!("wrong password accepted: {state}"),
    };
    assert!(
        matches!(error, BmcError::AuthFailed { .. }),
        "not an auth failure: {error}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_no_password(&error);
    assert!(!error.to_string().contains(&wrong));
    // The emulator was not touched.
    assert_eq!(sim.power_file(), "0");

    // A job records the failure without the password.
    let mut job = Job::netboot(false);
    let failed = job.run(&bmc, POLL).await;
    assert!(failed.is_err());
    assert_eq!(job.state(), JobState::Failed);
    let recorded = serde_json::to_string(&job).unwrap_or_else(|error| panic!("{error}"));
    assert!(!recorded.contains(PASSWORD) && !recorded.contains(&wrong));
    assert!(recorded.contains("rejected the credentials"), "{recorded}");
}

#[tokio::test]
async fn unreachable_bmc_fails_within_seconds() {
    ensure_programs(&["ipmitool"], &["ipmitool"]);
    let port = free_udp_port(); // nothing listens here
    let bmc = client(port, PASSWORD);
    let started = Instant::now();
    let error = match bmc.power(PowerAction::On).await {
        Err(error) => error,
        Ok(()) => panic!("power on of nothing succeeded"),
    };
    let elapsed = started.elapsed();
    assert!(error.is_unreachable(), "{error}");
    assert!(elapsed < Duration::from_secs(8), "took {elapsed:?}");
    assert_no_password(&error);

    // The process bound also holds when ipmitool itself would wait longer.
    let slow = IpmiClient::new(
        "127.0.0.1",
        Some(port),
        Credentials::new(USERNAME, PASSWORD),
        IpmiSettings {
            retransmit_timeout_secs: 10,
            retries: 5,
            process_timeout: Duration::from_secs(2),
            ..IpmiSettings::default()
        },
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let started = Instant::now();
    let error = match slow.power_status().await {
        Err(error) => error,
        Ok(state) => panic!("status of nothing: {state}"),
    };
    assert!(matches!(error, BmcError::Timeout { .. }), "{error}");
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_no_password(&error);
}
