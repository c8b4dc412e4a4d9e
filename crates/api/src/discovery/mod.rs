//! Discovery on the server: a machine's report becomes a `discovered`
//! record, the rules are tried on it, and the worker learns whether to
//! reboot into its workflow. Enrolment (by a rule, or by an operator
//! through `POST /api/v1/hardware/{id}/enroll`) is one store transaction:
//! the record and its workflow together.

mod token;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::ConnectInfo;
use bellows_model::api::{Facts, NewWorkflow};
use bellows_model::discovery::rule::{self, Rule};
use bellows_model::discovery::{
    Pool, discovered_record, hardware_state, is_discovered, mark_enrolled, update_inventory,
};
use bellows_model::{Hardware, MacAddr, Workflow, time::now_ms};
use bellows_store::{Store, StoreError};
use tonic::{Request, Response, Status};

use crate::ApiError;
use crate::auth::DiscoveryCaller;
use crate::worker::service::WorkerService;

pub use token::{DISCOVERY_TOKEN_PREFIX, DiscoveryClaim, DiscoveryTokens, KEY_LABEL, TokenError};

/// How this server runs discovery.
#[derive(Debug, Clone)]
pub struct DiscoverySettings {
    /// Reservation mode's pool: a discovered record keeps the address the
    /// machine reports from when it is one of the pool's. `None` in proxy
    /// mode (the site's DHCP addresses machines).
    pub pool: Option<Pool>,
    /// Most records in state `discovered`; reports of new machines beyond
    /// it are refused (a flood of made-up MACs stops here).
    pub max_discovered: usize,
    /// How often a waiting machine reports again.
    pub poll_seconds: u32,
}

impl Default for DiscoverySettings {
    fn default() -> Self {
        DiscoverySettings {
            pool: None,
            max_discovered: 1024,
            poll_seconds: 10,
        }
    }
}

/// Reports of an unchanged inventory are written at most this often (the
/// record's `last_seen`); a changed one is written at once.
const RESEEN_WRITE_MS: i64 = 10 * 60 * 1000;
/// Most disks and NICs kept from one report (a record must stay small).
const MAX_DEVICES: usize = 256;
/// Longest text field kept from one report.
const MAX_TEXT: usize = 256;

/// `Discover`: store the report, try the rules, answer.
pub(crate) async fn report(
    service: &WorkerService,
    request: Request<bellows_rpc::v1::DiscoverRequest>,
) -> Result<Response<bellows_rpc::v1::DiscoverReply>, Status> {
    let settings = service.discovery_settings().ok_or_else(|| {
        Status::failed_precondition("discovery is off on this server (--discovery)")
    })?;
    let headers = request.metadata().clone().into_headers();
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let caller = service.auth().discovery_caller(&headers, peer).await?;
    let req = request.into_inner();
    let mac: MacAddr =
        req.worker_id.trim().parse().map_err(|_| {
            Status::invalid_argument("worker_id must be the MAC the machine booted by")
        })?;
    if let DiscoveryCaller::Machine(claim) = &caller
        && claim.mac != mac
    {
        tracing::warn!(claimed = %mac, credential_for = %claim.mac, peer = ?peer,
            "a discovery credential claimed another MAC");
        return Err(Status::permission_denied(format!(
            "this credential is {}'s, not {mac}'s",
            claim.mac
        )));
    }
    let facts = bounded(crate::worker::service::facts_model(
        &req.facts.unwrap_or_default(),
    ));
    let store = service.store();
    let reply = |enrolled: bool, id: &str, message: String| {
        Ok(Response::new(bellows_rpc::v1::DiscoverReply {
            enrolled,
            hardware_id: id.to_string(),
            poll_seconds: settings.poll_seconds.max(1),
            message,
        }))
    };
    let now = now_ms();
    let hw = match store.hardware_by_mac(mac).await.map_err(status)? {
        Some(hw) if !is_discovered(&hw) => {
            // Enrolled (or registered by hand): the next boot runs its
            // workflow, or boots the disk.
            return reply(
                true,
                &hw.id,
                format!("{} is {}: reboot", hw.id, hardware_state(&hw)),
            );
        }
        Some(mut hw) => {
            let seen = hw.discovery.as_ref().map_or(0, |d| d.last_seen);
            let same = hw.discovery.as_ref().is_some_and(|d| d.inventory == facts);
            if !same || now - seen > RESEEN_WRITE_MS {
                update_inventory(&mut hw, facts, now);
                match store.replace_discovered(&hw, None).await {
                    Ok(()) => {}
                    // Enrolled meanwhile (a rule on another server, an
                    // operator): the next report says so.
                    Err(StoreError::Conflict { .. }) => {
                        return reply(false, &hw.id, "enrolment in progress".into());
                    }
                    Err(e) => return Err(status(e)),
                }
            }
            hw
        }
        None => {
            let index = store.index();
            let waiting = index.count_where(is_discovered);
            if waiting >= settings.max_discovered {
                tracing::warn!(%mac, waiting, "discovery: refused a new machine: the limit of discovered machines is reached");
                return Err(Status::resource_exhausted(format!(
                    "{waiting} machines are already waiting in discovery (--discovery-max): enrol or delete some"
                )));
            }
            let address = peer.map(|p| crate::auth::canonical(p.ip())).and_then(|ip| {
                match (&settings.pool, ip) {
                    (Some(pool), IpAddr::V4(v4)) if pool.contains(ip) => Some(pool.reservation(v4)),
                    _ => None,
                }
            });
            let names = settings
                .pool
                .as_ref()
                .map(|p| p.name_servers.clone())
                .unwrap_or_default();
            let hw = discovered_record(mac, address, &names, facts, now);
            let pushed = store.push_hardware(hw).await.map_err(status)?;
            tracing::info!(%mac, hardware = %pushed.hardware.id, "discovery: a new machine reported its inventory");
            pushed.hardware
        }
    };
    match try_rules(store.as_ref(), &hw).await {
        Ok(Some(name)) => reply(true, &hw.id, format!("enrolled by rule {name:?}: reboot")),
        Ok(None) => reply(false, &hw.id, "discovered; no rule matches: waiting".into()),
        Err(e) => {
            tracing::warn!(hardware = %hw.id, error = %e.message, "discovery: a matching rule could not enrol the machine");
            reply(
                false,
                &hw.id,
                format!("a rule matched but failed: {}", e.message),
            )
        }
    }
}

