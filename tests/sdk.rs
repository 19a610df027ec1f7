//! SDK generation from the committed `openapi/openapi.json`, proven with the generators
//! integrators use:
//! - `openapi-python-client` (PyPI) generates a Python client, and `tests/sdk/
//!   python_client_check.py` drives a live relay with it (creates an application server and a
//!   service, reads sessions, gets typed problem documents back);
//! - `openapi-typescript` (npm) generates TypeScript types, and `tsc --strict` type-checks
//!   `tests/sdk/types_check.ts` against them.
//!
//! The tools are installed by `scripts/install-api-test-tools.sh` (a virtualenv at
//! `$TOLLGATE_SDK_VENV`, default `~/.cache/tollgate-sdk-venv`, and `tests/sdk/node_modules`).
//! Without them the tests fail, in CI and on a laptop alike (never a skip).

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::relay::{start_relay, Seed, OPERATOR_KEY};
use common::tools::{require, venv};
use tollgate::clock::{Clock, SystemClock};
use tollgate::store::{SessionEvent, SessionWriter};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn sdk_dir() -> PathBuf {
    Path::new(ROOT).join("tests/sdk")
}

fn openapi_json() -> PathBuf {
    Path::new(ROOT).join("openapi/openapi.json")
}

fn check(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_generated_python_client_drives_a_live_relay() {
    let generator = require(venv().join("bin/openapi-python-client"));
    let python = require(venv().join("bin/python"));

    let out_dir = tempfile::tempdir().unwrap();
    let package = out_dir.path().join("tollgate_client");
    let generated = tokio::process::Command::new(&generator)
        .arg("generate")
        .arg("--path")
        .arg(openapi_json())
        .arg("--output-path")
        .arg(&package)
        .args(["--meta", "none", "--config"])
        .arg(sdk_dir().join("python-client-config.yaml"))
        .output()
        .await
        .expect("run openapi-python-client");
    check("openapi-python-client generate", &generated);
    let warnings = String::from_utf8_lossy(&generated.stdout).to_string()
        + &String::from_utf8_lossy(&generated.stderr);
    for bad in [
        "Unable to parse",
        "Cannot parse",
        "will not be generated",
        "skipped",
    ] {
        assert!(
            !warnings.contains(bad),
            "the generator dropped part of the API:\n{warnings}"
        );
    }

    let relay = start_relay(Seed {
        app_servers: vec![],
    })
    .await;
    // A live session of an application server the script does not create, for it to read
    // and (with that server's key) charge.
    let (owner, owner_key) = relay
        .store
        .add_app_server_with_key("elsewhere", "sip:127.0.0.1:5098")
        .await
        .unwrap();
    let service = relay
        .store
        .add_service(
            "sdkservice@portal.com",
            &["elsewhere".to_owned()],
            tollgate::store::ForkMode::FirstAnswer,
        )
        .await
        .unwrap();
    let alice = relay.store.list_users().await.unwrap().remove(0);
    let (writer, _) = SessionWriter::spawn(relay.store.clone());
    let now = SystemClock.now_ms();
    for ev in [
        SessionEvent::Created {
            id: "sdk-session".into(),
            call_id: "sdk-call".into(),
            caller: "alice".into(),
            user_id: alice.id.clone(),
            service: "sdkservice@portal.com".into(),
            service_id: service.id.clone(),
            app_server: "elsewhere".into(),
            app_server_id: owner.id.clone(),
            node: "node-1".into(),
            at: now - 2000,
        },
        SessionEvent::Confirmed {
            id: "sdk-session".into(),
            at: now - 1000,
            status: 200,
            dialog: None,
        },
    ] {
        writer
            .record_durably(ev)
            .await
            .expect("writer alive")
            .expect("written");
    }

    // The relay runs on this test's runtime: wait for the script without blocking it.
    let ran = tokio::process::Command::new(&python)
        .arg(sdk_dir().join("python_client_check.py"))
        .arg(format!("http://{}", relay.relay.http))
        .arg(OPERATOR_KEY)
        .arg("sdk-session")
        .arg(owner_key.expose())
        .arg(&alice.id)
        .env("PYTHONPATH", out_dir.path())
        .output()
        .await
        .expect("run python");
    check("python_client_check.py", &ran);
    assert!(String::from_utf8_lossy(&ran.stdout).contains("python client: ok"));

    // What the script created is in the relay's database.
    let services = relay.store.list_services().await.unwrap();
    assert!(services
        .iter()
        .any(|s| s.address() == "pyservice@portal.com"));
}

#[test]
fn typescript_types_generate_and_type_check() {
    let bin = sdk_dir().join("node_modules/.bin");
    let generator = require(bin.join("openapi-typescript"));
    let tsc = require(bin.join("tsc"));
    let dir = tempfile::tempdir().unwrap();
    let types = dir.path().join("tollgate.d.ts");
    let generated = std::process::Command::new(generator)
        .arg(openapi_json())
        .arg("-o")
        .arg(&types)
        .output()
        .expect("run openapi-typescript");
    check("openapi-typescript", &generated);
    let text = std::fs::read_to_string(&types).unwrap();
    for name in [
        "listSessions",
        "createService",
        "createCharge",
        "getStatement",
        "introspectToken",
        "Problem",
    ] {
        assert!(
            text.contains(name),
            "{name} missing from the generated types"
        );
    }

    let program = dir.path().join("types_check.ts");
    std::fs::copy(sdk_dir().join("types_check.ts"), &program).unwrap();
    let checked = std::process::Command::new(tsc)
        .args([
            "--noEmit",
            "--strict",
            "--target",
            "es2022",
            "--module",
            "esnext",
            "--moduleResolution",
            "bundler",
        ])
        .arg(&program)
        .output()
        .expect("run tsc");
    check("tsc --strict types_check.ts", &checked);
}
