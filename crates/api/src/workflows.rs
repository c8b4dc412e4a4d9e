//! `/api/v1/workflows`: create (render once, now), get, list, events, delete.

use std::collections::BTreeMap;
use std::net::IpAddr;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use bellows_model::api::{ActionLogRecord, CancelWorkflow, EventRecord, List, NewWorkflow};
use bellows_model::{Hardware, MacAddr, RenderContext, Workflow, render};
use bellows_store::{Store, WorkflowFilter, now_ms};
use serde::Deserialize;

use crate::auth::Operator;
use crate::{ApiError, AppState, body};

/// Finds the hardware a map value names: a MAC, a reserved IP, or an id.
async fn lookup(store: &dyn Store, value: &str) -> Result<Option<Hardware>, ApiError> {
    if let Ok(mac) = value.parse::<MacAddr>() {
        return Ok(store.hardware_by_mac(mac).await?);
    }
    if let Ok(ip) = value.parse::<IpAddr>() {
        return Ok(store.hardware_by_ip(ip).await?);
    }
    Ok(store.hardware(value).await?)
}

pub(crate) async fn create(
    State(state): State<AppState>,
    operator: Option<Extension<Operator>>,
    body: Body,
) -> Result<(StatusCode, Json<Workflow>), ApiError> {
    let req: NewWorkflow = body::json(body).await?;
    let wf = build(
        state.store.as_ref(),
        &req,
        operator.map(|Extension(op)| op.name),
        None,
    )
    .await?;
    state.store.create_workflow(&wf).await?;
    tracing::info!(id = %wf.id, template = %wf.template_id, "workflow created");
    start_boot(&state, &wf);
    Ok((StatusCode::CREATED, Json(wf)))
}

/// Powers the workflow's machine on to netboot when its boot options ask.
pub(crate) fn start_boot(state: &AppState, wf: &Workflow) {
    if let (Some(_), Some(hw)) = (wf.boot_options.boot_mode, wf.hardware_id.clone()) {
        tokio::spawn(crate::power::boot_for_workflow(
            state.clone(),
            wf.id.clone(),
            hw,
            wf.boot_options.efi,
        ));
    }
}

/// The workflow `req` asks for, rendered, not yet stored: the template
/// found, every machine the map names known, `.Hardware` set (to
/// `hardware` when given: a record about to be written, as enrolment
/// makes).
pub(crate) async fn build(
    store: &dyn Store,
    req: &NewWorkflow,
    created_by: Option<String>,
    hardware: Option<Hardware>,
) -> Result<Workflow, ApiError> {
    let template = store.template(&req.template).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("template {:?} not found", req.template),
            Some("template".into()),
        )
    })?;
    // An empty map is fine for a template whose workers are literal ids
    // (Tinkerbell takes it); one that uses a key fails to render, naming it.
    // A value that names a machine (MAC, IP or id) must be one Bellows
    // knows; MACs are stored in canonical form so the worker's report (by
    // MAC) matches the task. Any other text is a worker id passed through
    // as Tinkerbell does (tink's e2e `device_2: pnj`): a worker started
    // with that id by an operator runs its task.
    let mut map = BTreeMap::new();
    let mut machines = BTreeMap::new();
    for (key, value) in &req.hardware_map {
        let field = format!("hardware_map.{key}");
        let key_ok = !key.is_empty()
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !key.starts_with(|c: char| c.is_ascii_digit());
        if !key_ok || key == "Hardware" {
            return Err(ApiError::invalid(
                field,
                format!(
                    "hardware_map: {key:?} is not usable as a template key (letters, digits, '_'; not \"Hardware\")"
                ),
            ));
        }
        let value = value.trim();
        if value.is_empty() || value.chars().any(char::is_control) {
            return Err(ApiError::invalid(
                field,
                format!("hardware_map.{key}: empty worker id; give a machine's MAC, IP or id"),
            ));
        }
        let looks_like_machine =
            value.parse::<MacAddr>().is_ok() || value.parse::<IpAddr>().is_ok();
        let worker = match value.parse::<MacAddr>() {
            Ok(mac) => mac.to_string(),
            Err(_) => value.to_string(),
        };
        match lookup(store, value).await? {
            Some(hw) => {
                machines.insert(key.clone(), hw);
            }
            None if looks_like_machine => {
                return Err(ApiError::invalid(
                    field,
                    format!(
                        "hardware_map.{key}: no hardware has MAC, IP or id {value:?}; push it first with `bellows hardware push`"
                    ),
                ));
            }
            None => {}
        }
        map.insert(key.clone(), worker);
    }
    let hardware =
        match (hardware, &req.hardware) {
            (Some(hw), _) => Some(hw),
            (None, Some(id)) => Some(lookup(store, id).await?.ok_or_else(|| {
                ApiError::invalid("hardware", format!("hardware {id:?} not found"))
            })?),
            (None, None) => machines
                .get("device_1")
                .or_else(|| machines.values().next())
                .cloned(),
        };
    let ctx = RenderContext {
        hardware_map: map.clone(),
        hardware,
    };
    let (rendered, parsed) = render(&template.data, &ctx)?;
    let mut wf = Workflow::new(
        uuid::Uuid::new_v4().to_string(),
        template.id.clone(),
        map,
        ctx.hardware.as_ref().map(|h| h.id.clone()),
        rendered,
        &parsed,
        now_ms(),
    );
    wf.boot_options = req.boot_options.clone();
    wf.created_by = created_by;
    if wf.boot_options.boot_mode.is_some() && wf.hardware_id.is_none() {
        return Err(ApiError::invalid(
            "boot_options.boot_mode",
            "boot_options.boot_mode needs a machine to boot: give `hardware` or a device_1",
        ));
    }
    Ok(wf)
}

