//! HTTP boot routes: `auto.ipxe` per machine, the iPXE binaries, and the
//! in-memory OS files.
//!
//! Two rules keep a host on the network to its own business: a machine's
//! script goes only to an address reserved for that machine (when it has
//! one; see [`BootState::script_from_any_address`]), and files are served
//! only from inside their folder, a symlink that leads out of it being
//! refused like a missing file (as TFTP does).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bellows_model::{Hardware, MacAddr, boot};

use crate::script::{InstallOs, LocalBoot, ScriptChoice, choose, render};

/// The two questions a boot script needs answered about the world: which
/// machine is asking, and whether it has work waiting. A port rather than
/// the store, so this crate knows nothing of how records are kept.
#[async_trait::async_trait]
pub trait BootLookup: Send + Sync {
    /// The machine with an interface whose DHCP MAC is `mac`.
    fn by_mac(&self, mac: MacAddr) -> Option<Arc<Hardware>>;
    /// The machine with an interface reserved `ip` (IPv4-mapped IPv6
    /// addresses count as their IPv4 address).
    fn by_ip(&self, ip: IpAddr) -> Option<Arc<Hardware>>;
    /// The id of a PENDING or RUNNING workflow that names this MAC or
    /// machine as its worker, if any: a RUNNING one counts because a
    /// machine that rebooted mid-way must get back to its worker.
    async fn waiting_workflow(
        &self,
        hw: &Hardware,
        mac: MacAddr,
    ) -> Result<Option<String>, LookupError>;
    /// A new per-boot credential for the worker `mac` on `hw`, which is
    /// about to boot the in-memory OS to run `workflow_id`: `None` when the
    /// server runs without credentials (`--insecure`). Minting replaces the
    /// machine's previous credential.
    async fn mint_credential(
        &self,
        hw: &Hardware,
        mac: MacAddr,
        workflow_id: &str,
    ) -> Result<Option<String>, LookupError>;
    /// A credential for a machine that boots discovery (an unknown MAC,
    /// or a discovered record): it lets the worker report its inventory
    /// and nothing else. `None` under `--insecure` or without discovery.
    async fn mint_discovery_credential(
        &self,
        _hw: &Hardware,
        _mac: MacAddr,
    ) -> Result<Option<String>, LookupError> {
        Ok(None)
    }
    /// Told when `auto.ipxe` is served with `choice`, for the machine's boot
    /// timeline; must return at once. Nothing by default.
    fn script_served(&self, _hw: &Hardware, _mac: MacAddr, _choice: &ScriptChoice) {}
}

/// The lookup behind [`BootLookup`] failed; the machine is told to retry.
#[derive(Debug, thiserror::Error)]
#[error("cannot read workflows: {0}")]
pub struct LookupError(pub String);

/// What the boot routes need.
#[derive(Clone)]
pub struct BootState {
    /// Machines and whether they have work waiting.
    pub machines: Arc<dyn BootLookup>,
    /// The in-memory OS every installing machine boots.
    pub os: Arc<InstallOs>,
    /// What a machine with nothing to do boots.
    pub local_boot: Arc<LocalBoot>,
    /// Serve `/ipxe/<mac>/auto.ipxe` to any address, not only to the
    /// machine's reserved ones: for relayed or NATed networks, where a
    /// machine's requests arrive from another address. Weakens the script's
    /// protection to "whoever knows the MAC".
    pub script_from_any_address: bool,
}

/// Where files come from.
#[derive(Debug, Clone)]
pub struct BootDirs {
    /// iPXE binaries (`undionly.kpxe`, `ipxe.efi` …), served at `/ipxe/`.
    pub ipxe_dir: PathBuf,
    /// In-memory OS files (kernel, initrd), served at `/osie/`, if local.
    pub osie_dir: Option<PathBuf>,
    /// rEFInd's binaries (`refind_x64.efi` …) and optionally the
    /// operator's `refind.conf`, served at `/refind/` for `--local-boot
    /// refind`.
    pub refind_dir: Option<PathBuf>,
}

