//! What was acknowledged survives `kill -9`; SIGTERM stops cleanly.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Server, http};

fn machine(i: u32) -> Vec<u8> {
    json!({
        "id": format!("m{i:04}"),
        "network": {"interfaces": [{"dhcp": {
            "mac": format!("02:00:00:00:{:02x}:{:02x}", i / 256, i % 256),
            "ip": {"address": format!("10.2.{}.{}", i / 250, i % 250 + 1)}
        }}]}
    })
    .to_string()
    .into_bytes()
}

#[test]
fn kill_9_loses_nothing_that_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let url = server.url.clone();
    let acked: Arc<Mutex<Vec<u32>>> = Arc::default();
    // A writer pushing as fast as it can while the server is killed under it.
    let writer = {
        let acked = acked.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            for i in 0..5000u32 {
                if Instant::now() > deadline {
                    break;
                }
                let rt = std::panic::catch_unwind(|| {
                    http("POST", &format!("{url}/api/v1/hardware"), Some(&machine(i)))
                });
                match rt {
                    Ok((201, _)) => acked.lock().unwrap().push(i),
                    _ => break, // the server is gone
                }
            }
        })
    };
    let start = Instant::now();
    while acked.lock().unwrap().len() < 100 && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(10));
    }
    server.kill9();
    writer.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 100,
        "only {} writes before the kill",
        acked.len()
    );

    let server = Server::start(dir.path());
    let (status, list) = http("GET", &format!("{}/api/v1/hardware", server.url), None);
    assert_eq!(status, 200);
    let stored: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_string())
        .collect();
    for i in &acked {
        let id = format!("m{i:04}");
        assert!(stored.contains(&id), "acknowledged {id} lost after kill -9");
    }
    // And the store still takes writes.
    let (status, _) = http(
        "POST",
        &format!("{}/api/v1/hardware", server.url),
        Some(&machine(9999)),
    );
    assert!(status == 201 || status == 200);
}

#[test]
fn sigterm_stops_cleanly_and_data_persists() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let (status, _) = http(
        "POST",
        &format!("{}/api/v1/hardware", server.url),
        Some(&machine(1)),
    );
    assert_eq!(status, 201);
    let (exit, log) = server.terminate();
    assert!(exit.success(), "exit status after SIGTERM: {exit}");
    assert!(
        log.iter().any(|l| l.contains("SIGTERM: shutting down")),
        "{log:?}"
    );
    assert!(log.last().is_some_and(|l| l.contains("stopped")), "{log:?}");
    let server = Server::start(dir.path());
    let (status, _) = http(
        "GET",
        &format!("{}/api/v1/hardware/m0001", server.url),
        None,
    );
    assert_eq!(status, 200);
}
