//! Serving HTTP on a listener with limits: the one accept loop every
//! Bellows HTTP listener runs (the API, the boot listener, metadata).
//!
//! `axum::serve` has no timeout and no connection limit: 1,100 half-sent
//! requests held the boot service and the API (issue 12), and an idle
//! keep-alive connection was never closed. Here:
//!
//! - a client has [`HttpLimits::header_read_timeout`] to send its first
//!   bytes and then each HTTP/1 request head, the wait for the next request
//!   on a kept-alive connection included (so idle HTTP/1 connections close
//!   after it too);
//! - HTTP/2 connections (the worker's gRPC stream, idle for 25 s between
//!   keep-alives, for hours) are never closed for being idle: hyper pings
//!   them and closes only a peer that stops answering;
//! - each listener takes at most [`HttpLimits::max_connections`], and one
//!   peer address at most [`HttpLimits::max_connections_per_ip`]; a
//!   connection over either is accepted and closed at once;
//! - a request body must arrive within [`HttpLimits::body_read_timeout`]
//!   (gRPC streams excepted); the API answers 408;
//! - with [`ListenerTls`], connections are TLS (rustls on ring), the
//!   handshake bounded by the header timeout. The boot listener also keeps
//!   plain HTTP on the same port, told apart by the first byte, because
//!   iPXE and installed systems' metadata clients speak plain HTTP; gRPC
//!   over plain HTTP is then refused, so a worker's credential never
//!   crosses the network in the clear.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use tokio_stream::Stream;
use tower::ServiceExt;

/// The limits of one HTTP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Time to send the first bytes, then each HTTP/1 request head; also
    /// how long an idle HTTP/1 keep-alive connection stays open.
    pub header_read_timeout: Duration,
    /// Time to send a whole request body (not for gRPC streams).
    pub body_read_timeout: Duration,
    /// Open connections on the listener; 0 for no limit.
    pub max_connections: usize,
    /// Open connections from one peer address; 0 for no limit.
    pub max_connections_per_ip: usize,
    /// Interval of HTTP/2 keep-alive pings; a peer that does not answer one
    /// within the same time is closed.
    pub h2_keepalive: Duration,
}

impl HttpLimits {
    /// The boot listener: every machine being installed fetches its script,
    /// kernel and initramfs here and holds one gRPC connection while its
    /// workflow runs; an installed machine asks for its metadata.
    pub const BOOT: HttpLimits = HttpLimits {
        header_read_timeout: Duration::from_secs(10),
        body_read_timeout: Duration::from_secs(30),
        // One gRPC stream per machine being installed (the worker hub
        // takes up to 10,000) plus downloads; `bellows server` raises its
        // open-file limit to match. Slow clients are bounded by the header
        // timeout and the per-address limit, not by this.
        max_connections: 16_384,
        max_connections_per_ip: 64,
        h2_keepalive: Duration::from_secs(20),
    };

    /// The management API: a few operators and their tools.
    pub const API: HttpLimits = HttpLimits {
        max_connections: 128,
        max_connections_per_ip: 32,
        ..HttpLimits::BOOT
    };
}

/// TLS on one listener.
#[derive(Clone)]
pub struct ListenerTls {
    /// The certificate chain and key the listener presents (ALPN `h2` and
    /// `http/1.1`).
    pub config: Arc<rustls::ServerConfig>,
    /// Also answer plain HTTP on the same port (the boot listener), gRPC
    /// excepted.
    pub plain_http_too: bool,
}

impl std::fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerTls")
            .field("plain_http_too", &self.plain_http_too)
            .finish_non_exhaustive()
    }
}

/// Why a request body was cut short; the API answers it with 408.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimedOut(pub Duration);

