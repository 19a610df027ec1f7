//! The storage layer against real databases: every test body runs on a fresh SQLite file and,
//! when `TOLLGATE_TEST_POSTGRES_URL` is set (always under `CI=true`), on a fresh PostgreSQL
//! database.

mod common;

use std::time::Duration;

use common::db::{fresh_sqlite, on_both_engines};
use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, Statement, TransactionTrait};
use tollgate::store::{
    Binding, EndReason, ForkMode, Party, SessionEvent, SessionFilter, SessionState, SessionWriter,
    Store, StoreError,
};

on_both_engines!(
    migrations_apply_twice,
    users_are_stored_as_ha1_hashes,
    user_input_is_validated,
    services_keep_their_app_server_order,
    unknown_app_server_is_not_found_and_changes_nothing,
    directory_holds_credentials_and_routes,
    session_lifecycles,
    durable_event_is_readable_from_another_connection,
    thousands_of_events_all_land,
    poisoned_event_does_not_sink_its_batch,
    writer_flushes_when_dropped,
    interrupted_sessions_are_closed_honestly,
    bindings_upsert_expire_and_go,
    nonce_keys_are_shared_and_rotate_with_an_overlap,
);

/// The nonce keys every node shares: created once, the same for a second node, rotated ahead
/// of activation, at most three kept.
async fn nonce_keys_are_shared_and_rotate_with_an_overlap(store: Store, url: String) {
    const ROTATE: i64 = 10_000;
    const LEAD: i64 = 1_000;
    let first = store.nonce_keys(0, ROTATE, LEAD).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].key.len(), 32);
    let other_node = Store::connect(&url).await.unwrap();
    assert_eq!(other_node.nonce_keys(5, ROTATE, LEAD).await.unwrap(), first);
    // Due: the next key is written ahead of its activation, the current one stays.
    let rotated = store.nonce_keys(ROTATE, ROTATE, LEAD).await.unwrap();
    assert_eq!(rotated.len(), 2);
    assert_eq!(rotated[0].active_from, ROTATE + LEAD);
    assert_eq!(rotated[1], first[0]);
    // While the next key is pending no other is written, by any node.
    assert_eq!(
        other_node
            .nonce_keys(ROTATE + 1, ROTATE, LEAD)
            .await
            .unwrap(),
        rotated
    );
    // Two more rotations: only the three newest are kept.
    store
        .nonce_keys(2 * ROTATE + LEAD, ROTATE, LEAD)
        .await
        .unwrap();
    let kept = store
        .nonce_keys(3 * ROTATE + 2 * LEAD, ROTATE, LEAD)
        .await
        .unwrap();
    assert_eq!(kept.len(), tollgate::store::KEPT_KEYS);
    assert!(!kept.contains(&first[0]), "the oldest key is gone");
    assert!(kept.windows(2).all(|w| w[0].active_from > w[1].active_from));
}

async fn migrations_apply_twice(store: Store, url: String) {
    Migrator::up(store.connection(), None)
        .await
        .expect("second run of the migrations");
    let again = Store::connect(&url)
        .await
        .expect("connect to a migrated database");
    assert!(Migrator::get_pending_migrations(again.connection())
        .await
        .expect("read migration status")
        .is_empty());
    assert_eq!(
        Migrator::get_applied_migrations(store.connection())
            .await
            .expect("read migration status")
            .len(),
        Migrator::migrations().len()
    );
    // Down and up again: every table is dropped and recreated.
    Migrator::refresh(store.connection())
        .await
        .expect("roll back and reapply the migrations");
    // The schema is usable after all that.
    store
        .add_user("alice", "portal.com", "secret")
        .await
        .expect("add a user");
}

const ALICE_HA1_MD5: &str = "ed1f1a77d75ef8169f6eb7138ca586b3"; // MD5("alice:portal.com:secret")
const ALICE_HA1_SHA256: &str = "ee66f957e9b28081b131ac1327cd05ba24b7179afaf5f373d49ff241e51e2251";

