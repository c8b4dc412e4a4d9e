//! Attacks on the API's bounds (issue 12): a template bomb, and slow or
//! idle HTTP clients against `serve_http`, the accept loop the API and the
//! boot listener share. Every client is on loopback; every loop is bounded.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use bellows_api::auth::{AuthSettings, Authenticator};
use bellows_api::worker::{HubSettings, WorkerHub};
use bellows_api::{AppState, BootInfo, HttpLimits, router, serve_http, serve_with};
use bellows_store::{SecretKey, SqlStore};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tower::ServiceExt;

async fn state() -> (AppState, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<SqlStore> = Arc::new(
        SqlStore::open_sqlite(dir.path(), SecretKey::from_bytes(&[1; 32]))
            .await
            .unwrap(),
    );
    // Unauthenticated: these tests attack bounds, not credentials.
    let auth = Authenticator::new(
        store.clone(),
        store.clone(),
        AuthSettings {
            insecure: true,
            ..AuthSettings::default()
        },
    );
    let state = AppState {
        store: store.clone(),
        boot: Arc::new(BootInfo {
            public_ip: "127.0.0.1".into(),
            http_base: "http://127.0.0.1:8080".into(),
            tftp_server: None,
            syslog: None,
            dhcp_mode: "off".into(),
        }),
        workers: WorkerHub::new(store, HubSettings::default()),
        auth,
        metrics: Default::default(),
    };
    (state, dir)
}

async fn call(app: &Router, method: &str, uri: &str, body: &Value) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Issue 12's bomb as a workflow template: ten nested defines, each
/// calling the one below ten times, in YAML comments (Go's template sees
/// them; YAML does not), about 2 KB. `guard` wraps the call.
fn bomb(guard: &str) -> String {
    let mut s = String::from("# {{define \"a0\"}}{{end}}\n");
    for level in 1..10 {
        s += &format!("# {{{{define \"a{level}\"}}}}");
        for _ in 0..10 {
            s += &format!("{{{{template \"a{}\"}}}}", level - 1);
        }
        s += "{{end}}\n";
    }
    s + &format!(
        "# {{{{if {guard}}}}}{{{{template \"a9\"}}}}{{{{end}}}}\nversion: \"0.1\"\nname: bomb\nglobal_timeout: 60\ntasks:\n  - name: t\n    worker: \"{{{{.device_1}}}}\"\n    actions:\n      - name: a\n        image: busybox\n        timeout: 60\n"
    )
}

