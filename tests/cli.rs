//! The `tollgate` binary as an operator and a caller use it: admin commands, `serve`, `call`,
//! (the relay surviving `kill -9` is in `lose_nothing.rs`).

mod common;

use common::process::Node;
use common::raw::LIMIT;
use common::relay::free_port;
use common::sipp::{sipp_available, Sipp};

#[tokio::test]
async fn admin_commands_store_the_directory_and_refuse_bad_input() {
    let node = Node::new(None, None, "");
    let dir = &node.dir;
    node.seed(5090).await;
    assert!(
        dir.path().join("tollgate.db").exists(),
        "the database sits next to the config"
    );

    let (ok, out) = node.run(&["user", "add", "alice", "--password", "x"]).await;
    assert!(
        !ok && out.contains("alice"),
        "duplicate user refused: {out}"
    );
    let (ok, out) = node
        .run(&["service", "add", "s2@portal.com", "--appserver", "nosuch"])
        .await;
    assert!(
        !ok && out.contains("nosuch"),
        "unknown app server named: {out}"
    );
    let (ok, out) = node
        .run(&["appserver", "add", "bad", "--uri", "http://x"])
        .await;
    assert!(!ok, "a non-SIP URI is refused: {out}");

    let (ok, out) = node.run(&["service", "list"]).await;
    assert!(
        ok && out.contains("service1@portal.com") && out.contains("shop1"),
        "{out}"
    );
    let (ok, out) = node.run(&["sessions", "list", "--json"]).await;
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
    let node = Node::new(None, None, "");
    let app_port = free_port();
    node.seed(app_port).await;
    let mut relay = node.serve().await;
    let addr = relay.udp;
    let uas = Sipp::uas("uas.xml", app_port, 1, false);
    let target = ["call", "sip:service1@portal.com", "--user", "alice"];
    let proxy = addr.to_string();

    let mut args = target.to_vec();
    args.extend(["--password", "secret", "--proxy", &proxy]);
    let (ok, out) = node.run(&args).await;
    assert!(ok, "call succeeds: {out}");
    assert!(out.contains("200 OK"), "{out}");
    assert!(uas.finish(LIMIT).await.succeeded());

    let mut args = target.to_vec();
    args.extend(["--password", "wrong", "--proxy", &proxy]);
    let (ok, out) = node.run(&args).await;
    assert!(!ok, "a refused call exits non-zero");
    assert!(
        out.contains("403"),
        "the SIP status is in the message: {out}"
    );
    relay.child.kill().await.unwrap();
}
