//! A fresh, migrated database for each test: a SQLite file in a temporary directory, or a new
//! PostgreSQL database created next to the one `TOLLGATE_TEST_POSTGRES_URL` names.
//!
//! A missing `TOLLGATE_TEST_POSTGRES_URL` is a failure, never a silent skip: `scripts/test.sh`
//! starts a throwaway PostgreSQL cluster when it is not set.

use std::path::Path;

use sea_orm::{ConnectionTrait, Database};
use tempfile::TempDir;
use tollgate::store::Store;

/// The environment variable naming a PostgreSQL server the tests may create databases on.
pub const POSTGRES_URL_ENV: &str = "TOLLGATE_TEST_POSTGRES_URL";

/// The `sqlite://` URL of the database file [`fresh_sqlite`] creates in `dir`.
pub fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("tollgate.db").display())
}

/// `TOLLGATE_TEST_ENGINE=postgres` runs the relay-level tests (every test that starts a relay
/// with [`super::relay::test_config`]) on PostgreSQL instead of SQLite; `scripts/test.sh`
/// runs them both ways.
pub const ENGINE_ENV: &str = "TOLLGATE_TEST_ENGINE";

/// The database a test relay in `dir` runs on: a SQLite file there, or, under
/// `TOLLGATE_TEST_ENGINE=postgres`, a new PostgreSQL database (created by
/// [`create_postgres_database`] when the relay starts).
pub fn test_database_url(dir: &Path) -> String {
    match std::env::var(ENGINE_ENV).as_deref() {
        Ok("postgres") => {
            let server = postgres_server_url()
                .unwrap_or_else(|| panic!("{ENGINE_ENV}=postgres needs {POSTGRES_URL_ENV}"));
            with_database(
                &server,
                &format!("tollgate_test_{}", uuid::Uuid::new_v4().simple()),
            )
        }
        Ok("sqlite") | Err(_) => sqlite_url(dir),
        Ok(other) => panic!("{ENGINE_ENV}={other}: expected sqlite or postgres"),
    }
}

/// Creates the (empty) PostgreSQL database `url` names, if it is a PostgreSQL URL made by
/// [`test_database_url`].
pub async fn create_postgres_database(url: &str) {
    let Some(name) = database_name(url) else {
        return;
    };
    let server = postgres_server_url().expect("a PostgreSQL server");
    let admin = Database::connect(server.as_str())
        .await
        .unwrap_or_else(|e| panic!("connect to {POSTGRES_URL_ENV}={server}: {e}"));
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("create database {name}: {e}"));
    admin.close().await.expect("close the admin connection");
}

/// A migrated SQLite database in a new temporary directory, deleted when the `TempDir` drops.
pub async fn fresh_sqlite() -> (Store, TempDir) {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let store = Store::connect(&sqlite_url(dir.path()))
        .await
        .expect("open a fresh SQLite database");
    (store, dir)
}

/// The PostgreSQL server to test against; the test fails when `TOLLGATE_TEST_POSTGRES_URL` is
/// unset.
pub fn postgres_server_url() -> Option<String> {
    match std::env::var(POSTGRES_URL_ENV) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => panic!(
            "{POSTGRES_URL_ENV} is not set: the PostgreSQL variants cannot run (scripts/test.sh \
             starts a throwaway cluster)"
        ),
    }
}

/// A migrated PostgreSQL database of its own (`tollgate_test_<random>`) and its URL, or `None`
/// when there is no server to test against (see [`postgres_server_url`]). Drop it with
/// [`drop_postgres`] once the test is done.
pub async fn fresh_postgres() -> Option<(Store, String)> {
    let server = postgres_server_url()?;
    let name = format!("tollgate_test_{}", uuid::Uuid::new_v4().simple());
    let admin = Database::connect(server.as_str())
        .await
        .unwrap_or_else(|e| panic!("connect to {POSTGRES_URL_ENV}={server}: {e}"));
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("create database {name}: {e}"));
    admin.close().await.expect("close the admin connection");

    let url = with_database(&server, &name);
    let store = Store::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"));
    Some((store, url))
}

/// Drops a database made by [`fresh_postgres`], disconnecting anything still using it.
pub async fn drop_postgres(url: &str) {
    let Some(server) = postgres_server_url() else {
        return;
    };
    let Some(name) = database_name(url) else {
        return;
    };
    let admin = Database::connect(server.as_str())
        .await
        .unwrap_or_else(|e| panic!("connect to {POSTGRES_URL_ENV}={server}: {e}"));
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .unwrap_or_else(|e| panic!("drop database {name}: {e}"));
    admin.close().await.expect("close the admin connection");
}

/// `url` with its database name (the path) replaced by `name`, keeping any query string.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let server = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{server}/{name}?{query}"),
        None => format!("{server}/{name}"),
    }
}

/// The database name in a URL built by [`with_database`].
fn database_name(url: &str) -> Option<&str> {
    let base = url.split('?').next()?;
    let authority_start = base.find("://")? + 3;
    let slash = base[authority_start..].find('/')?;
    Some(&base[authority_start + slash + 1..]).filter(|name| name.starts_with("tollgate_test_"))
}

/// Runs `async fn $body(store: Store, url: String)` once per engine; `url` opens the same
/// database again (a second connection pool, as a second relay node would). The PostgreSQL
/// variant fails when `TOLLGATE_TEST_POSTGRES_URL` is not set.
#[allow(unused_macros)] // each test binary compiles common/, not all of them use it
macro_rules! on_both_engines {
    ($($body:ident),* $(,)?) => {$(
        mod $body {
            #[tokio::test]
            async fn sqlite() {
                let (store, dir) = crate::common::db::fresh_sqlite().await;
                super::$body(store, crate::common::db::sqlite_url(dir.path())).await;
            }

            #[tokio::test]
            async fn postgres() {
                let Some((store, url)) = crate::common::db::fresh_postgres().await else {
                    return;
                };
                super::$body(store, url.clone()).await;
                crate::common::db::drop_postgres(&url).await;
            }
        }
    )*};
}
#[allow(unused_imports)]
pub(crate) use on_both_engines;