async fn resolve(state: &AppState, id: &str) -> Result<Workflow, ApiError> {
    state
        .store
        .workflow(id)
        .await?
        .ok_or_else(|| ApiError::not_found("workflow", id))
}

pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Workflow>, ApiError> {
    Ok(Json(resolve(&state, &id).await?))
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    state: Option<String>,
    hardware: Option<String>,
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<List<Workflow>>, ApiError> {
    let wf_state = match q.state.as_deref() {
        None => None,
        Some(s) => Some(bellows_model::State::parse(s).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!(
                    "state: {s:?} is not one of PENDING, RUNNING, SUCCESS, FAILED, TIMEOUT, CANCELLED"
                ),
                Some("state".into()),
            )
        })?),
    };
    // `hardware` may be a MAC, IP or id; workflows are indexed by worker.
    let worker = match q.hardware {
        None => None,
        Some(h) => Some(match h.parse::<MacAddr>() {
            Ok(mac) => mac.to_string(),
            Err(_) => match lookup(state.store.as_ref(), &h).await? {
                Some(hw) => hw
                    .macs()
                    .next()
                    .map_or_else(|| hw.id.clone(), |m| m.to_string()),
                None => h,
            },
        }),
    };
    let filter = WorkflowFilter {
        state: wf_state,
        worker,
        active: false,
    };
    Ok(Json(List::from(state.store.list_workflows(&filter).await?)))
}

pub(crate) async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<List<EventRecord>>, ApiError> {
    resolve(&state, &id).await?;
    Ok(Json(List::from(state.store.workflow_events(&id).await?)))
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.store.delete_workflow(&id).await?;
    tracing::info!(id = %id, "workflow deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Ends a workflow as CANCELLED; its worker is told to stop the running
/// action. Cancelling an ended workflow is refused with 409.
pub(crate) async fn cancel(
    State(state): State<AppState>,
    operator: Option<Extension<Operator>>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Workflow>, ApiError> {
    let bytes = body::read(body).await?;
    let req: CancelWorkflow = if bytes.iter().all(u8::is_ascii_whitespace) {
        CancelWorkflow::default()
    } else {
        body::json(Body::from(bytes)).await?
    };
    resolve(&state, &id).await?;
    let wf = state
        .store
        .apply_transition(
            &id,
            &bellows_model::Transition::Cancelled {
                reason: req.reason,
                by: operator.map(|Extension(op)| op.name),
                at: now_ms(),
            },
        )
        .await?;
    tracing::info!(id = %id, "workflow cancelled");
    Ok(Json(wf))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogsQuery {
    /// Only this action's output.
    action: Option<String>,
    /// Only lines after this sequence number (to follow).
    after: Option<i64>,
    /// At most this many lines.
    limit: Option<u32>,
}

/// Action output the workers streamed, oldest first.
pub(crate) async fn logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Json<List<ActionLogRecord>>, ApiError> {
    resolve(&state, &id).await?;
    let query = bellows_store::ActionLogQuery {
        action: q.action,
        after: q.after.unwrap_or(0).max(0),
        limit: q.limit.unwrap_or(500).clamp(1, 10_000),
    };
    Ok(Json(List::from(
        state.store.action_logs(&id, &query).await?,
    )))
}
