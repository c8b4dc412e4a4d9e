//! `/api/v1/hardware`: push, get, list, replace, delete.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use bellows_model::api::{InventoryRecord, List, LogRecord};
use bellows_model::timeline::{BootEvent, from_workflow_event};
use bellows_model::{Hardware, MacAddr};
use bellows_store::WorkflowFilter;
use serde::Deserialize;
use serde_json::Value;

use crate::{ApiError, AppState, body};

/// Resolves a path segment that may be an id or one of the record's MACs.
pub(crate) async fn resolve(state: &AppState, id: &str) -> Result<Hardware, ApiError> {
    if let Some(hw) = state.store.hardware(id).await? {
        return Ok(hw);
    }
    if let Ok(mac) = id.parse::<MacAddr>()
        && let Some(hw) = state.store.hardware_by_mac(mac).await?
    {
        return Ok(hw);
    }
    Err(ApiError::not_found("hardware", id))
}

async fn parse(body: Body) -> Result<Hardware, ApiError> {
    let value: Value = body::json(body).await?;
    Ok(Hardware::from_value(value)?)
}

pub(crate) async fn push(
    State(state): State<AppState>,
    body: Body,
) -> Result<(StatusCode, Json<Hardware>), ApiError> {
    let hw = parse(body).await?;
    let pushed = state.store.push_hardware(hw).await?;
    let status = if pushed.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    tracing::info!(id = %pushed.hardware.id, created = pushed.created, "hardware pushed");
    Ok((status, Json(pushed.hardware)))
}

pub(crate) async fn replace(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Hardware>, ApiError> {
    let hw = parse(body).await?;
    let existing = resolve(&state, &id).await?;
    if !hw.id.is_empty() && hw.id != existing.id {
        return Err(ApiError::invalid(
            "id",
            format!(
                "the document's id {:?} differs from the record being replaced ({:?})",
                hw.id, existing.id
            ),
        ));
    }
    Ok(Json(state.store.replace_hardware(&existing.id, hw).await?))
}

pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Hardware>, ApiError> {
    Ok(Json(resolve(&state, &id).await?))
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    mac: Option<String>,
    ip: Option<String>,
    /// `discovered`, `enrolled` or `registered`.
    state: Option<String>,
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<List<Hardware>>, ApiError> {
    let items: Vec<Hardware> = match (q.mac, q.ip) {
        (Some(mac), _) => {
            let mac: MacAddr = mac.parse().map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("mac: {e}"),
                    Some("mac".into()),
                )
            })?;
            state
                .store
                .hardware_by_mac(mac)
                .await?
                .into_iter()
                .collect()
        }
        (None, Some(ip)) => {
            let ip = ip.parse().map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("ip: {ip:?} is not an IP address"),
                    Some("ip".into()),
                )
            })?;
            state.store.hardware_by_ip(ip).await?.into_iter().collect()
        }
        (None, None) => state.store.list_hardware().await?,
    };
    let items = match q.state.as_deref() {
        None => items,
        Some(wanted @ ("discovered" | "enrolled" | "registered")) => items
            .into_iter()
            .filter(|hw| bellows_model::discovery::hardware_state(hw) == wanted)
            .collect(),
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("state: {other:?} is not a state: discovered, enrolled or registered"),
                Some("state".into()),
            ));
        }
    };
    Ok(Json(List::from(items)))
}

/// `POST /hardware/{id}/enroll`: an operator turns a discovered machine
/// into an enrolled one, with a workflow of `template` if given.
pub(crate) async fn enroll(
    State(state): State<AppState>,
    Path(id): Path<String>,
    operator: Option<axum::Extension<crate::auth::Operator>>,
    body: Body,
) -> Result<(StatusCode, Json<bellows_model::api::Enrolled>), ApiError> {
    let req: bellows_model::api::EnrollRequest = body::json(body).await?;
    let hw = resolve(&state, &id).await?;
    if !bellows_model::discovery::is_discovered(&hw) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "hardware {:?} is {}, not discovered: only discovered machines are enrolled",
                hw.id,
                bellows_model::discovery::hardware_state(&hw)
            ),
            None,
        ));
    }
    let name = operator.map_or_else(|| "anonymous".to_string(), |axum::Extension(o)| o.name);
    let id = hw.id.clone();
    let workflow =
        crate::discovery::enrol_by_operator(&state.store, hw, req.template, &name).await?;
    if let Some(wf) = &workflow {
        crate::workflows::start_boot(&state, wf);
    }
    let hardware = state.store.hardware(&id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("hardware {id:?} not found"),
            None,
        )
    })?;
    tracing::info!(hardware = %id, operator = %name, "enrolled by an operator");
    Ok((
        StatusCode::OK,
        Json(bellows_model::api::Enrolled { hardware, workflow }),
    ))
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let hw = resolve(&state, &id).await?;
    state.store.delete_hardware(&hw.id).await?;
    tracing::info!(id = %hw.id, "hardware deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub(crate) struct LogsQuery {
    limit: Option<u32>,
}

/// Syslog lines a machine sent. `{id}` is an id or MAC; an address Bellows
/// does not know is filed as `ip:<address>` and can be asked for as such.
pub(crate) async fn logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Json<List<LogRecord>>, ApiError> {
    let machine = match resolve(&state, &id).await {
        Ok(hw) => hw.id,
        Err(_)
            if id
                .strip_prefix("ip:")
                .is_some_and(|ip| ip.parse::<std::net::IpAddr>().is_ok()) =>
        {
            id
        }
        Err(e) => return Err(e),
    };
    let limit = q.limit.unwrap_or(200).clamp(1, 10_000);
    Ok(Json(List::from(
        state.store.machine_logs(&machine, limit).await?,
    )))
}

/// The machine's boot timeline: what the services saw it do (DHCP, TFTP,
/// the script, downloads, its worker, metadata) merged with its newest
/// workflows' action events, oldest first, at most `limit`.
pub(crate) async fn timeline(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Json<List<BootEvent>>, ApiError> {
    /// Workflows whose events are merged in, newest first.
    const WORKFLOWS: usize = 5;
    let hw = resolve(&state, &id).await?;
    let limit = q.limit.unwrap_or(200).clamp(1, 1_000);
    let mut steps = state.store.boot_events(&hw.id, limit).await?;
    // A task names its worker by MAC or by hardware id.
    let mut workflows = Vec::new();
    for worker in hw.macs().map(|m| m.to_string()).chain([hw.id.clone()]) {
        let filter = WorkflowFilter {
            worker: Some(worker),
            ..WorkflowFilter::default()
        };
        for wf in state.store.list_workflows(&filter).await? {
            if !workflows.iter().any(|(id, _)| *id == wf.id) {
                workflows.push((wf.id.clone(), wf.created_at));
            }
        }
    }
    workflows.sort_by_key(|(_, created)| std::cmp::Reverse(*created));
    for (id, _) in workflows.into_iter().take(WORKFLOWS) {
        for record in state.store.workflow_events(&id).await? {
            steps.extend(from_workflow_event(&id, &record.event));
        }
    }
    steps.sort_by_key(|s| s.at);
    let skip = steps.len().saturating_sub(limit as usize);
    Ok(Json(List::from(steps.split_off(skip))))
}

/// The facts the machine's worker last reported (CPU, memory, disks, NICs).
pub(crate) async fn inventory(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<InventoryRecord>, ApiError> {
    let hw = resolve(&state, &id).await?;
    let record = state.store.inventory(&hw.id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "hardware {:?} has no inventory yet: its worker has not connected",
                hw.id
            ),
            None,
        )
    })?;
    Ok(Json(record))
}
