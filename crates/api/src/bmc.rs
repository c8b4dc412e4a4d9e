//! `/api/v1/hardware/{id}/bmc`: how to reach a machine's BMC. The password
//! is write-only: accepted on PUT, never returned, never logged.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bellows_model::api::{BmcRecord, BmcView, List, SetBmc};
use bellows_store::BmcSecret;

use crate::hardware::resolve;
use crate::{ApiError, AppState, body};

pub(crate) async fn put(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<BmcView>, ApiError> {
    let req: SetBmc = body::json(body).await?;
    let hw = resolve(&state, &id).await?;
    let address = req.address.trim();
    if address.is_empty() || address.contains(['/', ' ', '@']) {
        return Err(ApiError::invalid(
            "address",
            "address: give the BMC's host name or IP address (no scheme, path or user)",
        ));
    }
    let protocol = req.protocol.as_deref().unwrap_or("auto");
    if !["ipmi", "redfish", "auto"].contains(&protocol) {
        return Err(ApiError::invalid(
            "protocol",
            format!("protocol: {protocol:?} is not one of ipmi, redfish, auto"),
        ));
    }
    if req.username.trim().is_empty() {
        return Err(ApiError::invalid("username", "username: must not be empty"));
    }
    let existing = state.store.bmc_with_secret(&hw.id).await?;
    let secret = match (req.password, existing) {
        (Some(p), _) if !p.is_empty() => BmcSecret(p),
        (Some(_), _) => {
            return Err(ApiError::invalid("password", "password: must not be empty"));
        }
        (None, Some((_, old))) => old,
        (None, None) => {
            return Err(ApiError::invalid(
                "password",
                "password: required when the BMC is first set",
            ));
        }
    };
    let previous = state.store.bmc(&hw.id).await?;
    let record = BmcRecord {
        hardware_id: hw.id.clone(),
        address: address.to_string(),
        port: req.port,
        protocol: protocol.to_string(),
        username: req.username.trim().to_string(),
        insecure_tls: req.insecure_tls,
        power_state: previous.as_ref().and_then(|p| p.power_state.clone()),
        power_checked_at: previous.as_ref().and_then(|p| p.power_checked_at),
        power_error: None,
    };
    state.store.put_bmc(&record, &secret).await?;
    tracing::info!(hardware = %hw.id, address = %record.address, protocol = %record.protocol, "BMC set");
    Ok(Json(BmcView::from(record)))
}

pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<BmcView>, ApiError> {
    let hw = resolve(&state, &id).await?;
    match state.store.bmc(&hw.id).await? {
        Some(record) => Ok(Json(BmcView::from(record))),
        None => Err(ApiError::not_found("bmc for hardware", &hw.id)),
    }
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let hw = resolve(&state, &id).await?;
    state.store.delete_bmc(&hw.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<List<BmcView>>, ApiError> {
    let items = state.store.list_bmcs().await?;
    Ok(Json(List::from(
        items.into_iter().map(BmcView::from).collect::<Vec<_>>(),
    )))
}
