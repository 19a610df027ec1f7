//! Exactly once across a crash: the real `tollgate serve` binary takes a stream of charges
//! from concurrent clients, is killed with SIGKILL in the middle, and restarted. Every charge
//! it acknowledged is in the ledger exactly once, and retrying every charge (acknowledged or
//! not) with its Idempotency-Key lands each exactly once.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tollgate::store::{LedgerQuery, SessionEvent, SessionWriter, Store};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");
const OPERATOR_KEY: &str = "crash-test-operator-key-0123";
const CLIENTS: usize = 8;
/// Acknowledged charges before the kill.
const ACKED_BEFORE_KILL: usize = 150;

/// Starts `tollgate serve` and returns it with its HTTP address.
async fn serve(config: &Path) -> (Child, String) {
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .arg("serve")
        .env_remove("TOLLGATE_DATABASE_URL")
        .env("TOLLGATE_LOG", "error")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("serve starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let http = loop {
        let line = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
            .await
            .expect("ready in time")
            .unwrap()
            .expect("serve printed its ready lines");
        if let Some(addr) = line.strip_prefix("tollgate ready: http ") {
            break format!("http://{addr}");
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, http)
}

async fn post(http: &reqwest::Client, base: &str, key: &str, charge: &str) -> Option<String> {
    let resp = http
        .post(format!("{base}/v1/sessions/live/charges"))
        .bearer_auth(key)
        .header("Idempotency-Key", charge)
        .json(&serde_json::json!({
            "description": charge, "unit_amount": 100, "quantity": 1, "currency": "EUR"
        }))
        .send()
        .await
        .ok()?;
    if resp.status() != reqwest::StatusCode::CREATED {
        return None;
    }
    let body: serde_json::Value = resp.json().await.ok()?;
    body["id"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_charges_survive_sigkill_and_retries_land_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tollgate.toml");
    std::fs::write(
        &config,
        format!(
            "[sip]\ndomain = \"portal.com\"\nlisten = [\"udp:127.0.0.1:0\"]\n\
             [http]\nlisten = \"127.0.0.1:0\"\n\
             [api]\noperator_key = \"{OPERATOR_KEY}\"\nrate_limit_per_second = 0\n"
        ),
    )
    .unwrap();
    // The directory and a live session, written before the relay starts (by another node,
    // so the restart's clean-up leaves it live).
    let key = {
        let store = Store::connect(&common::db::sqlite_url(dir.path()))
            .await
            .unwrap();
        let user = store
            .add_user("alice", "portal.com", "secret")
            .await
            .unwrap();
        let (shop, key) = store
            .add_app_server_with_key("shop1", "sip:127.0.0.1:5090")
            .await
            .unwrap();
        let service = store
            .add_service(
                "wine@portal.com",
                &["shop1".to_owned()],
                tollgate::store::ForkMode::FirstAnswer,
            )
            .await
            .unwrap();
        let (writer, done) = SessionWriter::spawn(store.clone());
        let now = tollgate::clock::Clock::now_ms(&tollgate::clock::SystemClock);
        for ev in [
            SessionEvent::Created {
                id: "live".into(),
                call_id: "call-live".into(),
                caller: "alice".into(),
                user_id: user.id,
                service: "wine@portal.com".into(),
                service_id: service.id,
                app_server: "shop1".into(),
                app_server_id: shop.id,
                node: "another-node".into(),
                at: now,
            },
            SessionEvent::Confirmed {
                id: "live".into(),
                at: now + 10,
                status: 200,
                dialog: None,
            },
        ] {
            writer.record_durably(ev).await.unwrap().unwrap();
        }
        drop(writer);
        done.await.unwrap();
        key.expose().to_owned()
    };

    let (mut relay, base) = serve(&config).await;
    let http = reqwest::Client::new();
    let acked: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let attempted: Arc<Mutex<HashSet<String>>> = Arc::default();
    let enough = Arc::new(tokio::sync::Notify::new());
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (http, base, key) = (http.clone(), base.clone(), key.clone());
        let (acked, attempted, enough) = (acked.clone(), attempted.clone(), enough.clone());
        clients.push(tokio::spawn(async move {
            for n in 0.. {
                let charge = format!("charge-{c}-{n}");
                attempted.lock().unwrap().insert(charge.clone());
                match post(&http, &base, &key, &charge).await {
                    Some(id) => {
                        let mut acked = acked.lock().unwrap();
                        acked.insert(charge, id);
                        if acked.len() == ACKED_BEFORE_KILL {
                            enough.notify_one();
                        }
                    }
                    None => return, // the relay is gone
                }
            }
        }));
    }
    enough.notified().await;
    relay.start_kill().expect("SIGKILL"); // tokio sends SIGKILL
    relay.wait().await.unwrap();
    for client in clients {
        client.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let attempted = attempted.lock().unwrap().clone();
    assert!(acked.len() >= ACKED_BEFORE_KILL);
    assert!(
        attempted.len() > acked.len(),
        "some requests were cut off by the kill"
    );

    let (_relay, base) = serve(&config).await;
    let store = Store::connect(&common::db::sqlite_url(dir.path()))
        .await
        .unwrap();
    let ledger = |store: Store| async move {
        let mut counts: HashMap<String, Vec<String>> = HashMap::new();
        for e in store
            .page_ledger(&LedgerQuery {
                kind: Some("item"),
                session_id: Some("live".into()),
                limit: 1_000_000,
                ..Default::default()
            })
            .await
            .unwrap()
        {
            counts.entry(e.description.clone()).or_default().push(e.id);
        }
        counts
    };
    let before = ledger(store.clone()).await;
    for (charge, id) in &acked {
        assert_eq!(
            before.get(charge),
            Some(&vec![id.clone()]),
            "{charge} acknowledged"
        );
    }
    // Retry everything with the same keys.
    for charge in &attempted {
        let id = post(&http, &base, &key, charge)
            .await
            .unwrap_or_else(|| panic!("retry of {charge} failed"));
        if let Some(first) = acked.get(charge) {
            assert_eq!(&id, first, "{charge}: the replay answers the first charge");
        }
    }
    let after = ledger(store).await;
    assert_eq!(after.len(), attempted.len());
    for charge in &attempted {
        assert_eq!(
            after[charge].len(),
            1,
            "{charge} is in the ledger exactly once"
        );
    }
    println!(
        "{} acknowledged before SIGKILL, {} cut off, all {} exactly once after retries",
        acked.len(),
        attempted.len() - acked.len(),
        attempted.len()
    );
}
