//! Session-token throughput: minting (on the relay's message path) and verifying (what a shop
//! does per request), for ES256 and EdDSA. Run with `cargo bench --bench tokens`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use tollgate::store::Store;
use tollgate::tokens::{Algorithm, TokenConfig, TokenIssuer};

const NOW_MS: i64 = 1_795_680_000_000;

fn issuer(runtime: &tokio::runtime::Runtime, algorithm: Algorithm) -> TokenIssuer {
    runtime.block_on(async {
        let store = Store::connect("sqlite::memory:").await.expect("store");
        let config = TokenConfig {
            algorithm,
            ..TokenConfig::new("http://relay.example")
        };
        TokenIssuer::load(&store, config, NOW_MS)
            .await
            .expect("keys")
    })
}

fn tokens(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut group = c.benchmark_group("tokens");
    group.throughput(Throughput::Elements(1));
    for algorithm in [Algorithm::Es256, Algorithm::EdDsa] {
        let issuer = issuer(&runtime, algorithm);
        group.bench_function(format!("mint/{algorithm}"), |b| {
            b.iter(|| {
                issuer
                    .mint("alice", "shop1", "session-1", "service1@portal.com", NOW_MS)
                    .expect("mint")
            })
        });
        let (jwt, _) = issuer
            .mint("alice", "shop1", "session-1", "service1@portal.com", NOW_MS)
            .expect("mint");
        let verifier = issuer.verifier("shop1");
        group.bench_function(format!("verify/{algorithm}"), |b| {
            b.iter(|| verifier.verify(black_box(&jwt), NOW_MS).expect("valid"))
        });
    }
    group.finish();
}

criterion_group!(benches, tokens);
criterion_main!(benches);
