//! A real softphone from Debian calls through the relay with the default configuration (MD5
//! digest only, decision 0020): baresip (Debian package `baresip`) dials service1, answers the
//! relay's 407 by itself, the app server (a raw UDP peer) answers, and baresip hangs up.
//!
//! baresip runs headless from a temporary config directory: no audio device (the `ausine`
//! source and `aufile` player), commands over its `ctrl_tcp` module. A missing baresip fails
//! the test; `scripts/test.sh` and `.ci/run` install it.

mod common;

use common::raw::{self, Peer, RawUdp, WAIT};
use common::relay::{free_port, sessions_after_shutdown, start_relay, Seed};
use std::process::Stdio;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tollgate::store::SessionState;

/// baresip's config: SIP on a free loopback port, G.711, a sine source and a file player, the
/// command menu and the TCP control socket on `ctrl_port`.
fn baresip_config(sip_port: u16, ctrl_port: u16) -> String {
    format!(
        "poll_method\t\tpoll\n\
         sip_listen\t\t127.0.0.1:{sip_port}\n\
         sip_trans_def\t\tudp\n\
         call_local_timeout\t120\n\
         audio_player\t\taufile,/dev/null\n\
         audio_source\t\tausine,440\n\
         audio_alert\t\taufile,/dev/null\n\
         module_path\t\t/usr/lib/baresip/modules\n\
         module\t\t\tstdio.so\n\
         module\t\t\tg711.so\n\
         module\t\t\tausine.so\n\
         module\t\t\taufile.so\n\
         module_app\t\taccount.so\n\
         module_app\t\tmenu.so\n\
         module_app\t\tctrl_tcp.so\n\
         ctrl_tcp_listen\t\t127.0.0.1:{ctrl_port}\n"
    )
}

/// A ctrl_tcp command: a netstring holding `{"command": …}`.
fn ctrl_command(command: &str) -> Vec<u8> {
    let json = serde_json::json!({ "command": command, "token": "t" }).to_string();
    format!("{}:{json},", json.len()).into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_calls_through_the_relay_and_hangs_up() {
    let found = std::process::Command::new("baresip")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        found.is_ok(),
        "baresip is not installed: apt-get install -y baresip (scripts/test.sh does)"
    );
    let app = RawUdp::bind().await;
    let relay = start_relay(Seed {
        app_servers: vec![format!("sip:{}", app.local())],
    })
    .await;

    let home = tempfile::tempdir().expect("tempdir");
    let ctrl_port = free_port();
    std::fs::write(
        home.path().join("config"),
        baresip_config(free_port(), ctrl_port),
    )
    .unwrap();
    std::fs::write(
        home.path().join("accounts"),
        format!(
            "<sip:alice@portal.com>;auth_pass=secret;outbound=\"sip:{}\";regint=0\n",
            relay.udp()
        ),
    )
    .unwrap();
    std::fs::write(home.path().join("contacts"), "").unwrap();
    let log = home.path().join("baresip.log");
    let mut baresip = Command::new("baresip")
        .arg("-f")
        .arg(home.path())
        .arg("-e")
        .arg("/dial sip:service1@portal.com")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("baresip starts");

    // The INVITE reaches the app server only once baresip answered the relay's challenge.
    let (inv, relay_addr) = app.recv_within(WAIT).await;
    assert_eq!(raw::method(&inv), Some("INVITE"), "{inv}");
    assert!(
        raw::header(&inv, "From").is_some_and(|f| f.contains("sip:alice@portal.com")),
        "{inv}"
    );
    app.send_to(raw::ok_200(&inv, "shop", app.local(), "UDP"), relay_addr)
        .await;
    let ack = raw::next_where(&app, |m| raw::method(m).is_some()).await;
    assert_eq!(raw::method(&ack), Some("ACK"), "{ack}");

    // Hang up from baresip (unless it already did): its BYE comes through the relay.
    if let Ok(mut ctrl) = tokio::net::TcpStream::connect(("127.0.0.1", ctrl_port)).await {
        let _ = ctrl.write_all(&ctrl_command("hangup")).await;
    }
    let bye = raw::next_where(&app, |m| raw::method(m).is_some()).await;
    assert_eq!(raw::method(&bye), Some("BYE"), "{bye}");
    app.send_to(raw::response(&bye, "200 OK", "shop", &[]), relay_addr)
        .await;

    baresip.start_kill().ok();
    let _ = baresip.wait().await;
    let rows = sessions_after_shutdown(relay).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].state, SessionState::Terminated, "{rows:?}");
    drop(home);
}
