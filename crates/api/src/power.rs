//! Power and boot-device control through the machine's BMC:
//! `/api/v1/hardware/{id}/power`, `/boot-device`, `/netboot`.
//!
//! Each request connects to the BMC with the stored credentials, runs a job
//! (ordered steps, stopping at the first failure) and answers with the
//! job's steps. BMC failures are 502 with the BMC's error, which never
//! contains the password.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bellows_bmc::{
    Bmc, BmcClient, BmcEndpoint, BmcError, BmcSettings, BootDevice, BootOverride, Credentials, Job,
    Operation, PollPolicy, PowerAction, PowerState, Protocol, StepState,
};
use bellows_model::api::{
    BmcJob, BmcRecord, BootDeviceRequest, NetbootRequest, PowerReading, PowerRequest,
};
use bellows_store::{BmcSecret, Store, now_ms};

use crate::hardware::resolve;
use crate::{ApiError, AppState, body};

/// The client library's view of a stored record.
pub fn endpoint(record: &BmcRecord) -> BmcEndpoint {
    BmcEndpoint {
        address: record.address.clone(),
        port: record.port,
        protocol: match record.protocol.as_str() {
            "ipmi" => Protocol::Ipmi,
            "redfish" => Protocol::Redfish,
            _ => Protocol::Auto,
        },
        insecure_tls: record.insecure_tls,
    }
}

/// Connects to a machine's BMC with its stored credentials.
pub async fn connect(record: &BmcRecord, secret: &BmcSecret) -> Result<BmcClient, BmcError> {
    let credentials = Credentials::new(record.username.clone(), secret.0.clone());
    BmcClient::connect(&endpoint(record), credentials, &BmcSettings::default()).await
}

fn bmc_error(e: &BmcError) -> ApiError {
    let (status, code) = if e.is_unreachable() {
        (StatusCode::GATEWAY_TIMEOUT, "bmc_unreachable")
    } else {
        (StatusCode::BAD_GATEWAY, "bmc_error")
    };
    ApiError::new(status, code, e.to_string(), None)
}

async fn client(state: &AppState, id: &str) -> Result<(String, BmcClient), ApiError> {
    let hw = resolve(state, id).await?;
    let Some((record, secret)) = state.store.bmc_with_secret(&hw.id).await? else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_bmc",
            format!(
                "hardware {:?} has no BMC; set one with `bellows bmc set`",
                hw.id
            ),
            None,
        ));
    };
    let client = connect(&record, &secret).await.map_err(|e| bmc_error(&e))?;
    Ok((hw.id, client))
}

/// Network-boots a workflow's machine through its BMC (workflow boot option
/// `boot_mode: netboot`) and records the outcome as a workflow event.
pub(crate) async fn boot_for_workflow(
    state: AppState,
    workflow_id: String,
    hardware: String,
    efi: bool,
) {
    let (ok, message) = match client(&state, &hardware).await {
        Ok((hw_id, bmc)) => {
            let mut job = Job::netboot(efi);
            let outcome = job.run(&bmc, PollPolicy::default()).await;
            let _ = read_power(state.store.as_ref(), &hw_id, Ok(&bmc)).await;
            match outcome {
                Ok(()) => (
                    true,
                    "BMC network boot done: power off, next boot pxe, power on".to_string(),
                ),
                Err(e) => (false, format!("BMC network boot failed: {e}")),
            }
        }
        Err(e) => (
            false,
            format!("BMC network boot not possible: {}", e.message),
        ),
    };
    if ok {
        tracing::info!(workflow = %workflow_id, hardware = %hardware, "{message}");
    } else {
        tracing::warn!(workflow = %workflow_id, hardware = %hardware, "{message}");
    }
    let event = bellows_model::Event {
        at: now_ms(),
        kind: bellows_model::EventKind::BootRequested {
            hardware,
            ok,
            message,
        },
    };
    if let Err(e) = state.store.append_event(&workflow_id, &event).await {
        tracing::warn!(workflow = %workflow_id, "cannot record the boot request: {e}");
    }
}

