//! Billing without HTTP: building a statement for a user with 100 000 ledger entries, and
//! writing batches of 64 charge requests (one transaction each, as the charge writer does
//! under 64 concurrent clients), on a SQLite file (WAL, synchronous=FULL).
//! Run with `cargo bench --bench billing`. The HTTP figures are `bench/billing-bench.sh`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use tollgate::billing::statement::{write_statement, StatementFormat, StatementHead};
use tollgate::billing::{fingerprint, ChargeSource, NewCharge};
use tollgate::store::{ChargeRequest, IdempotencyKey, SessionEvent, SessionWriter, Store};

const NOW: i64 = 1_795_651_200_000;
const ENTRIES: usize = 100_000;

fn request(session: &str, n: usize) -> ChargeRequest {
    let key = format!("bench-{n}");
    ChargeRequest {
        session_id: session.to_owned(),
        source: ChargeSource::Rest,
        charges: vec![NewCharge {
            description: format!("item {n}"),
            unit_amount: 120,
            quantity: 1,
            currency: "EUR".into(),
            metadata: None,
        }],
        idempotency: IdempotencyKey {
            scope: "bench".into(),
            fingerprint: fingerprint(&[key.as_bytes()]),
            key,
        },
        app_server_id: None,
        single: true,
    }
}

/// A store with a user, a shop, a service and one confirmed session; returns the user id.
async fn world(store: &Store) -> String {
    let user = store.add_user("alice", "portal.com", "pw").await.unwrap();
    let (shop, _) = store
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
    for ev in [
        SessionEvent::Created {
            id: "s".into(),
            call_id: "c".into(),
            caller: "alice".into(),
            user_id: user.id.clone(),
            service: "wine@portal.com".into(),
            service_id: service.id,
            app_server: "shop1".into(),
            app_server_id: shop.id,
            node: "bench".into(),
            at: NOW,
        },
        SessionEvent::Confirmed {
            id: "s".into(),
            at: NOW,
            status: 200,
            dialog: None,
        },
    ] {
        writer.record_durably(ev).await.unwrap().unwrap();
    }
    drop(writer);
    done.await.unwrap();
    user.id
}

fn billing(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let (store, user) = runtime.block_on(async {
        let store = Store::connect(&url)
            .await
            .unwrap()
            .with_charge_grace_ms(i64::MAX / 4);
        let user = world(&store).await;
        let requests: Vec<_> = (0..ENTRIES).map(|n| request("s", n)).collect();
        for chunk in requests.chunks(256) {
            store.apply_charges(NOW + 1, chunk).await.unwrap();
        }
        (store, user)
    });

    let mut group = c.benchmark_group("billing");
    group.sample_size(10);
    group.bench_function("statement/100k-entries", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let head = StatementHead {
                    user_id: user.clone(),
                    user: "alice".into(),
                    from: 0,
                    to: i64::MAX,
                };
                let json = write_statement(&store, head, StatementFormat::Json, Vec::new())
                    .await
                    .unwrap();
                black_box(json)
            })
        })
    });
    let mut next = ENTRIES;
    group.throughput(Throughput::Elements(64));
    group.bench_function("charges/batch-of-64", |b| {
        b.iter(|| {
            let batch: Vec<_> = (next..next + 64).map(|n| request("s", n)).collect();
            next += 64;
            black_box(
                runtime
                    .block_on(store.apply_charges(NOW + 2, &batch))
                    .unwrap(),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, billing);
criterion_main!(benches);