async fn users_are_stored_as_ha1_hashes(store: Store, _url: String) {
    let alice = store
        .add_user("alice", "portal.com", "secret")
        .await
        .expect("add alice");
    assert_eq!(alice.name, "alice");
    assert_eq!(alice.realm, "portal.com");

    let directory = store.load_directory().await.expect("load the directory");
    let credentials = &directory.users["alice"];
    assert_eq!(credentials.ha1_md5, ALICE_HA1_MD5);
    assert_eq!(credentials.ha1_sha256, ALICE_HA1_SHA256);

    // No column of the row holds the password.
    let backend = store.connection().get_database_backend();
    let rows = store
        .connection()
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT id, name, realm, ha1_md5, ha1_sha256 FROM users",
        ))
        .await
        .expect("read the users table");
    assert_eq!(rows.len(), 1);
    for column in ["id", "name", "realm", "ha1_md5", "ha1_sha256"] {
        let value: String = rows[0].try_get("", column).expect("a text column");
        assert!(!value.contains("secret"), "{column} holds the password");
    }

    let duplicate = store.add_user("alice", "portal.com", "other").await;
    match duplicate {
        Err(err @ StoreError::Conflict(_)) => {
            assert_eq!(err.to_string(), "user alice already exists")
        }
        other => panic!("expected a conflict, got {other:?}"),
    }

    store
        .set_password("alice", "portal.com", "better")
        .await
        .expect("change the password");
    let directory = store.load_directory().await.expect("load the directory");
    assert_ne!(directory.users["alice"].ha1_md5, ALICE_HA1_MD5);

    store
        .add_user("bob", "portal.com", "pw")
        .await
        .expect("add bob");
    let names: Vec<_> = store
        .list_users()
        .await
        .expect("list users")
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["alice", "bob"]);

    store.remove_user("alice").await.expect("remove alice");
    assert!(matches!(
        store.remove_user("alice").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.set_password("alice", "portal.com", "x").await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.list_users().await.expect("list users").len(), 1);
}

