//! Full calls through a real relay with sipp as the client and as the application server.

mod common;

use common::relay::{free_port, start_relay, Seed};
use common::sipp::{require_sipp, uas_uri, wait_for_tcp, Sipp};
use std::time::Duration;
use tollgate::store::{SessionFilter, SessionState};

const LIMIT: Duration = Duration::from_secs(120);

async fn calls_with_digest_auth_all_succeed(tcp: bool, calls: u32) {
    require_sipp();
    let uas_port = free_port();
    let relay = start_relay(Seed {
        app_servers: vec![uas_uri(uas_port, tcp)],
    })
    .await;
    let uas = Sipp::uas("uas.xml", uas_port, calls, tcp);
    if tcp {
        wait_for_tcp(uas_port).await;
    }
    let target = if tcp { relay.tcp() } else { relay.udp() };
    let uac = Sipp::uac("uac_auth.xml", target, calls, 100, tcp, &[]);
    let uac_run = uac.finish(LIMIT).await;
    let uas_run = uas.finish(LIMIT).await;
    assert!(
        uac_run.succeeded(),
        "sipp client failed:\n{}",
        uac_run.output
    );
    assert!(
        uas_run.succeeded(),
        "sipp server failed:\n{}",
        uas_run.output
    );

    // The operator's view of the same calls.
    let metrics = reqwest::get(format!("http://{}/metrics", relay.relay.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in:\n{metrics}"))
    };
    // Requests received count retransmissions too; each call sends two INVITEs and one BYE.
    assert!(value("tollgate_sip_requests_total{method=\"INVITE\"}") >= 2 * calls as u64);
    assert!(value("tollgate_sip_requests_total{method=\"BYE\"}") >= calls as u64);
    assert_eq!(
        value("tollgate_sip_responses_total{status=\"407\"}"),
        calls as u64
    );
    assert_eq!(value("tollgate_sessions_active"), 0);

    let store = relay.store.clone();
    relay.relay.shutdown().await;
    let sessions = store
        .list_sessions(SessionFilter {
            state: None,
            limit: 10_000,
        })
        .await
        .unwrap();
    assert_eq!(sessions.len(), calls as usize, "one session per call");
    for s in &sessions {
        assert_eq!(s.state, SessionState::Terminated, "{s:?}");
        assert_eq!(s.caller, "alice");
        assert_eq!(s.service, "service1@portal.com");
        assert_eq!(s.app_server, "shop1");
        assert_eq!(s.final_status, Some(200));
        assert_eq!(s.ended_by.as_deref(), Some("caller"));
        let (confirmed, ended) = (s.confirmed_at.unwrap(), s.ended_at.unwrap());
        assert_eq!(s.duration_ms, Some(ended - confirmed));
        assert!(s.duration_ms.unwrap() >= 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_authenticated_calls_over_udp() {
    calls_with_digest_auth_all_succeed(false, 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticated_calls_over_tcp() {
    calls_with_digest_auth_all_succeed(true, 50).await;
}
