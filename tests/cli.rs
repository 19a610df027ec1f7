//! The `tollgate` binary as an operator and a caller use it: admin commands, `serve`, `call`,
//! and a confirmed session surviving `kill -9` of the relay.

mod common;

use common::raw::{self, Peer, RawUdp, LIMIT};
use common::relay::free_port;
use common::sipp::{sipp_available, Sipp};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tollgate::store::{SessionFilter, SessionState, Store};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

/// A config file in a fresh directory: SQLite next to it, every listener on port 0.
fn config_dir() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.toml");
    std::fs::write(
        &path,
        "[sip]\ndomain = \"portal.com\"\nlisten = [\"udp:127.0.0.1:0\"]\n[http]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    (dir, path)
}

/// Runs a command to completion; returns (success, stdout + stderr).
async fn tollgate(config: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("TOLLGATE_DATABASE_URL")
        .output()
        .await
        .expect("tollgate runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn seed(config: &Path, app_port: u16) {
    for args in [
        vec!["user", "add", "alice", "--password", "secret"],
        vec![
            "appserver",
            "add",
            "shop1",
            "--uri",
            &format!("sip:127.0.0.1:{app_port}"),
        ],
        vec![
            "service",
            "add",
            "service1@portal.com",
            "--appserver",
            "shop1",
        ],
    ] {
        let (ok, out) = tollgate(config, &args).await;
        assert!(ok, "{args:?}: {out}");
    }
}

/// Starts `serve` and returns it with its UDP address, read from the ready line.
async fn serve(config: &Path) -> (Child, std::net::SocketAddr) {
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .arg("serve")
        .env_remove("TOLLGATE_DATABASE_URL")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("serve starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut udp = None;
    loop {
        let line = tokio::time::timeout(LIMIT, lines.next_line())
            .await
            .expect("ready in time")
            .unwrap()
            .expect("serve printed its ready lines");
        if let Some(addr) = line.strip_prefix("tollgate ready: sip udp ") {
            udp = Some(addr.parse().unwrap());
        }
        if line.starts_with("tollgate ready: http ") {
            break;
        }
    }
    // Keep reading whatever else it prints.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, udp.expect("a UDP listener"))
}

async fn store_of(dir: &TempDir) -> Store {
    Store::connect(&common::db::sqlite_url(dir.path()))
        .await
        .unwrap()
}

#[tokio::test]
async fn admin_commands_store_the_directory_and_refuse_bad_input() {
    let (dir, config) = config_dir();
    seed(&config, 5090).await;
    assert!(
        dir.path().join("tollgate.db").exists(),
        "the database sits next to the config"
    );

    let (ok, out) = tollgate(&config, &["user", "add", "alice", "--password", "x"]).await;
    assert!(
        !ok && out.contains("alice"),
        "duplicate user refused: {out}"
    );
    let (ok, out) = tollgate(
        &config,
        &["service", "add", "s2@portal.com", "--appserver", "nosuch"],
    )
    .await;
    assert!(
        !ok && out.contains("nosuch"),
        "unknown app server named: {out}"
    );
    let (ok, out) = tollgate(&config, &["appserver", "add", "bad", "--uri", "http://x"]).await;
    assert!(!ok, "a non-SIP URI is refused: {out}");

    let (ok, out) = tollgate(&config, &["service", "list"]).await;
    assert!(
        ok && out.contains("service1@portal.com") && out.contains("shop1"),
        "{out}"
    );
    let (ok, out) = tollgate(&config, &["sessions", "list", "--json"]).await;
    assert!(ok, "{out}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        serde_json::json!([])
    );
    let text = std::fs::read(dir.path().join("tollgate.db")).unwrap();
    assert!(
        !text.windows(6).any(|w| w == b"secret"),
        "the password is not stored"
    );
}

#[tokio::test]
async fn call_command_reaches_the_service_and_reports_refusals() {
    if !sipp_available() {
        return;
    }
    let (_dir, config) = config_dir();
    let app_port = free_port();
    seed(&config, app_port).await;
    let (mut relay, addr) = serve(&config).await;
    let uas = Sipp::uas("uas.xml", app_port, 1, false);
    let target = ["call", "sip:service1@portal.com", "--user", "alice"];
    let proxy = addr.to_string();

    let mut args = target.to_vec();
    args.extend(["--password", "secret", "--proxy", &proxy]);
    let (ok, out) = tollgate(&config, &args).await;
    assert!(ok, "call succeeds: {out}");
    assert!(out.contains("200 OK"), "{out}");
    assert!(uas.finish(LIMIT).await.succeeded());

    let mut args = target.to_vec();
    args.extend(["--password", "wrong", "--proxy", &proxy]);
    let (ok, out) = tollgate(&config, &args).await;
    assert!(!ok, "a refused call exits non-zero");
    assert!(
        out.contains("403"),
        "the SIP status is in the message: {out}"
    );
    relay.kill().await.unwrap();
}

#[tokio::test]
async fn a_confirmed_session_survives_kill_9_and_is_closed_at_restart() {
    let (dir, config) = config_dir();
    let app = RawUdp::bind().await;
    seed(&config, app.addr.port()).await;
    let (mut relay, addr) = serve(&config).await;

    let client = RawUdp::bind().await;
    raw::authenticated_invite(&client, addr).await;
    let (invite, relay_addr) = app.recv_within(LIMIT).await;
    let mut extra: Vec<String> = raw::headers(&invite, "Record-Route")
        .into_iter()
        .map(|rr| format!("Record-Route: {rr}"))
        .collect();
    extra.push(format!("Contact: <sip:shop@{}>", app.addr));
    app.send_to(raw::response(&invite, "200 OK", "shop", &extra), relay_addr)
        .await;
    let ok = raw::next_non_trying(&client).await;
    assert_eq!(raw::status(&ok), Some(200), "{ok}");

    let route = raw::header(&ok, "Record-Route").expect("record-routed");
    let ack = raw::message(
        &format!("ACK sip:shop@{} SIP/2.0", app.addr),
        &[
            client.via(&raw::branch()),
            format!("Route: {route}"),
            format!("From: {}", raw::header(&ok, "From").unwrap()),
            format!("To: {}", raw::header(&ok, "To").unwrap()),
            format!("Call-ID: {}", raw::header(&ok, "Call-ID").unwrap()),
            "CSeq: 2 ACK".into(),
            "Max-Forwards: 70".into(),
        ],
        "",
    );
    client.send_to(ack, addr).await;
    let (relayed, _) = app.recv_within(LIMIT).await;
    assert_eq!(raw::method(&relayed), Some("ACK"), "{relayed}");
    // The ACK reached the app server, so the confirmation is on disk: pull the plug now.
    relay.start_kill().unwrap();
    relay.wait().await.unwrap();

    let store = store_of(&dir).await;
    let rows = store.list_sessions(SessionFilter::default()).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, SessionState::Confirmed, "{:?}", rows[0]);
    let confirmed_at = rows[0].confirmed_at.expect("confirmation time");

    // A restart closes it honestly: billed up to its last proof of life.
    let (mut relay, _) = serve(&config).await;
    let row = store.get_session(&rows[0].id).await.unwrap();
    assert_eq!(row.state, SessionState::Terminated);
    assert_eq!(row.end_reason.as_deref(), Some("relay_restart"));
    assert_eq!(row.ended_by.as_deref(), Some("relay"));
    assert_eq!(row.ended_at, Some(confirmed_at));
    assert_eq!(row.duration_ms, Some(0));
    relay.kill().await.unwrap();
}