async fn user_input_is_validated(store: Store, _url: String) {
    for name in ["", "al:ice", "al ice", "alice@portal.com"] {
        assert!(
            matches!(
                store.add_user(name, "portal.com", "secret").await,
                Err(StoreError::Invalid(_))
            ),
            "user name {name:?}"
        );
    }
    assert!(matches!(
        store.add_user("alice", "", "secret").await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.add_user("alice", "portal.com", "").await,
        Err(StoreError::Invalid(_))
    ));
    for uri in [
        "http://shop.example.com",
        "shop.example.com",
        "sip:",
        "sip:a b",
    ] {
        assert!(
            matches!(
                store.add_app_server("shop1", uri).await,
                Err(StoreError::Invalid(_))
            ),
            "uri {uri:?}"
        );
    }
    store
        .add_app_server("shop1", "sip:127.0.0.1:5090")
        .await
        .expect("add shop1");
    for service in ["service1", "@portal.com", "service1@", "a b@portal.com"] {
        assert!(
            matches!(
                store
                    .add_service(service, &["shop1".into()], ForkMode::FirstAnswer)
                    .await,
                Err(StoreError::Invalid(_))
            ),
            "service {service:?}"
        );
    }
    assert!(matches!(
        store
            .add_service("service1@portal.com", &[], ForkMode::FirstAnswer)
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store
            .add_service(
                "service1@portal.com",
                &["shop1".into(), "shop1".into()],
                ForkMode::FirstAnswer
            )
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert!(store.list_users().await.expect("list users").is_empty());
    assert!(store
        .list_services()
        .await
        .expect("list services")
        .is_empty());
}

async fn services_keep_their_app_server_order(store: Store, _url: String) {
    let shop1 = store
        .add_app_server("shop1", "sip:127.0.0.1:5090")
        .await
        .expect("add shop1");
    let shop2 = store
        .add_app_server("shop2", "sips:shop2.example.com;transport=tcp")
        .await
        .expect("add shop2");
    match store.add_app_server("shop1", "sip:127.0.0.1:5091").await {
        Err(err @ StoreError::Conflict(_)) => {
            assert_eq!(err.to_string(), "application server shop1 already exists")
        }
        other => panic!("expected a conflict, got {other:?}"),
    }

    let service = store
        .add_service(
            "service1@portal.com",
            &["shop2".into(), "shop1".into()],
            ForkMode::FirstAnswer,
        )
        .await
        .expect("add service1");
    assert_eq!(service.address(), "service1@portal.com");
    assert_eq!(service.app_servers, [shop2.clone(), shop1.clone()]);
    store
        .add_service(
            "service2@portal.com",
            &["shop1".into()],
            ForkMode::FirstAnswer,
        )
        .await
        .expect("add service2");

    match store
        .add_service(
            "service1@portal.com",
            &["shop1".into()],
            ForkMode::FirstAnswer,
        )
        .await
    {
        Err(err @ StoreError::Conflict(_)) => {
            assert_eq!(
                err.to_string(),
                "service service1@portal.com already exists"
            )
        }
        other => panic!("expected a conflict, got {other:?}"),
    }

    let services = store.list_services().await.expect("list services");
    assert_eq!(services.len(), 2);
    assert_eq!(services[0].address(), "service1@portal.com");
    assert_eq!(services[0].app_servers, [shop2.clone(), shop1.clone()]);
    assert_eq!(services[1].app_servers, std::slice::from_ref(&shop1));

    let servers = store.list_app_servers().await.expect("list app servers");
    assert_eq!(servers, [shop1, shop2]);
}

async fn unknown_app_server_is_not_found_and_changes_nothing(store: Store, _url: String) {
    store
        .add_app_server("shop1", "sip:127.0.0.1:5090")
        .await
        .expect("add shop1");
    match store
        .add_service(
            "service1@portal.com",
            &["shop1".into(), "shop9".into()],
            ForkMode::FirstAnswer,
        )
        .await
    {
        Err(err @ StoreError::NotFound(_)) => {
            assert_eq!(err.to_string(), "no application server named shop9")
        }
        other => panic!("expected not found, got {other:?}"),
    }
    assert!(store
        .list_services()
        .await
        .expect("list services")
        .is_empty());
    // The name is still free.
    store
        .add_service(
            "service1@portal.com",
            &["shop1".into()],
            ForkMode::FirstAnswer,
        )
        .await
        .expect("add service1");
}

async fn directory_holds_credentials_and_routes(store: Store, _url: String) {
    store
        .add_user("alice", "portal.com", "secret")
        .await
        .expect("add alice");
    store
        .add_user("bob", "other.org", "hunter2")
        .await
        .expect("add bob");
    let shop1 = store
        .add_app_server("shop1", "sip:127.0.0.1:5090")
        .await
        .expect("add shop1");
    let shop2 = store
        .add_app_server("shop2", "sip:127.0.0.1:5091")
        .await
        .expect("add shop2");
    store
        .add_service(
            "Service1@Portal.COM",
            &["shop1".into(), "shop2".into()],
            ForkMode::FirstAnswer,
        )
        .await
        .expect("add service1");
    store
        .add_service("wine@portal.com", &["shop2".into()], ForkMode::AllAnswers)
        .await
        .expect("add wine");

    let directory = store.load_directory().await.expect("load the directory");
    assert_eq!(directory.users.len(), 2);
    assert_eq!(directory.users["alice"].realm, "portal.com");
    assert_eq!(directory.users["alice"].ha1_md5, ALICE_HA1_MD5);
    assert_eq!(directory.users["bob"].realm, "other.org");
    assert_eq!(directory.services.len(), 2);
    let service1 = &directory.services["service1@portal.com"];
    assert_eq!(service1.app_servers, [shop1, shop2.clone()]);
    assert_eq!(service1.fork_mode, ForkMode::FirstAnswer);
    let wine = &directory.services["wine@portal.com"];
    assert_eq!(wine.app_servers, [shop2]);
    assert_eq!(wine.fork_mode, ForkMode::AllAnswers);
}

fn created(id: &str, at: i64) -> SessionEvent {
    created_on(id, "node-a", at)
}

fn created_on(id: &str, node: &str, at: i64) -> SessionEvent {
    SessionEvent::Created {
        id: id.into(),
        call_id: format!("call-{id}"),
        caller: "alice".into(),
        user_id: "user-alice".into(),
        service: "service1@portal.com".into(),
        service_id: "service-1".into(),
        app_server: "shop1".into(),
        app_server_id: "shop-1".into(),
        node: node.into(),
        at,
    }
}

/// Waits for a durable event and insists it was written.
async fn committed(receipt: tokio::sync::oneshot::Receiver<Result<(), String>>) {
    receipt
        .await
        .expect("the writer answers")
        .expect("the event is committed");
}

async fn session_lifecycles(store: Store, _url: String) {
    let (writer, task) = SessionWriter::spawn(store.clone());

    writer.record(created("s1", 1_000));
    writer.record(SessionEvent::Confirmed {
        id: "s1".into(),
        at: 1_500,
        status: 200,
        dialog: None,
    });
    writer.record(SessionEvent::Activity {
        id: "s1".into(),
        at: 30_000,
    });
    committed(writer.record_durably(SessionEvent::Terminated {
        id: "s1".into(),
        at: 61_500,
        duration_ms: 60_000,
        ended_by: Party::Callee,
        reason: EndReason::Bye,
    }))
    .await;

    writer.record(created("s2", 2_000));
    committed(writer.record_durably(SessionEvent::Failed {
        id: "s2".into(),
        at: 2_100,
        status: 503,
    }))
    .await;

    writer.record(created("s3", 3_000));
    committed(writer.record_durably(SessionEvent::Cancelled {
        id: "s3".into(),
        at: 3_200,
        status: 487,
    }))
    .await;

    committed(writer.record_durably(created("s4", 4_000))).await;

    let s1 = store.get_session("s1").await.expect("read s1");
    assert_eq!(s1.call_id, "call-s1");
    assert_eq!(s1.caller, "alice");
    assert_eq!(s1.service, "service1@portal.com");
    assert_eq!(s1.app_server, "shop1");
    assert_eq!(s1.node, "node-a");
    assert_eq!(s1.state, SessionState::Terminated);
    assert_eq!(s1.created_at, 1_000);
    assert_eq!(s1.confirmed_at, Some(1_500));
    assert_eq!(s1.ended_at, Some(61_500));
    assert_eq!(s1.duration_ms, Some(60_000));
    assert_eq!(s1.ended_by.as_deref(), Some("callee"));
    assert_eq!(s1.end_reason.as_deref(), Some("bye"));
    assert_eq!(s1.final_status, Some(200), "the confirming 2xx");

    let s2 = store.get_session("s2").await.expect("read s2");
    assert_eq!(s2.state, SessionState::Failed);
    assert_eq!(s2.final_status, Some(503));
    assert_eq!(s2.ended_at, Some(2_100));
    assert_eq!(s2.confirmed_at, None);
    assert_eq!(s2.duration_ms, None);

    let s3 = store.get_session("s3").await.expect("read s3");
    assert_eq!(s3.state, SessionState::Cancelled);
    assert_eq!(s3.final_status, Some(487));
    assert_eq!(s3.ended_at, Some(3_200));

    let s4 = store.get_session("s4").await.expect("read s4");
    assert_eq!(s4.state, SessionState::Trying);
    assert_eq!(s4.ended_at, None);

    assert!(matches!(
        store.get_session("nope").await,
        Err(StoreError::NotFound(_))
    ));

    let ids = |sessions: Vec<tollgate::store::SessionRecord>| -> Vec<String> {
        sessions.into_iter().map(|s| s.id).collect()
    };
    let all = store
        .list_sessions(SessionFilter::default())
        .await
        .expect("list sessions");
    assert_eq!(ids(all), ["s4", "s3", "s2", "s1"]);
    let newest_two = store
        .list_sessions(SessionFilter {
            state: None,
            limit: 2,
        })
        .await
        .expect("list sessions");
    assert_eq!(ids(newest_two), ["s4", "s3"]);
    let failed = store
        .list_sessions(SessionFilter {
            state: Some(SessionState::Failed),
            limit: 10,
        })
        .await
        .expect("list sessions");
    assert_eq!(ids(failed), ["s2"]);

    // An event for a session that was never created is reported, not silently dropped.
    let missing = writer
        .record_durably(SessionEvent::Confirmed {
            id: "ghost".into(),
            at: 5_000,
            status: 200,
            dialog: None,
        })
        .await
        .expect("the writer answers");
    assert_eq!(missing, Err("no session ghost".to_owned()));

    drop(writer);
    task.await.expect("the writer task ends cleanly");
}

async fn durable_event_is_readable_from_another_connection(store: Store, url: String) {
    let other = Store::connect(&url)
        .await
        .expect("a second connection pool");
    let (writer, _task) = SessionWriter::spawn(store);
    for i in 0..20 {
        let id = format!("durable-{i}");
        committed(writer.record_durably(created(&id, i))).await;
        let seen = other
            .get_session(&id)
            .await
            .expect("the committed row is visible elsewhere");
        assert_eq!(seen.state, SessionState::Trying);
    }
}

async fn thousands_of_events_all_land(store: Store, _url: String) {
    const SESSIONS: usize = 1_000; // five events each: 5,000 events
    let (writer, task) = SessionWriter::spawn(store.clone());
    for i in 0..SESSIONS {
        let id = format!("bulk-{i:04}");
        let t = i as i64 * 10;
        writer.record(created(&id, t));
        writer.record(SessionEvent::Confirmed {
            id: id.clone(),
            at: t + 1,
            status: 200,
            dialog: None,
        });
        writer.record(SessionEvent::Activity {
            id: id.clone(),
            at: t + 2,
        });
        writer.record(SessionEvent::Activity {
            id: id.clone(),
            at: t + 3,
        });
        writer.record(SessionEvent::Terminated {
            id,
            at: t + 5,
            duration_ms: 4,
            ended_by: Party::Caller,
            reason: EndReason::Bye,
        });
        if i % 100 == 0 {
            // Let the writer interleave with the producer, as it does in the relay.
            tokio::task::yield_now().await;
        }
    }
    // Batches commit in queue order: once this one is durable, everything before it is.
    committed(writer.record_durably(created("bulk-last", 1_000_000))).await;

    let terminated = store
        .list_sessions(SessionFilter {
            state: Some(SessionState::Terminated),
            limit: 10 * SESSIONS as u64,
        })
        .await
        .expect("list sessions");
    assert_eq!(terminated.len(), SESSIONS);
    assert!(terminated
        .iter()
        .all(|s| s.duration_ms == Some(4) && s.ended_by.as_deref() == Some("caller")));
    let all = store
        .list_sessions(SessionFilter {
            state: None,
            limit: 10 * SESSIONS as u64,
        })
        .await
        .expect("list sessions");
    assert_eq!(all.len(), SESSIONS + 1);

    drop(writer);
    task.await.expect("the writer task ends cleanly");
}

async fn poisoned_event_does_not_sink_its_batch(store: Store, _url: String) {
    let (writer, _task) = SessionWriter::spawn(store.clone());
    committed(writer.record_durably(created("dup", 1))).await;

    // Queued back to back, so the writer takes them as one batch.
    let before = writer.record_durably(created("ok-1", 2));
    let duplicate = writer.record_durably(created("dup", 3));
    let after = writer.record_durably(SessionEvent::Failed {
        id: "ok-1".into(),
        at: 4,
        status: 486,
    });
    committed(before).await;
    assert!(duplicate.await.expect("the writer answers").is_err());
    committed(after).await;

    let ok = store.get_session("ok-1").await.expect("read ok-1");
    assert_eq!(ok.state, SessionState::Failed);
    assert_eq!(ok.final_status, Some(486));
    assert_eq!(
        store.get_session("dup").await.expect("read dup").created_at,
        1
    );
}

async fn writer_flushes_when_dropped(store: Store, _url: String) {
    let (writer, task) = SessionWriter::spawn(store.clone());
    let clone = writer.clone();
    for i in 0..50 {
        clone.record(created(&format!("flush-{i}"), i));
    }
    drop(clone);
    drop(writer);
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the writer task ends once every handle is gone")
        .expect("the writer task ends cleanly");
    let all = store
        .list_sessions(SessionFilter {
            state: None,
            limit: 100,
        })
        .await
        .expect("list sessions");
    assert_eq!(all.len(), 50);
}

async fn interrupted_sessions_are_closed_honestly(store: Store, _url: String) {
    let (writer, task) = SessionWriter::spawn(store.clone());
    // node-a: one still trying, one confirmed with later activity, one confirmed without,
    // one already over. node-b: one confirmed, which node-a's restart must not touch.
    writer.record(created("trying", 1_000));
    writer.record(created("active", 1_000));
    writer.record(SessionEvent::Confirmed {
        id: "active".into(),
        at: 2_000,
        status: 200,
        dialog: None,
    });
    writer.record(SessionEvent::Activity {
        id: "active".into(),
        at: 9_000,
    });
    writer.record(created("quiet", 1_000));
    writer.record(SessionEvent::Confirmed {
        id: "quiet".into(),
        at: 3_000,
        status: 200,
        dialog: None,
    });
    writer.record(created("over", 1_000));
    writer.record(SessionEvent::Failed {
        id: "over".into(),
        at: 1_100,
        status: 404,
    });
    writer.record(created_on("elsewhere", "node-b", 1_000));
    committed(writer.record_durably(SessionEvent::Confirmed {
        id: "elsewhere".into(),
        at: 2_000,
        status: 200,
        dialog: None,
    }))
    .await;
    drop(writer);
    task.await.expect("the writer task ends cleanly");

    let resumed = store
        .resume_sessions("node-a", 50_000, 0)
        .await
        .expect("close interrupted sessions");
    assert_eq!(resumed.closed_count(), 3);
    assert!(
        resumed.live.is_empty(),
        "no dialog was stored: nothing to carry on"
    );

    let trying = store.get_session("trying").await.expect("read");
    assert_eq!(trying.state, SessionState::Failed);
    assert_eq!(trying.final_status, None);
    assert_eq!(trying.ended_at, Some(50_000));
    assert_eq!(trying.end_reason.as_deref(), Some("relay_restart"));
    assert_eq!(trying.ended_by.as_deref(), Some("relay"));

    let active = store.get_session("active").await.expect("read");
    assert_eq!(active.state, SessionState::Terminated);
    assert_eq!(active.ended_at, Some(9_000));
    assert_eq!(active.duration_ms, Some(7_000));
    assert_eq!(active.ended_by.as_deref(), Some("relay"));
    assert_eq!(active.end_reason.as_deref(), Some("relay_restart"));

    let quiet = store.get_session("quiet").await.expect("read");
    assert_eq!(quiet.state, SessionState::Terminated);
    assert_eq!(quiet.ended_at, Some(3_000));
    assert_eq!(quiet.duration_ms, Some(0));

    let over = store.get_session("over").await.expect("read");
    assert_eq!(over.state, SessionState::Failed);
    assert_eq!(over.final_status, Some(404));
    assert_eq!(over.end_reason, None);

    let elsewhere = store.get_session("elsewhere").await.expect("read");
    assert_eq!(elsewhere.state, SessionState::Confirmed);

    assert_eq!(
        store
            .resume_sessions("node-a", 60_000, 0)
            .await
            .expect("close again")
            .closed_count(),
        0
    );
}

fn binding(contact: &str, expires_at: i64, cseq: u32) -> Binding {
    Binding {
        aor: "sip:alice@portal.com".into(),
        contact: contact.into(),
        expires_at,
        call_id: "reg-1".into(),
        cseq,
    }
}

async fn bindings_upsert_expire_and_go(store: Store, _url: String) {
    let aor = "sip:alice@portal.com";
    let phone = binding("sip:alice@10.0.0.1:5060", 10_000, 1);
    let laptop = binding("sip:alice@10.0.0.2:5060;transport=tcp", 5_000, 1);
    store.save_binding(&phone).await.expect("save phone");
    store.save_binding(&laptop).await.expect("save laptop");
    store
        .save_binding(&Binding {
            aor: "sip:bob@portal.com".into(),
            ..binding("sip:bob@10.0.0.3", 10_000, 7)
        })
        .await
        .expect("save bob");

    assert_eq!(
        store.bindings(aor, 1_000).await.expect("bindings"),
        [phone.clone(), laptop.clone()]
    );
    // Expiry is exclusive: a binding is gone at its expires_at.
    assert_eq!(
        store.bindings(aor, 5_000).await.expect("bindings"),
        std::slice::from_ref(&phone)
    );

    // Refreshing the same contact updates it in place.
    let refreshed = Binding {
        expires_at: 20_000,
        call_id: "reg-2".into(),
        cseq: 2,
        ..laptop.clone()
    };
    store
        .save_binding(&refreshed)
        .await
        .expect("refresh laptop");
    assert_eq!(
        store.bindings(aor, 5_000).await.expect("bindings"),
        [phone.clone(), refreshed.clone()]
    );

    store
        .remove_binding(aor, &phone.contact)
        .await
        .expect("remove phone");
    store
        .remove_binding(aor, "sip:nobody@nowhere")
        .await
        .expect("removing a missing binding is fine");
    assert_eq!(store.bindings(aor, 0).await.expect("bindings"), [refreshed]);

    store.remove_all_bindings(aor).await.expect("remove all");
    assert!(store.bindings(aor, 0).await.expect("bindings").is_empty());
    assert_eq!(
        store
            .bindings("sip:bob@portal.com", 0)
            .await
            .expect("bindings")
            .len(),
        1
    );
}

// ---- SQLite only ----

/// WAL, synchronous=FULL, busy_timeout and foreign keys hold on every pooled connection, not
/// just the first one.
#[tokio::test]
async fn sqlite_pragmas_hold_on_every_pooled_connection() {
    let (store, _dir) = fresh_sqlite().await;
    let db = store.connection();
    // Holding transactions open forces each query onto a different pooled connection.
    let mut open = Vec::new();
    for _ in 0..4 {
        open.push(db.begin().await.expect("begin"));
    }
    for txn in &open {
        assert_eq!(pragma::<String>(txn, "journal_mode").await, "wal");
        assert_eq!(pragma::<i64>(txn, "synchronous").await, 2); // FULL
        assert_eq!(pragma::<i64>(txn, "busy_timeout").await, 5000);
        assert_eq!(pragma::<i64>(txn, "foreign_keys").await, 1);
    }
}

async fn pragma<T: sea_orm::TryGetable>(db: &impl ConnectionTrait, name: &str) -> T {
    db.query_one_raw(Statement::from_string(
        sea_orm::DatabaseBackend::Sqlite,
        format!("PRAGMA {name}"),
    ))
    .await
    .expect("run the pragma")
    .expect("a row")
    .try_get_by_index(0)
    .expect("the pragma's value")
}

#[tokio::test]
async fn sqlite_in_memory_works() {
    let store = Store::connect("sqlite::memory:")
        .await
        .expect("an in-memory database");
    store
        .add_user("alice", "portal.com", "secret")
        .await
        .expect("add alice");
    let (writer, _task) = SessionWriter::spawn(store.clone());
    committed(writer.record_durably(created("mem", 1))).await;
    assert_eq!(
        store.get_session("mem").await.expect("read").state,
        SessionState::Trying
    );
}

#[tokio::test]
async fn unsupported_database_urls_are_invalid() {
    assert!(matches!(
        Store::connect("mysql://localhost/tollgate").await,
        Err(StoreError::Invalid(_))
    ));
}