/// Seed 004's rEFInd settings: boot the first loader found on an internal
/// disk after one second, text only, no scan delay. Served when the rEFInd
/// directory has no `refind.conf` of the operator's.
pub const DEFAULT_REFIND_CONF: &str = "\
# rEFInd settings for network-chained local boot (Bellows, after seed 004).
timeout 1
default_selection 1
hideui hwtest
hideui hints
banner_scale
textonly
scanfor internal
uefi_deep_legacy_scan
scan_delay 0
";

/// rEFInd's binary for an iPXE `${buildarch}`.
fn refind_binary(buildarch: &str) -> Option<&'static str> {
    match buildarch {
        "x86_64" => Some("refind_x64.efi"),
        "i386" => Some("refind_ia32.efi"),
        "arm64" => Some("refind_aa64.efi"),
        _ => None,
    }
}

/// The boot routes, to merge into the HTTP boot listener (which must run
/// with connect info, for `/auto.ipxe` by source address):
/// `/ipxe/<mac>/auto.ipxe`, `/auto.ipxe` and `/ipxe/auto.ipxe` (by source
/// address), `/ipxe/<binary>` and `/ipxe/<mac>/<binary>`, `/osie/<file>`.
pub fn router(state: BootState, files: &BootDirs) -> Router {
    let with_files = WithFiles {
        boot: state,
        ipxe_dir: Arc::new(files.ipxe_dir.clone()),
    };
    let osie_dir = files.osie_dir.clone().map(Arc::new);
    let mut router = Router::new()
        .route(
            &format!("{}/{{first}}/{{second}}", boot::IPXE_PATH),
            get(ipxe_two),
        )
        .route(&format!("{}/{{name}}", boot::IPXE_PATH), get(ipxe_one))
        .route(boot::SCRIPT_BY_SOURCE_PATH, get(by_source))
        .with_state(with_files);
    if let Some(dir) = osie_dir {
        router = router.merge(
            Router::new()
                .route(&format!("{}/{{*path}}", boot::OSIE_PATH), get(osie_file))
                .with_state(dir),
        );
    }
    if let Some(dir) = &files.refind_dir {
        let dir = Arc::new(dir.clone());
        router = router.merge(
            Router::new()
                .route(
                    &format!("{}/refind.conf", boot::REFIND_PATH),
                    get(refind_conf),
                )
                .route(
                    &format!("{}/{{buildarch}}/refind.efi", boot::REFIND_PATH),
                    get(refind_efi),
                )
                .with_state(dir),
        );
    }
    router
}

/// The operator's `refind.conf` if the rEFInd directory has one, else
/// seed 004's settings.
async fn refind_conf(State(dir): State<Arc<PathBuf>>, req: Request) -> Response {
    match inside(&dir, std::path::Path::new("refind.conf")).await {
        Inside::File(own) => serve_file(own, req).await,
        Inside::Outside => not_found(),
        Inside::Missing => text(StatusCode::OK, DEFAULT_REFIND_CONF.to_string()),
    }
}

/// rEFInd for the architecture iPXE reports as `${buildarch}`.
async fn refind_efi(
    State(dir): State<Arc<PathBuf>>,
    Path(buildarch): Path<String>,
    req: Request,
) -> Response {
    let Some(name) = refind_binary(&buildarch) else {
        tracing::info!(%buildarch, "rEFInd asked for an architecture it has no binary for");
        return text(StatusCode::NOT_FOUND, "not found\n".into());
    };
    binary(&dir, name, req).await
}

/// Route state: the boot state plus where binaries live.
#[derive(Clone)]
struct WithFiles {
    boot: BootState,
    ipxe_dir: Arc<PathBuf>,
}

