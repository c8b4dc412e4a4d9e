//! `/api/v1/rules`: enrolment rules (create or replace, list, get,
//! delete), `POST /api/v1/rules/test` (which rule would take a machine,
//! changing nothing), and `POST /api/v1/workflow-sets` (one template for
//! every machine a selector takes).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use bellows_model::api::{
    List, NewWorkflow, RuleSource, RuleTest, RuleTestRequest, WorkflowSet, WorkflowSetRequest,
};
use bellows_model::discovery::rule::{self, Match, Rule, RuleRecord};
use bellows_model::{Hardware, MacAddr};

use crate::auth::Operator;
use crate::{ApiError, AppState, body};

fn parse_rule(text: &str) -> Result<Rule, ApiError> {
    Rule::parse(text).map_err(|e| ApiError::invalid(format!("data.{}", e.field), e.message))
}

/// `POST /rules`: create, or replace the rule of the same name.
pub(crate) async fn put(
    State(state): State<AppState>,
    body: Body,
) -> Result<(StatusCode, Json<RuleRecord>), ApiError> {
    let req: RuleSource = body::json(body).await?;
    let rule = parse_rule(&req.data)?;
    let created = state.store.put_rule(&rule).await?;
    let record = state
        .store
        .rule(&rule.name)
        .await?
        .ok_or_else(|| not_found(&rule.name))?;
    tracing::info!(rule = %rule.name, created, "rule stored");
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(record)))
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("rule {name:?} not found"),
        None,
    )
}

/// `GET /rules`, in the order they are tried.
pub(crate) async fn list(
    State(state): State<AppState>,
) -> Result<Json<List<RuleRecord>>, ApiError> {
    Ok(Json(List::from(state.store.list_rules().await?)))
}

/// `GET /rules/{name}`.
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<RuleRecord>, ApiError> {
    state
        .store
        .rule(&name)
        .await?
        .map(Json)
        .ok_or_else(|| not_found(&name))
}

/// `DELETE /rules/{name}`.
pub(crate) async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.store.delete_rule(&name).await?;
    tracing::info!(rule = %name, "rule deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn machine(state: &AppState, key: &str) -> Result<Hardware, ApiError> {
    let found = match key.parse::<MacAddr>() {
        Ok(mac) => state.store.hardware_by_mac(mac).await?,
        Err(_) => state.store.hardware(key).await?,
    };
    found.ok_or_else(|| ApiError::invalid("hardware", format!("hardware {key:?} not found")))
}

/// `POST /rules/test`: every rule's verdict on a machine, the winner, and
/// the record and workflow it would make; nothing is written (the rule's
/// counter is read, not advanced).
pub(crate) async fn test(
    State(state): State<AppState>,
    body: Body,
) -> Result<Json<RuleTest>, ApiError> {
    let req: RuleTestRequest = body::json(body).await?;
    let hw = machine(&state, &req.hardware).await?;
    let mut records = state.store.list_rules().await?;
    if let Some(text) = &req.data {
        let candidate = parse_rule(text)?;
        let enrolled = records
            .iter()
            .find(|r| r.rule.name == candidate.name)
            .map_or(0, |r| r.enrolled);
        records.retain(|r| r.rule.name != candidate.name);
        records.push(RuleRecord {
            rule: candidate,
            enrolled,
            created_at: 0,
            updated_at: 0,
        });
    }
    let mut rules: Vec<Rule> = records.iter().map(|r| r.rule.clone()).collect();
    rule::sort(&mut rules);
    let (verdicts, winner) = rule::evaluate(&rules, &hw);
    let mut answer = RuleTest {
        verdicts,
        winner: None,
        hardware: None,
        workflow: None,
        note: None,
    };
    if !bellows_model::discovery::is_discovered(&hw) {
        answer.note = Some(format!(
            "{} is {}: rules only enrol discovered machines",
            hw.id,
            bellows_model::discovery::hardware_state(&hw)
        ));
        return Ok(Json(answer));
    }
    if let Some(i) = winner {
        let rule = &rules[i];
        let counter = records
            .iter()
            .find(|r| r.rule.name == rule.name)
            .map_or(0, |r| r.enrolled)
            + 1;
        answer.winner = Some(rule.name.clone());
        match rule.apply(&hw, counter) {
            Ok(enrolment) => {
                answer.hardware = Some(enrolment.hardware);
                answer.workflow = enrolment.workflow;
            }
            Err(e) => {
                answer.note = Some(format!(
                    "the rule matches but its result is invalid ({}: {}); the machine would stay discovered",
                    e.field, e.message
                ));
            }
        }
    } else {
        answer.note = Some("no rule matches: the machine would stay discovered".into());
    }
    Ok(Json(answer))
}

/// Most machines one workflow set may take.
const MAX_SET: usize = 10_000;

/// `POST /workflow-sets`: a workflow of one template for every machine the
/// selector takes (`device_1` is each machine's first MAC). Every workflow
/// is rendered before any is stored, so a template that fails for one
/// machine creates none.
pub(crate) async fn create_set(
    State(state): State<AppState>,
    operator: Option<Extension<Operator>>,
    body: Body,
) -> Result<(StatusCode, Json<WorkflowSet>), ApiError> {
    let req: WorkflowSetRequest = body::json(body).await?;
    let selector: Match = if req.selector.trim().is_empty() {
        return Err(ApiError::invalid(
            "selector",
            "an empty selector would take every machine; say which (e.g. `tags: [rack-12]`)",
        ));
    } else {
        Match::parse(&req.selector).map_err(|e| {
            ApiError::invalid(
                format!("selector.{}", e.field),
                format!("not a selector: {}", e.message),
            )
        })?
    };
    let machines: Vec<Hardware> = state
        .store
        .list_hardware()
        .await?
        .into_iter()
        .filter(|hw| selector.check(hw).is_ok())
        .filter(|hw| !bellows_model::discovery::is_discovered(hw))
        .collect();
    if machines.len() > MAX_SET {
        return Err(ApiError::invalid(
            "selector",
            format!(
                "the selector takes {} machines; at most {MAX_SET} in one set",
                machines.len()
            ),
        ));
    }
    let ids: Vec<String> = machines.iter().map(|hw| hw.id.clone()).collect();
    if req.dry_run {
        return Ok((
            StatusCode::OK,
            Json(WorkflowSet {
                machines: ids,
                workflows: Vec::new(),
            }),
        ));
    }
    let by = operator.map(|Extension(op)| op.name);
    let mut built = Vec::with_capacity(machines.len());
    for hw in machines {
        let Some(mac) = hw.macs().next() else {
            return Err(ApiError::invalid(
                "selector",
                format!("hardware {:?} has no MAC to run a workflow on", hw.id),
            ));
        };
        let request = NewWorkflow {
            template: req.template.clone(),
            hardware_map: [("device_1".to_string(), mac.to_string())]
                .into_iter()
                .collect(),
            hardware: Some(hw.id.clone()),
            boot_options: Default::default(),
        };
        built.push(
            crate::workflows::build(state.store.as_ref(), &request, by.clone(), Some(hw)).await?,
        );
    }
    for wf in &built {
        state.store.create_workflow(wf).await?;
        crate::workflows::start_boot(&state, wf);
    }
    tracing::info!(template = %req.template, machines = ids.len(), "workflow set created");
    Ok((
        StatusCode::CREATED,
        Json(WorkflowSet {
            machines: ids,
            workflows: built,
        }),
    ))
}