async fn run_job(state: &AppState, id: &str, mut job: Job) -> Result<Json<BmcJob>, ApiError> {
    let (hw_id, bmc) = client(state, id).await?;
    let outcome = job.run(&bmc, PollPolicy::default()).await;
    // Record what the BMC now says, for `bmc list`; a failed read is kept too.
    let _ = read_power(state.store.as_ref(), &hw_id, Ok(&bmc)).await;
    let steps = job.steps;
    match outcome {
        Ok(()) => {
            tracing::info!(hardware = %hw_id, protocol = ?bmc.protocol(), "BMC job succeeded");
            Ok(Json(BmcJob {
                hardware_id: hw_id,
                state: StepState::Succeeded,
                steps,
            }))
        }
        Err(e) => {
            tracing::warn!(hardware = %hw_id, error = %e, "BMC job failed");
            let mut err = bmc_error(&e);
            let steps = serde_json::to_string(&steps).unwrap_or_else(|_| "[]".into());
            err.message = format!("{} (steps: {steps})", err.message);
            Err(err)
        }
    }
}

/// Reads a machine's power state (or takes a failed connection as the
/// reading) and records the outcome in the store, for `bmc list` and
/// `hardware list`. Shared by the API and the server's poller.
pub async fn read_power(
    store: &dyn Store,
    hardware_id: &str,
    bmc: Result<&BmcClient, BmcError>,
) -> Result<PowerState, BmcError> {
    let reading = match bmc {
        Ok(bmc) => bmc.power_status().await,
        Err(e) => Err(e),
    };
    let (state, error) = match &reading {
        Ok(s) => (Some(power_name(*s)), None),
        Err(e) => (None, Some(e.to_string())),
    };
    if let Err(e) = store
        .set_power_state(hardware_id, state, error.as_deref(), now_ms())
        .await
    {
        tracing::warn!(hardware = %hardware_id, error = %e, "cannot record the power state");
    }
    reading
}

fn power_name(s: PowerState) -> &'static str {
    match s {
        PowerState::On => "on",
        PowerState::Off => "off",
        _ => "unknown",
    }
}

pub(crate) async fn status(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<PowerReading>, ApiError> {
    let (hw_id, bmc) = client(&state, &id).await?;
    let power = read_power(state.store.as_ref(), &hw_id, Ok(&bmc))
        .await
        .map_err(|e| bmc_error(&e))?;
    Ok(Json(PowerReading {
        hardware_id: hw_id,
        power: power_name(power).to_string(),
    }))
}

pub(crate) async fn power(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<BmcJob>, ApiError> {
    let req: PowerRequest<PowerAction> = body::json(body).await?;
    run_job(
        &state,
        &id,
        Job::new([Operation::Power { action: req.action }]),
    )
    .await
}

pub(crate) async fn boot_device(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<BmcJob>, ApiError> {
    let req: BootDeviceRequest<BootDevice> = body::json(body).await?;
    let op = Operation::SetBootDevice {
        device: req.device,
        options: BootOverride {
            efi: req.efi,
            persistent: req.persistent,
        },
    };
    run_job(&state, &id, Job::new([op])).await
}

pub(crate) async fn netboot(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<BmcJob>, ApiError> {
    let bytes = body::read(body).await?;
    let req: NetbootRequest = if bytes.is_empty() {
        NetbootRequest::default()
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("request body is not valid JSON: {e}")))?
    };
    run_job(&state, &id, Job::netboot(req.efi)).await
}

/// How often [`poll_power`] reads every BMC, unless told otherwise.
pub const POWER_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Reads every BMC's power state on an interval and stores it, so
/// `bellows bmc list` and `hardware list` show it without a live call.
/// BMCs are read one after another: the client's own timeouts bound each.
pub async fn poll_power(
    store: std::sync::Arc<dyn Store>,
    every: std::time::Duration,
    metrics: crate::metrics::ApiMetrics,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = &mut stop => return,
        }
        // Among servers sharing one database, one polls; the others would
        // only multiply the traffic to every BMC.
        if !store.leads_timers() {
            continue;
        }
        let records = match store.list_bmcs().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "power poll: cannot list BMCs");
                continue;
            }
        };
        for record in records {
            let (record, secret) = match store.bmc_with_secret(&record.hardware_id).await {
                Ok(Some(found)) => found,
                Ok(None) => continue,
                // An unusable password (wrong key, altered row) is shown
                // in `bmc list`; nothing is sent to the BMC.
                Err(e) => {
                    tracing::warn!(hardware = %record.hardware_id, error = %e, "power poll");
                    metrics.bmc_polled("error");
                    let _ = store
                        .set_power_state(&record.hardware_id, None, Some(&e.to_string()), now_ms())
                        .await;
                    continue;
                }
            };
            let bmc = connect(&record, &secret).await;
            let read = read_power(
                store.as_ref(),
                &record.hardware_id,
                bmc.as_ref().map_err(Clone::clone),
            )
            .await;
            metrics.bmc_polled(match read {
                Ok(state) => power_name(state),
                Err(_) => "error",
            });
        }
    }
}
