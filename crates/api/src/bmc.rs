//! `/api/v1/hardware/{id}/bmc`: how to reach a machine's BMC. The password
//! is write-only: accepted on PUT, never returned, never logged. A PUT
//! without one keeps the stored password only while the address, port,
//! protocol, user name and TLS setting stay the same; changing any of them
//! needs the password again, so that a re-pointed BMC record cannot carry
//! the stored password to another host.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bellows_model::api::{BmcRecord, BmcView, List, SetBmc};
use bellows_store::{BmcSecret, StoreError};

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
    match req.password {
        Some(p) if !p.is_empty() => state.store.put_bmc(&record, &BmcSecret(p)).await?,
        Some(_) => {
            return Err(ApiError::invalid("password", "password: must not be empty"));
        }
        // Keeping the stored password: the store refuses (and changes
        // nothing) if the record would send it anywhere else.
        None => match state.store.update_bmc(&record).await {
            Err(StoreError::NotFound { .. }) => {
                return Err(ApiError::invalid(
                    "password",
                    "password: required when the BMC is first set",
                ));
            }
            other => other?,
        },
    }
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