/// Serves `app` on `listener` within `limits`, over TLS when `tls` is
/// given, until `shutdown` resolves, then stops accepting and lets
/// in-flight requests finish (HTTP/2 connections get a GOAWAY and finish
/// their streams). Handlers see the peer as `ConnectInfo<SocketAddr>`;
/// sockets get TCP_NODELAY.
///
/// The accept loop runs on a thread of its own (its connections run on the
/// runtime): as a task it went to the back of a boot storm's thousands of
/// ready ones after each wake, the listen queue overflowed, and 1,400 of
/// 10,000 machines' connections timed out unanswered.
pub async fn serve_http(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    tls: Option<ListenerTls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (done, finished) = tokio::sync::oneshot::channel();
    let runtime = tokio::runtime::Handle::current();
    let name = match listener.local_addr() {
        Ok(addr) => format!("accept {}", addr.port()),
        Err(_) => "accept".to_string(),
    };
    std::thread::Builder::new().name(name).spawn(move || {
        let served = runtime.block_on(accept_and_serve(listener, app, limits, tls, shutdown));
        let _ = done.send(served);
    })?;
    finished
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("the accept thread stopped")))
}

async fn accept_and_serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    tls: Option<ListenerTls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.h2_keepalive))
        .keep_alive_timeout(limits.h2_keepalive);
    let builders = Arc::new(Builders {
        h1: builder.clone().http1_only(),
        h2: builder.clone().http2_only(),
        auto: builder,
    });
    let acceptor = tls
        .as_ref()
        .map(|t| tokio_rustls::TlsAcceptor::from(t.config.clone()));
    let plain_http = tls.as_ref().is_none_or(|t| t.plain_http_too);
    let grpc_needs_tls = tls.is_some();
    let graceful = GracefulShutdown::new();
    let total =
        (limits.max_connections > 0).then(|| Arc::new(Semaphore::new(limits.max_connections)));
    let peers = PeerCounts::default();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before
                    // it was accepted: keep serving the ones we have.
                    tracing::warn!("accepting a connection failed: {e}");
                    // This thread only accepts, so it may sleep; a tokio
                    // timer would panic once the runtime shuts down.
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            },
        };
        let permit = match &total {
            Some(sem) => match sem.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    tracing::debug!(%peer, "connection limit reached: closing");
                    continue;
                }
            },
            None => None,
        };
        let Some(slot) = peers.take(peer.ip(), limits.max_connections_per_ip) else {
            tracing::debug!(%peer, "per-address connection limit reached: closing");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let builders = builders.clone();
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _held = (permit, slot);
            let Some(kind) = sniff(&stream, limits.header_read_timeout).await else {
                return;
            };
            let service = move |tls: bool| {
                hyper::service::service_fn(move |req: Request<Incoming>| {
                    let mut req = req.map(Body::new);
                    let grpc = is_grpc(&req);
                    if !grpc {
                        req = req.map(|b| with_deadline(b, limits.body_read_timeout));
                    }
                    req.extensions_mut().insert(ConnectInfo(peer));
                    let app = app.clone();
                    async move {
                        if grpc && grpc_needs_tls && !tls {
                            return Ok(grpc_needs_tls_answer());
                        }
                        app.oneshot(req).await
                    }
                })
            };
            let served = match (kind, &acceptor) {
                (Sniffed::Tls, Some(acceptor)) => {
                    let handshake = acceptor.accept(stream);
                    let stream =
                        match tokio::time::timeout(limits.header_read_timeout, handshake).await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, "TLS handshake failed: {e}");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    // ALPN, not sniffing, tells the version inside TLS:
                    // hyper's own sniffing would wait for ever.
                    let builder = if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                        &builders.h2
                    } else {
                        &builders.h1
                    };
                    let conn = builder
                        .serve_connection(TokioIo::new(stream), service(true))
                        .into_owned();
                    watcher.watch(conn).await
                }
                (_, Some(_)) if !plain_http => {
                    refuse_plain_http(stream, limits.header_read_timeout).await;
                    return;
                }
                _ => {
                    let conn = builders
                        .auto
                        .serve_connection(TokioIo::new(stream), service(false))
                        .into_owned();
                    watcher.watch(conn).await
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The connection builders: HTTP/1 or HTTP/2 told apart by the preface
/// (plain), or by ALPN (TLS).
struct Builders {
    auto: Builder<TokioExecutor>,
    h1: Builder<TokioExecutor>,
    h2: Builder<TokioExecutor>,
}

/// What a client's first bytes say it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sniffed {
    /// A TLS record (a ClientHello starts with content type 22).
    Tls,
    /// HTTP/1 or HTTP/2 in the clear.
    Plain,
}

