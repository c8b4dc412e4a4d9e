//! TLS on the API and the worker service (issue 12, item 3), checked by
//! programs we did not write where one can speak: curl verifies the API's
//! certificate against the server's own CA and refuses it without; openssl
//! computes the CA fingerprint machines pin. An on-path host that answers
//! in the server's place, with a certificate of its own CA, gets no
//! worker's credential: the worker's pin refuses the handshake.

use std::process::Command;

use bellows_rpc::v1::SubscribeRequest;
use bellows_worker::tls::{Dialer, ServerTrust};
use tonic::Code;

use crate::harness::{Server, ok, openssl_fingerprint};

/// curl's exit status and output for `args`.
fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-sS", "-m", "10"])
        .args(args)
        .output()
        .expect("run curl");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_api_speaks_tls_that_curl_verifies_with_the_servers_ca() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    assert!(s.url.starts_with("https://127.0.0.1:"), "{}", s.url);
    let ca = s.ca.clone().expect("the server made its CA");
    let ca_arg = ca.to_str().expect("path");

    // Verified against the data directory's CA, by name (localhost) and
    // by address.
    let port = s.url.rsplit(':').next().expect("port");
    let (code, body) = curl(&["--cacert", ca_arg, &format!("{}/healthz", s.url)]);
    assert_eq!(code, 0, "{body}");
    let (code, body) = curl(&[
        "--cacert",
        ca_arg,
        &format!("https://localhost:{port}/healthz"),
    ]);
    assert_eq!(code, 0, "{body}");
    // Without the CA, curl refuses the certificate (60: peer certificate
    // cannot be authenticated).
    let (code, body) = curl(&[&format!("{}/healthz", s.url)]);
    assert_eq!(code, 60, "{body}");
    // Plain HTTP on the API gets a readable refusal, not a hang.
    let (code, body) = curl(&[&format!("http://127.0.0.1:{port}/healthz")]);
    assert_eq!(code, 0, "{body}");
    assert!(body.contains("HTTPS only"), "{body}");

    // A token over TLS works with curl too; with the wrong CA it is
    // never sent.
    let token = s.token.clone().expect("token");
    let (code, body) = curl(&[
        "-f",
        "--cacert",
        ca_arg,
        "-H",
        &format!("Authorization: Bearer {token}"),
        &format!("{}/api/v1/hardware", s.url),
    ]);
    assert_eq!(code, 0, "{body}");

    // The CLI on this machine trusts the data directory's CA by itself
    // (no --ca), and a CA of another server is refused with advice.
    let out = Command::new(crate::harness::BIN)
        .args(["hardware", "list"])
        .env("BELLOWS_URL", &s.url)
        .env("BELLOWS_DATA_DIR", dir.path())
        .env_remove("BELLOWS_TOKEN")
        .env_remove("BELLOWS_CA")
        .output()
        .expect("run cli");
    ok(&out);
    let other_dir = tempfile::tempdir().unwrap();
    let other = Server::start(other_dir.path());
    let out = Command::new(crate::harness::BIN)
        .args(["hardware", "list"])
        .env("BELLOWS_URL", &s.url)
        .env("BELLOWS_TOKEN", &token)
        .env("BELLOWS_CA", other.ca.as_ref().expect("ca"))
        .output()
        .expect("run cli");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--ca"), "{err}");
}

#[test]
fn the_ca_survives_a_restart_and_its_key_stays_private() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let ca = s.ca.clone().expect("ca");
    let before = openssl_fingerprint(&ca);
    drop(s);
    // Machines that booted before the restart pin the same CA, so their
    // workers reconnect to the restarted server.
    let s = Server::start(dir.path());
    assert_eq!(openssl_fingerprint(&ca), before, "the CA was remade");
    let worker_url = s.http_url.replacen("http://", "https://", 1);
    let endpoint = tonic::transport::Endpoint::from_shared(worker_url).expect("url");
    let dialer =
        Dialer::new(endpoint, &ServerTrust::pinned(&before).expect("pin")).expect("dialer");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let token = s.token.clone().expect("token");
    rt.block_on(subscribe(dialer, &token))
        .expect("the old pin still verifies the restarted server");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("tls/ca.key"))
        .expect("ca.key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "ca.key mode {mode:o}");
}

/// A subscription over `dialer`: the server's answer, or why the
/// connection failed.
async fn subscribe(dialer: Dialer, token: &str) -> Result<(), String> {
    let channel = dialer.connect().await.map_err(|e| {
        let mut msg = e.to_string();
        let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
        while let Some(c) = cur {
            msg.push_str(&format!(": {c}"));
            cur = c.source();
        }
        msg
    })?;
    let mut client = crate::worker_protocol::with_bearer(channel, Some(token));
    client
        .subscribe(SubscribeRequest {
            worker_id: "52:54:00:aa:bb:01".into(),
            ..Default::default()
        })
        .await
        .map(drop)
        .map_err(|status| format!("{:?}: {}", status.code(), status.message()))
}

