//! The `tollgate` binary as an operator and a caller use it: admin commands, `serve`, `call`,
//! (the relay surviving `kill -9` is in `lose_nothing.rs`).

mod common;

use common::process::Node;
use common::raw::LIMIT;
use common::relay::free_port;
use common::sipp::{require_sipp, Sipp};

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
    require_sipp();
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

#[tokio::test]
async fn keys_at_rest_generate_kek_and_a_refused_start() {
    use base64::Engine as _;
    use tollgate::tokens::SEALED_PREFIX;

    // `keys generate-kek` needs no configuration and prints a fresh 32-byte key each time.
    let node = Node::new(None, None, "");
    let (ok, first) = node.run(&["keys", "generate-kek"]).await;
    assert!(ok, "{first}");
    let kek = first.trim();
    let decoded = base64::engine::general_purpose::STANDARD.decode(kek);
    assert_eq!(decoded.map(|b| b.len()).ok(), Some(32), "{first}");
    let (_, second) = node.run(&["keys", "generate-kek"]).await;
    assert_ne!(second.trim(), kek);

    // With it configured, `keys rotate` stores every private key sealed.
    let config = |kek: &str| {
        format!(
            "{}[tokens]\nkey_encryption_key = \"{kek}\"\n",
            bare_config(&node)
        )
    };
    std::fs::write(&node.config, config(kek)).unwrap();
    let (ok, out) = node.run(&["keys", "rotate"]).await;
    assert!(ok, "{out}");
    let store = tollgate::store::Store::connect(&node.database_url)
        .await
        .unwrap();
    let stored = store.signing_keys().await.unwrap();
    assert_eq!(stored.len(), 3, "current, next and retired");
    assert!(stored
        .iter()
        .all(|k| k.private_key.starts_with(SEALED_PREFIX)));

    // Another key, a key of the wrong length, or none at all: refused at once, precisely.
    let other = second.trim();
    for (text, needles) in [
        (
            config(other),
            vec!["does not decrypt", stored[0].kid.as_str()],
        ),
        (
            config("c2hvcnQ="),
            vec!["[tokens] key_encryption_key", "decodes to 5 bytes"],
        ),
        (
            bare_config(&node),
            vec!["encrypted at rest", "TOLLGATE_KEY_ENCRYPTION_KEY"],
        ),
    ] {
        std::fs::write(&node.config, &text).unwrap();
        for command in [&["keys", "rotate"][..], &["serve"][..]] {
            let (ok, out) = tokio::time::timeout(LIMIT, node.run(command))
                .await
                .unwrap_or_else(|_| panic!("{command:?} started with {text}"));
            assert!(!ok, "{command:?} with {text}: {out}");
            for needle in &needles {
                assert!(out.contains(needle), "{command:?}: {needle:?} not in {out}");
            }
            assert!(!out.contains("panicked"), "{out}");
        }
    }
    assert_eq!(
        store.signing_keys().await.unwrap().len(),
        3,
        "nothing written"
    );
}

/// `node`'s database and listeners on port 0, nothing else.
fn bare_config(node: &Node) -> String {
    format!(
        "[database]\nurl = \"{}\"\n[sip]\nlisten = [\"udp:127.0.0.1:0\"]\n\
         [http]\nlisten = \"127.0.0.1:0\"\n",
        node.database_url
    )
}