/// Peak resident memory of this test process (nextest: one per test), kB.
fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn template_bomb_is_refused_with_422_in_bounded_time_and_memory() {
    let (state, _dir) = state().await;
    let app = router(state);
    let before = peak_rss_kb();

    // Unconditional fan-out: refused when the template is created.
    let source = bomb("true");
    assert!(source.len() < 2300, "{}", source.len());
    let started = Instant::now();
    let (status, body) = call(
        &app,
        "POST",
        "/api/v1/templates",
        &json!({"name": "bomb", "data": source}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let msg = body["message"].as_str().unwrap();
    assert!(msg.contains("work budget of 1000000 steps"), "{msg}");
    assert_eq!(body["field"], "data");
    assert!(started.elapsed() < Duration::from_secs(5));

    // Fan-out behind a key only a workflow has: created, then refused when
    // a workflow renders it.
    let (status, body) = call(
        &app,
        "POST",
        "/api/v1/templates",
        &json!({"name": "guarded", "data": bomb(".device_1")}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = call(
        &app,
        "POST",
        "/api/v1/hardware",
        &json!({"id": "m1", "network": {"interfaces": [{"dhcp": {"mac": "52:54:00:00:00:01", "ip": {"address": "10.0.0.5"}}}]}}),
    )
    .await;
    assert!(status.is_success(), "{body}");
    let started = Instant::now();
    let (status, body) = call(
        &app,
        "POST",
        "/api/v1/workflows",
        &json!({"template": "guarded", "hardware_map": {"device_1": "52:54:00:00:00:01"}}),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let msg = body["message"].as_str().unwrap();
    assert!(msg.contains("work budget"), "{msg}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let (_, list) = call(&app, "GET", "/api/v1/workflows", &Value::Null).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "{list}");

    let grew_mb = (peak_rss_kb() - before) / 1024;
    eprintln!("workflow refused in {took:?}; peak memory +{grew_mb} MB");
    assert!(grew_mb < 100, "peak memory grew {grew_mb} MB");
}

/// Short timeouts so the test runs in seconds.
const TEST_LIMITS: HttpLimits = HttpLimits {
    header_read_timeout: Duration::from_secs(2),
    body_read_timeout: Duration::from_secs(2),
    max_connections: 256,
    max_connections_per_ip: 64,
    h2_keepalive: Duration::from_secs(20),
};

/// Raises this process's open-file limit to its hard limit (1,100 attack
/// sockets and the server's side of them).
fn raise_nofile() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}

async fn connect_from(src: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(src, 0))?;
    socket.connect(to).await
}

/// One plain HTTP/1.1 GET from `src`; the status code.
async fn get_status(src: IpAddr, to: SocketAddr, path: &str) -> std::io::Result<u16> {
    let mut s = connect_from(src, to).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    let text = String::from_utf8_lossy(&out);
    text.get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {text:?}")))
}

/// Whether the server closed `s` within `wait` (EOF or reset).
async fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Whether the server has closed `s` (EOF or reset), without waiting.
fn closed_now(s: &TcpStream) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match s.try_read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// A boot-listener stand-in: the same `serve_http`, a route that says who
/// is asking (as metadata does).
fn boot_app() -> Router {
    Router::new().route(
        "/whoami",
        get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_closed_and_good_clients_are_still_served() {
    raise_nofile();
    let limits = HttpLimits {
        header_read_timeout: Duration::from_secs(4),
        ..TEST_LIMITS
    };
    let (state, _dir) = state().await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let api_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = api_listener.local_addr().unwrap();
    let api_task = tokio::spawn(serve_with(api_listener, state, limits, None, stopped()));
    let boot_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let boot = boot_listener.local_addr().unwrap();
    let boot_task = tokio::spawn(serve_http(
        boot_listener,
        boot_app(),
        limits,
        None,
        stopped(),
    ));

    // 1,100 half-sent requests from one address against each listener, and
    // more from 20 other addresses (40 each) to fill the listener limit.
    let attacker = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    let mut held = Vec::new();
    for target in [api, boot] {
        for i in 0..1100 {
            let mut s = connect_from(attacker, target).await.unwrap();
            let _ = s
                .write_all(format!("GET /{i} HTTP/1.1\r\nHost: x\r\n").as_bytes())
                .await;
            held.push(s);
        }
    }
    for a in 0..20u8 {
        for _ in 0..40 {
            let src = IpAddr::V4(Ipv4Addr::new(127, 0, 1, a));
            if let Ok(s) = connect_from(src, boot).await {
                held.push(s);
            }
        }
    }
    let connected = Instant::now();
    // Over the limits: closed at once. Count the ones still open.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut open: Vec<TcpStream> = held.into_iter().filter(|s| !closed_now(s)).collect();
    eprintln!(
        "{} attack connections open {:?} after connecting",
        open.len(),
        connected.elapsed()
    );
    // 64 from 127.0.0.1 on the API; on the boot listener 64 from it and the
    // rest of the 256 from the others.
    assert!(open.len() <= 64 + 256, "{} open", open.len());
    assert!(open.len() >= 64 + 200, "{} open", open.len());

    // The slow ones keep sending a byte every 300 ms, from here on.
    let trickle = tokio::spawn(async move {
        let mut closed = 0;
        for _ in 0..20 {
            for s in &mut open {
                let _ = s.write_all(b"X").await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        for mut s in open {
            if closed_within(&mut s, Duration::from_millis(200)).await {
                closed += 1;
            }
        }
        closed
    });

    // A good client on another address is answered at once by the API.
    let good = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let t = Instant::now();
    assert_eq!(get_status(good, api, "/healthz").await.unwrap(), 200);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // The boot listener is full (256 held): the good client gets its turn
    // once the slow ones are cut, and is told who it is (ConnectInfo).
    let mut whoami = None;
    for _ in 0..100 {
        if let Ok(mut s) = connect_from(good, boot).await {
            let _ = s
                .write_all(b"GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await;
            let mut out = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(1), s.read_to_end(&mut out)).await;
            let text = String::from_utf8_lossy(&out).to_string();
            if text.starts_with("HTTP/1.1 200") {
                whoami = Some((text, s.local_addr().unwrap()));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (text, me) = whoami.expect("the boot listener never answered the good client");
    assert!(text.ends_with(&me.to_string()), "{text} is not {me}");
    let waited = connected.elapsed();
    eprintln!("the boot listener answered the good client {waited:?} after the attack");
    assert!(waited < Duration::from_secs(7), "{waited:?}");

    // Every slow connection was closed by the header timeout, though its
    // bytes kept trickling in (6 s of trickle, a 4 s timeout).
    let closed = trickle.await.unwrap();
    assert!(closed >= 264, "only {closed} slow connections closed");

    let _ = stop_tx.send(true);
    tokio::time::timeout(Duration::from_secs(5), async {
        api_task.await.unwrap().unwrap();
        boot_task.await.unwrap().unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn idle_keep_alive_is_closed_and_a_slow_body_gets_408() {
    let (state, _dir) = state().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap();
    tokio::spawn(serve_with(
        listener,
        state,
        TEST_LIMITS,
        None,
        std::future::pending(),
    ));

    // Idle after one answered request: closed after the header timeout.
    let mut s = TcpStream::connect(api).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let t = Instant::now();
    assert!(closed_within(&mut s, Duration::from_secs(4)).await);
    assert!(
        t.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );

    // Connected, nothing sent: closed too.
    let mut s = TcpStream::connect(api).await.unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(4)).await);

    // Headers in time, the body never finished: 408 after the body timeout.
    let mut s = TcpStream::connect(api).await.unwrap();
    s.write_all(b"POST /api/v1/templates HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\":")
        .await
        .unwrap();
    let t = Instant::now();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("did not arrive within"), "{text}");
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
}

/// The worker's gRPC stream rides HTTP/2 on the same listener: it must not
/// be cut by the header timeout, the idle close or the body deadline.
#[tokio::test]
async fn http2_streams_outlive_the_http1_timeouts() {
    use axum::routing::post;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio_stream::StreamExt;

    let app = Router::new()
        .route(
            "/slow",
            get(|| async {
                let ticks = tokio_stream::iter(0..4).then(|i| async move {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    Ok::<_, std::io::Error>(format!("tick {i}\n"))
                });
                Body::from_stream(ticks)
            }),
        )
        .route(
            "/grpc-like",
            post(|body: Body| async move {
                let bytes = axum::body::to_bytes(body, 1 << 20).await;
                match bytes {
                    Ok(b) => b.len().to_string(),
                    Err(e) => format!("error: {e}"),
                }
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_http(
        listener,
        app,
        TEST_LIMITS,
        None,
        std::future::pending(),
    ));

    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, Body>(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);

    let started = Instant::now();
    let get_slow = Request::get(format!("http://{addr}/slow"))
        .body(Body::empty())
        .unwrap();
    let resp = sender.send_request(get_slow).await.unwrap();
    let body = axum::body::to_bytes(Body::new(resp.into_body()), 1 << 20)
        .await
        .unwrap();
    assert_eq!(&body[..], b"tick 0\ntick 1\ntick 2\ntick 3\n");
    assert!(started.elapsed() >= Duration::from_secs(4));

    // Idle for longer than the header timeout, then used again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // A gRPC request body that takes longer than the body timeout.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    tokio::spawn(async move {
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = tx.send(Ok(vec![b'x'; 10])).await;
        }
    });
    let req = Request::post(format!("http://{addr}/grpc-like"))
        .header("content-type", "application/grpc")
        .body(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = axum::body::to_bytes(Body::new(resp.into_body()), 1024)
        .await
        .unwrap();
    assert_eq!(&body[..], b"30");
}