#[test]
fn a_worker_pins_its_servers_ca_and_plain_grpc_is_refused() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    // Another server, with its own CA, plays the on-path impostor.
    let impostor_dir = tempfile::tempdir().unwrap();
    let impostor = Server::start(impostor_dir.path());
    let token = s.token.clone().expect("token");
    let pin = openssl_fingerprint(s.ca.as_ref().expect("ca"));
    let worker_url = s.http_url.replacen("http://", "https://", 1);
    let impostor_url = impostor.http_url.replacen("http://", "https://", 1);
    let dial = |url: &str, trust: &ServerTrust| {
        let endpoint = tonic::transport::Endpoint::from_shared(url.to_string()).expect("url");
        Dialer::new(endpoint, trust).expect("dialer")
    };
    let pinned = ServerTrust::pinned(&pin).expect("pin");
    rt.block_on(async {
        // The real server, pinned: the call reaches the worker service.
        subscribe(dial(&worker_url, &pinned), &token)
            .await
            .expect("the pinned server answers");

        // The impostor's certificate chains to another CA: the handshake
        // fails before any credential is sent, naming the pin.
        let err = subscribe(dial(&impostor_url, &pinned), &token)
            .await
            .expect_err("the impostor is refused");
        assert!(err.contains("pinned CA"), "{err}");

        // The system trust store does not know the server's own CA either.
        let err = subscribe(dial(&worker_url, &ServerTrust::System), &token)
            .await
            .expect_err("an unknown CA is refused");
        assert!(
            err.to_lowercase().contains("certificate") || err.contains("issuer"),
            "{err}"
        );

        // gRPC over plain HTTP on the boot listener (where iPXE and
        // metadata stay plain) is refused before any handler sees it, so a
        // misconfigured worker learns why and sends nothing more.
        let plain = dial(&s.http_url, &ServerTrust::System);
        let err = subscribe(plain, &token).await.expect_err("plain gRPC");
        assert!(
            err.starts_with(&format!("{:?}", Code::Unauthenticated)) && err.contains("TLS"),
            "{err}"
        );
    });
}

/// Runs openssl with `args` in `dir`, asserting it succeeded.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A new P-256 private key from openssl, in `dir/name`.
fn ec_key(dir: &std::path::Path, name: &str) {
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            name,
        ],
    );
}

#[test]
fn an_operators_certificate_from_openssl_is_served_and_its_ca_pinned() {
    // The operator's own CA and a server certificate for 127.0.0.1, made
    // by openssl: nothing of Bellows in them.
    let pki = tempfile::tempdir().unwrap();
    let p = pki.path();
    ec_key(p, "ca.key");
    openssl(
        p,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/CN=Site CA",
            "-days",
            "30",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
            "-out",
            "ca.pem",
        ],
    );
    ec_key(p, "server.key");
    openssl(
        p,
        &[
            "req",
            "-new",
            "-key",
            "server.key",
            "-subj",
            "/CN=bellows",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        p.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        p,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.pem",
        ],
    );
    // Leaf first, then the CA machines pin.
    let chain = [
        std::fs::read_to_string(p.join("server.pem")).unwrap(),
        std::fs::read_to_string(p.join("ca.pem")).unwrap(),
    ]
    .concat();
    std::fs::write(p.join("chain.pem"), chain).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let chain_arg = p.join("chain.pem");
    let key_arg = p.join("server.key");
    let s = Server::start_with(
        dir.path(),
        &[
            "--tls-cert",
            chain_arg.to_str().unwrap(),
            "--tls-key",
            key_arg.to_str().unwrap(),
        ],
    );
    assert!(s.url.starts_with("https://"), "{}", s.url);
    assert!(
        !dir.path().join("tls/ca.key").exists(),
        "no own CA is made when the operator gives a certificate"
    );
    let ca_arg = p.join("ca.pem");
    let (code, body) = curl(&[
        "--cacert",
        ca_arg.to_str().unwrap(),
        &format!("{}/healthz", s.url),
    ]);
    assert_eq!(code, 0, "{body}");

    // Machines pin the chain's last certificate: the site CA.
    let pin = openssl_fingerprint(&ca_arg);
    let token = s.token.clone().expect("token");
    let worker_url = s.http_url.replacen("http://", "https://", 1);
    let endpoint = tonic::transport::Endpoint::from_shared(worker_url).expect("url");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let pinned = Dialer::new(endpoint.clone(), &ServerTrust::pinned(&pin).expect("pin")).unwrap();
    rt.block_on(subscribe(pinned, &token))
        .expect("the site CA's pin verifies the operator's certificate");
    let by_file = Dialer::new(endpoint, &ServerTrust::ca_file(&ca_arg).expect("ca file")).unwrap();
    rt.block_on(subscribe(by_file, &token))
        .expect("--server-ca verifies it too");

    // A key that is not the certificate's is refused at start, naming TLS.
    let other_key = p.join("other.key");
    ec_key(p, "other.key");
    // Bounded: a server that started instead is killed and fails the test.
    let err = crate::harness::server_refuses(
        &dir.path().join("second"),
        &[
            "--tls-cert",
            chain_arg.to_str().unwrap(),
            "--tls-key",
            other_key.to_str().unwrap(),
        ],
    );
    assert!(err.contains("TLS"), "{err}");
}
