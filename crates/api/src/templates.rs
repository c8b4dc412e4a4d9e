//! `/api/v1/templates`: create, get, list, update, delete.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bellows_model::api::{List, NewTemplate, TemplateRecord, TemplateUpdate};
use bellows_model::render::check_source;
use bellows_model::template::MAX_NAME_LEN;

use crate::{ApiError, AppState, body};

fn check_name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() {
        return Err(ApiError::invalid("name", "name: must not be empty"));
    }
    if name.chars().count() > MAX_NAME_LEN || name.chars().any(|c| c.is_control() || c == '/') {
        return Err(ApiError::invalid(
            "name",
            format!("name: at most {MAX_NAME_LEN} characters, no '/' or control characters"),
        ));
    }
    Ok(())
}

/// Validates a template source as far as it can be without a machine
/// (`render::check_source`: syntax, the render budget, the YAML once
/// rendered); the rest is checked when a workflow renders it.
fn check_data(data: &str) -> Result<(), ApiError> {
    let prefix = |e: bellows_model::ValidationError| {
        let field = if e.field.is_empty() || e.field == "template" {
            "data".to_string()
        } else {
            format!("data.{}", e.field)
        };
        ApiError::invalid(field, e.to_string())
    };
    check_source(data).map_err(prefix)
}

pub(crate) async fn resolve(state: &AppState, id: &str) -> Result<TemplateRecord, ApiError> {
    state
        .store
        .template(id)
        .await?
        .ok_or_else(|| ApiError::not_found("template", id))
}

pub(crate) async fn create(
    State(state): State<AppState>,
    body: Body,
) -> Result<(StatusCode, Json<TemplateRecord>), ApiError> {
    let req: NewTemplate = body::json(body).await?;
    check_name(&req.name)?;
    check_data(&req.data)?;
    let record = state.store.create_template(&req.name, &req.data).await?;
    tracing::info!(id = %record.id, name = %record.name, "template created");
    Ok((StatusCode::CREATED, Json(record)))
}

pub(crate) async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<TemplateRecord>, ApiError> {
    let req: TemplateUpdate = body::json(body).await?;
    if let Some(name) = &req.name {
        check_name(name)?;
    }
    check_data(&req.data)?;
    let existing = resolve(&state, &id).await?;
    let record = state
        .store
        .update_template(&existing.id, req.name.as_deref(), &req.data)
        .await?;
    Ok(Json(record))
}

pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TemplateRecord>, ApiError> {
    Ok(Json(resolve(&state, &id).await?))
}

pub(crate) async fn list(
    State(state): State<AppState>,
) -> Result<Json<List<TemplateRecord>>, ApiError> {
    Ok(Json(List::from(state.store.list_templates().await?)))
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let existing = resolve(&state, &id).await?;
    state.store.delete_template(&existing.id).await?;
    Ok(StatusCode::NO_CONTENT)
}
