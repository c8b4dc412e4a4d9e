//! Before the storm: one hardware record per machine (its MAC, its
//! reserved address, network boot and workflows allowed), a three-action
//! template, and a workflow for every machine, through the API as an
//! operator would.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::{Error, ip, mac, mac_text};

/// `bellows-storm setup`.
#[derive(clap::Args)]
pub struct SetupArgs {
    /// The API's base URL.
    #[arg(long)]
    api: String,
    /// An operator or admin token.
    #[arg(long, env = "BELLOWS_TOKEN")]
    token: String,
    /// The server's CA certificate (PEM), for an https:// API.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// How many machines.
    #[arg(long)]
    machines: usize,
    /// Machine i's reserved address is this plus i.
    #[arg(long)]
    first_ip: Ipv4Addr,
    /// Netmask of the machines' network.
    #[arg(long, default_value = "255.255.0.0")]
    netmask: Ipv4Addr,
    /// Their router.
    #[arg(long)]
    gateway: Ipv4Addr,
    /// Actions in the template.
    #[arg(long, default_value_t = 3)]
    actions: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

/// The template's name.
const TEMPLATE: &str = "storm";

fn template(actions: usize) -> String {
    let mut t = format!(
        "version: \"0.1\"\nname: {TEMPLATE}\nglobal_timeout: 1800\ntasks:\n  - name: provision\n    worker: \"{{{{.device_1}}}}\"\n    actions:\n"
    );
    for a in 1..=actions {
        t.push_str(&format!(
            "      - name: step-{a}\n        image: bellows/writefile\n        timeout: 600\n"
        ));
    }
    t
}

/// Pushes everything; fails on the first refusal, naming it.
pub async fn setup(a: SetupArgs) -> Result<(), Error> {
    let builder = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = &a.ca {
        let pem = std::fs::read(ca).map_err(|e| Error::msg(format!("{}: {e}", ca.display())))?;
        use rustls::pki_types::pem::PemObject;
        for der in rustls::pki_types::CertificateDer::pem_slice_iter(&pem).flatten() {
            let _ = roots.add(der);
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::msg(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let http = builder.tls_backend_preconfigured(tls).build()?;
    let api = a.api.trim_end_matches('/').to_string();
    let auth = format!("Bearer {}", a.token);

    let resp = http
        .post(format!("{api}/api/v1/templates"))
        .header("authorization", &auth)
        .json(&serde_json::json!({"name": TEMPLATE, "data": template(a.actions)}))
        .send()
        .await?;
    if !resp.status().is_success() && resp.status() != reqwest::StatusCode::CONFLICT {
        let status = resp.status();
        return Err(Error::msg(format!(
            "create the template: {status}: {}",
            resp.text().await.unwrap_or_default()
        )));
    }

    let sem = Arc::new(Semaphore::new(a.concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..a.machines {
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Error::msg(e.to_string()))?;
        let (http, api, auth) = (http.clone(), api.clone(), auth.clone());
        let (first, netmask, gateway) = (a.first_ip, a.netmask, a.gateway);
        set.spawn(async move {
            let _permit = permit;
            let m = mac_text(mac(i));
            let name = format!("storm-{i:05}");
            let hw = serde_json::json!({
                "id": name,
                "network": {"interfaces": [{
                    "dhcp": {"mac": m, "hostname": name, "lease_time": 86400,
                             "ip": {"address": ip(first, i).to_string(),
                                    "netmask": netmask.to_string(),
                                    "gateway": gateway.to_string()}},
                    "netboot": {"allow_pxe": true, "allow_workflow": true}}]},
                "metadata": {"instance": {"hostname": name}},
            });
            post(&http, &auth, &format!("{api}/api/v1/hardware"), hw, &name).await?;
            let wf = serde_json::json!({
                "template": TEMPLATE,
                "hardware_map": {"device_1": m},
            });
            post(&http, &auth, &format!("{api}/api/v1/workflows"), wf, &name).await
        });
    }
    while let Some(r) = set.join_next().await {
        r.map_err(|e| Error::msg(e.to_string()))??;
    }
    eprintln!(
        "storm setup: {} machines, each with a {}-action workflow",
        a.machines, a.actions
    );
    Ok(())
}

async fn post(
    http: &reqwest::Client,
    auth: &str,
    url: &str,
    body: serde_json::Value,
    what: &str,
) -> Result<(), Error> {
    let resp = http
        .post(url)
        .header("authorization", auth)
        .json(&body)
        .send()
        .await?;
    if !resp.status().is_success() {
        let status = resp.status();
        return Err(Error::msg(format!(
            "{what}: POST {url}: {status}: {}",
            resp.text().await.unwrap_or_default()
        )));
    }
    Ok(())
}