/// `/ipxe/<mac>/auto.ipxe` is a machine's script; `/ipxe/<mac>/<binary>`
/// is a binary with a per-machine prefix (tolerated, as over TFTP).
async fn ipxe_two(
    State(s): State<WithFiles>,
    Path((first, second)): Path<(String, String)>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    if second == boot::SCRIPT_NAME {
        return by_mac(&s.boot, &first, peer.ip()).await;
    }
    if first.parse::<MacAddr>().is_err() {
        return text(StatusCode::NOT_FOUND, "not found\n".into());
    }
    binary(&s.ipxe_dir, &second, req).await
}

/// `/ipxe/auto.ipxe` (by source address) or `/ipxe/<binary>`.
async fn ipxe_one(
    State(s): State<WithFiles>,
    Path(name): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    if name == boot::SCRIPT_NAME {
        return script_by_source(&s.boot, peer).await;
    }
    binary(&s.ipxe_dir, &name, req).await
}

/// Serves one iPXE binary by plain file name (no paths, no dot files).
async fn binary(dir: &std::path::Path, name: &str, req: Request) -> Response {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !plain {
        return not_found();
    }
    match inside(dir, std::path::Path::new(name)).await {
        Inside::File(path) => serve_file(path, req).await,
        Inside::Outside | Inside::Missing => not_found(),
    }
}

/// `/osie/<path>`: a file of the in-memory OS folder, subfolders allowed.
async fn osie_file(
    State(dir): State<Arc<PathBuf>>,
    Path(path): Path<String>,
    req: Request,
) -> Response {
    // The path arrives percent-decoded: only plain names, no `..`, no
    // absolute or empty components, no dot files.
    let relative = std::path::Path::new(&path);
    let plain = !path.is_empty()
        && !path.contains('\\')
        && relative.components().all(|c| match c {
            std::path::Component::Normal(name) => {
                name.to_str().is_some_and(|n| !n.starts_with('.'))
            }
            _ => false,
        });
    if !plain {
        return not_found();
    }
    match inside(&dir, relative).await {
        Inside::File(file) => serve_file(file, req).await,
        Inside::Outside | Inside::Missing => not_found(),
    }
}

/// Where a request path leads inside a served folder.
#[derive(Debug, PartialEq, Eq)]
enum Inside {
    /// A regular file inside the folder, by its resolved path.
    File(PathBuf),
    /// A symlink (of the file or of a folder on the way) leads out of the
    /// folder: refused, and logged, since someone put it there.
    Outside,
    /// Nothing there, not a regular file, or unreadable.
    Missing,
}

/// Resolves `relative` under `root`, following symlinks, and says whether
/// the file it reaches lies inside `root` (itself resolved, so a served
/// folder reached through a link still works). In the task, like the read
/// that follows (see `file.rs`): a few lookups of entries the kernel has
/// cached, cheaper than a hop to the blocking pool and back.
async fn inside(root: &std::path::Path, relative: &std::path::Path) -> Inside {
    let target = root.join(relative);
    let resolved = (|| {
        let root = std::fs::canonicalize(root).ok()?;
        let file = std::fs::canonicalize(&target).ok()?;
        let is_file = std::fs::metadata(&file).is_ok_and(|m| m.is_file());
        Some((root, file, is_file))
    })();
    match resolved {
        Some((root, file, is_file)) if file.starts_with(&root) => {
            if is_file {
                Inside::File(file)
            } else {
                Inside::Missing
            }
        }
        Some((root, file, _)) => {
            tracing::warn!(
                folder = %root.display(),
                target = %file.display(),
                "refused to serve a symlink that leads out of the served folder"
            );
            Inside::Outside
        }
        None => Inside::Missing,
    }
}

/// Serves a resolved file (ranges, HEAD and conditional requests included).
async fn serve_file(path: PathBuf, req: Request) -> Response {
    crate::file::serve(&path, req.headers())
}

fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "not found\n".into())
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// The addresses reserved for a machine, on any of its interfaces.
fn reserved_addresses(hw: &Hardware) -> impl Iterator<Item = IpAddr> + '_ {
    hw.network
        .interfaces
        .iter()
        .filter_map(|i| i.dhcp.as_ref()?.ip.as_ref())
        .map(|ip| unmapped(ip.address))
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `peer` may read `hw`'s script: a machine with reserved
/// addresses only from one of them (a MAC is a claim anyone can make; the
/// script may carry the record's own `contents`), one without (proxy DHCP,
/// the site's DHCP) from anywhere, as may anyone when the operator says so.
pub fn script_allowed(hw: &Hardware, peer: IpAddr, from_any_address: bool) -> bool {
    let peer = unmapped(peer);
    let mut reserved = reserved_addresses(hw).peekable();
    from_any_address || reserved.peek().is_none() || reserved.any(|ip| ip == peer)
}

async fn by_mac(state: &BootState, mac: &str, peer: IpAddr) -> Response {
    let Ok(mac) = mac.parse::<MacAddr>() else {
        return text(StatusCode::NOT_FOUND, "not found\n".into());
    };
    match state.machines.by_mac(mac) {
        Some(hw) if !script_allowed(&hw, peer, state.script_from_any_address) => {
            tracing::warn!(
                %mac, hardware = %hw.id, %peer,
                "auto.ipxe refused: asked from an address not reserved for the machine"
            );
            text(
                StatusCode::FORBIDDEN,
                "this script is served only to the machine's reserved address\n".into(),
            )
        }
        Some(hw) => script(state, &hw, mac).await,
        None => {
            tracing::info!(%mac, "auto.ipxe for an unknown MAC");
            text(StatusCode::NOT_FOUND, "not found\n".into())
        }
    }
}

/// Fallback for scripts that cannot put the MAC in the URL: the machine
/// whose reserved IP the request comes from.
async fn by_source(
    State(s): State<WithFiles>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    script_by_source(&s.boot, peer).await
}

async fn script_by_source(state: &BootState, peer: SocketAddr) -> Response {
    let ip = peer.ip();
    let Some(hw) = state.machines.by_ip(ip) else {
        tracing::info!(%ip, "auto.ipxe from an unknown address");
        return text(StatusCode::NOT_FOUND, "not found\n".into());
    };
    let ip = unmapped(ip);
    let mac = hw
        .network
        .interfaces
        .iter()
        .filter_map(|i| i.dhcp.as_ref())
        .find(|d| d.ip.as_ref().is_some_and(|a| a.address == ip))
        .map(|d| d.mac);
    match mac {
        Some(mac) => script(state, &hw, mac).await,
        None => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

/// The script for a store that cannot answer now: iPXE waits and asks again.
fn retry_later() -> Response {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "#!ipxe\necho Bellows: server error; retrying in 10 s\nsleep 10\nchain --autofree ${filename} || exit 1\n".into(),
    )
}

async fn script(state: &BootState, hw: &Hardware, mac: MacAddr) -> Response {
    let waiting = match state.machines.waiting_workflow(hw, mac).await {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, %mac, "cannot read workflows for auto.ipxe");
            return retry_later();
        }
    };
    let choice = choose(hw, mac, waiting.is_some());
    let credential = match (&choice, &waiting) {
        (ScriptChoice::Install, Some(workflow)) => {
            match state.machines.mint_credential(hw, mac, workflow).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, %mac, "cannot mint the worker's credential");
                    return retry_later();
                }
            }
        }
        (ScriptChoice::Discover, _) => {
            match state.machines.mint_discovery_credential(hw, mac).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, %mac, "cannot mint the discovery credential");
                    return retry_later();
                }
            }
        }
        _ => None,
    };
    tracing::info!(%mac, hardware = %hw.id, ?choice, "serving auto.ipxe");
    state.machines.script_served(hw, mac, &choice);
    if choice == ScriptChoice::Install
        && let Err(e) = hw.vlan_of(mac)
    {
        tracing::warn!(%mac, hardware = %hw.id, error = %e, "dhcp.vlan_id ignored: the in-memory OS boots untagged");
    }
    text(
        StatusCode::OK,
        render(
            &choice,
            hw,
            mac,
            &state.os,
            &state.local_boot,
            credential.as_deref(),
        ),
    )
}