/// A report cut to sizes a record can hold.
fn bounded(mut facts: Facts) -> Facts {
    let cut = |s: &mut String| {
        if s.len() > MAX_TEXT {
            let mut end = MAX_TEXT;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
        }
    };
    facts.disks.truncate(MAX_DEVICES);
    facts.nics.truncate(MAX_DEVICES);
    for d in &mut facts.disks {
        cut(&mut d.name);
        cut(&mut d.model);
        cut(&mut d.serial);
    }
    for n in &mut facts.nics {
        cut(&mut n.name);
        cut(&mut n.mac);
        cut(&mut n.driver);
        n.addresses.truncate(16);
        n.addresses.iter_mut().for_each(cut);
        if let Some(l) = n.lldp.as_mut() {
            cut(&mut l.chassis_id);
            cut(&mut l.port_id);
            cut(&mut l.system_name);
            cut(&mut l.port_description);
        }
    }
    cut(&mut facts.hostname);
    cut(&mut facts.kernel);
    cut(&mut facts.architecture);
    cut(&mut facts.bmc_address);
    if let Some(c) = facts.cpu.as_mut() {
        cut(&mut c.model);
    }
    // DMI and the like: string fields only, each cut, at most 32.
    if let serde_json::Value::Object(map) = &mut facts.extra {
        let kept: serde_json::Map<String, serde_json::Value> = map
            .iter()
            .filter(|(k, v)| k.len() <= 64 && v.is_string())
            .take(32)
            .map(|(k, v)| {
                let mut s = v.as_str().unwrap_or_default().to_string();
                cut(&mut s);
                (k.clone(), serde_json::Value::String(s))
            })
            .collect();
        *map = kept;
    } else {
        facts.extra = serde_json::Value::Object(Default::default());
    }
    facts
}

fn status(e: StoreError) -> Status {
    match e {
        StoreError::Conflict { message, .. } => Status::already_exists(message),
        StoreError::NotFound { kind, id } => Status::not_found(format!("no {kind} {id:?}")),
        other => Status::unavailable(format!("store: {other}")),
    }
}

/// Tries the stored rules on a discovered `hw`; the name of the rule that
/// enrolled it, if one did.
pub(crate) async fn try_rules(
    store: &dyn Store,
    hw: &Hardware,
) -> Result<Option<String>, ApiError> {
    let records = store.list_rules().await?;
    let rules: Vec<Rule> = records.into_iter().map(|r| r.rule).collect();
    let (_, winner) = rule::evaluate(&rules, hw);
    let Some(i) = winner else { return Ok(None) };
    let rule = &rules[i];
    let counter = store.next_rule_counter(&rule.name).await?;
    let enrolment = rule
        .apply(hw, counter)
        .map_err(|e| ApiError::invalid(e.field.clone(), format!("rule {:?}: {e}", rule.name)))?;
    enrol(
        store,
        enrolment.hardware,
        enrolment.workflow,
        Some(format!("rule:{}", rule.name)),
    )
    .await?;
    tracing::info!(hardware = %hw.id, rule = %rule.name, counter, "discovery: enrolled by a rule");
    Ok(Some(rule.name.clone()))
}

/// Stores an enrolled record and its workflow (built and rendered first,
/// so a template that fails leaves the machine discovered), in one
/// transaction.
pub(crate) async fn enrol(
    store: &dyn Store,
    hw: Hardware,
    workflow: Option<NewWorkflow>,
    created_by: Option<String>,
) -> Result<Option<Workflow>, ApiError> {
    let wf = match &workflow {
        Some(req) => Some(crate::workflows::build(store, req, created_by, Some(hw.clone())).await?),
        None => None,
    };
    store.replace_discovered(&hw, wf.as_ref()).await?;
    Ok(wf)
}

/// An operator's enrolment: `hw` (discovered) marked enrolled by
/// `operator`, with a workflow of `template` if given.
pub(crate) async fn enrol_by_operator(
    store: &Arc<dyn Store>,
    mut hw: Hardware,
    template: Option<String>,
    operator: &str,
) -> Result<Option<Workflow>, ApiError> {
    let mac = hw.macs().next().map(|m| m.to_string()).unwrap_or_default();
    mark_enrolled(&mut hw, format!("operator:{operator}"));
    let request = template.map(|template| NewWorkflow {
        template,
        hardware_map: [("device_1".to_string(), mac)].into_iter().collect(),
        hardware: Some(hw.id.clone()),
        boot_options: Default::default(),
    });
    enrol(store.as_ref(), hw, request, Some(operator.to_string())).await
}