/// Waits, at most `timeout`, until the client has sent enough to tell TLS
/// from HTTP/1 from HTTP/2. hyper's own sniffing waits for ever, and its
/// header timeout only starts after it. None drops the connection.
async fn sniff(stream: &TcpStream, timeout: Duration) -> Option<Sniffed> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    const TLS_HANDSHAKE: u8 = 0x16;
    let sniff = async {
        let mut buf = [0u8; PREFACE.len()];
        loop {
            match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) if buf[0] == TLS_HANDSHAKE => return Some(Sniffed::Tls),
                // Enough to decide: the whole preface, or bytes that are not it.
                Ok(n) if n == PREFACE.len() || buf[..n] != PREFACE[..n] => {
                    return Some(Sniffed::Plain);
                }
                // A partial HTTP/2 preface: peek would return the same bytes
                // at once, so wait a little before looking again.
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    };
    tokio::time::timeout(timeout, sniff).await.ok().flatten()
}

/// Tells a plain-HTTP client of a TLS-only listener (the API) what to do,
/// instead of a handshake error it cannot read.
async fn refuse_plain_http(mut stream: TcpStream, timeout: Duration) {
    use tokio::io::AsyncWriteExt;
    const ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 62\r\n\r\nThis Bellows listener speaks HTTPS only: use an https:// URL.\n";
    let _ = tokio::time::timeout(timeout, async {
        let _ = stream.write_all(ANSWER).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// The answer to a gRPC call over plain HTTP on a listener with TLS: the
/// worker's credential must not cross the network in the clear, so its
/// calls are refused before any handler sees them.
fn grpc_needs_tls_answer() -> axum::response::Response {
    axum::response::Response::builder()
        .header(header::CONTENT_TYPE, "application/grpc")
        .header("grpc-status", "16")
        .header(
            "grpc-message",
            "the worker service needs TLS: connect with https:// and pin the CA (bellows.ca= on the kernel command line)",
        )
        .body(Body::empty())
        .unwrap_or_default()
}

/// Connections per peer address.
#[derive(Default, Clone)]
struct PeerCounts(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One connection's place in [`PeerCounts`], given back on drop.
struct PeerSlot {
    counts: PeerCounts,
    ip: IpAddr,
}

impl PeerCounts {
    fn take(&self, ip: IpAddr, max: usize) -> Option<PeerSlot> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if max > 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            counts: self.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut map = self.counts.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// gRPC requests are streams (a worker's stays open for hours): no body
/// deadline for them.
fn is_grpc(req: &Request<Body>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// Puts a deadline, `timeout` from now, on a request body.
fn with_deadline(body: Body, timeout: Duration) -> Body {
    use axum::body::HttpBody;
    if body.is_end_stream() {
        return body;
    }
    Body::from_stream(DeadlineBody {
        inner: body.into_data_stream(),
        deadline: Box::pin(tokio::time::sleep(timeout)),
        timeout,
    })
}

/// A body that fails with [`BodyTimedOut`] once its deadline passes.
struct DeadlineBody {
    inner: axum::body::BodyDataStream,
    deadline: Pin<Box<Sleep>>,
    timeout: Duration,
}

impl Stream for DeadlineBody {
    type Item = Result<axum::body::Bytes, axum::BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut(self.timeout)))));
        }
        Pin::new(&mut self.inner)
            .poll_next(cx)
            .map(|item| item.map(|r| r.map_err(Into::into)))
    }
}

/// The [`BodyTimedOut`] behind `err` (from reading a body), if that is
/// why it failed.
pub(crate) fn timed_out(err: &axum::Error) -> Option<&BodyTimedOut> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<BodyTimedOut>() {
            return Some(t);
        }
        cur = e.source();
    }
    None
}
