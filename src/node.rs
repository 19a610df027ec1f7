//! What makes a relay node itself across restarts: its stable id, and the digest nonce keys
//! it shares with every other node on the same database.
//!
//! - The node id comes from `node_id` in the configuration, else from `<data_dir>/node-id`,
//!   which the first start writes (`node-` and a random UUID, mode 0600). Never a constant
//!   and never per-start randomness: two nodes do not share an id, and a restarted node
//!   finds its own open sessions again.
//! - The nonce keys live in the database ([`Store::nonce_keys`]), are rotated with an
//!   overlap and reloaded every [`NONCE_KEY_RELOAD`]; `[sip] nonce_secret` replaces them with
//!   one fixed key from the configuration. A nonce issued before a restart stays valid after
//!   it.

use crate::app::AppError;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::sip::digest::NonceKeys;
use crate::store::{sqlite_file, NonceKeyRecord, Store};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often a node reloads the nonce keys; a new key is written twice this far ahead of its
/// activation, so every node knows it before any node issues with it.
pub const NONCE_KEY_RELOAD: Duration = Duration::from_secs(60);

/// The file in the data directory that keeps a generated node id.
pub const NODE_ID_FILE: &str = "node-id";

/// The node id: configured, or read from (first written to) `<data_dir>/node-id`.
pub fn node_id(config: &Config) -> Result<String, AppError> {
    if let Some(id) = config.node_id.as_deref().map(str::trim) {
        if id.is_empty() {
            return Err(AppError::Config("node_id must not be empty".into()));
        }
        return Ok(id.to_string());
    }
    let path = data_dir(config).join(NODE_ID_FILE);
    let io = |e: std::io::Error| AppError::Config(format!("{}: {e}", path.display()));
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let id = format!("node-{}", uuid::Uuid::new_v4().simple());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    write_private(&path, &id).map_err(io)?;
    tracing::info!(node_id = %id, file = %path.display(), "generated this node's id");
    Ok(id)
}

/// Where this node keeps its own files (see `data_dir` in [`Config`]).
fn data_dir(config: &Config) -> PathBuf {
    if let Some(dir) = &config.data_dir {
        return dir.clone();
    }
    sqlite_file(&config.database.url)
        .and_then(|file| file.parent().map(Path::to_path_buf))
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Creates `path` with `text`, readable by the owner only; fails if it exists.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")
}

/// The nonce keys, kept current: fixed from `[sip] nonce_secret`, or loaded from the
/// database now and reloaded (rotating when due) every [`NONCE_KEY_RELOAD`] by the returned
/// task.
pub async fn nonce_keys(
    config: &Config,
    store: &Store,
    clock: SharedClock,
) -> Result<(watch::Receiver<NonceKeys>, Option<JoinHandle<()>>), AppError> {
    if let Some(secret) = &config.sip.nonce_secret {
        let (_, rx) = watch::channel(NonceKeys::new(secret.expose().as_bytes(), &[]));
        return Ok((rx, None));
    }
    let rotate_ms =
        i64::try_from(config.sip.nonce_key_rotation_secs.max(60) * 1000).unwrap_or(i64::MAX);
    let lead_ms = 2 * NONCE_KEY_RELOAD.as_millis() as i64;
    let load = move |store: Store, clock: SharedClock| async move {
        let now = clock.now_ms();
        let rows = store.nonce_keys(now, rotate_ms, lead_ms).await?;
        keys_from(&rows, now).ok_or_else(|| AppError::Config("no nonce key in the database".into()))
    };
    let (tx, rx) = watch::channel(load(store.clone(), clock.clone()).await?);
    let store = store.clone();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(NONCE_KEY_RELOAD);
        tick.tick().await;
        loop {
            tick.tick().await;
            match load(store.clone(), clock.clone()).await {
                Ok(keys) => {
                    if tx.send(keys).is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "nonce key reload failed"),
            }
        }
    });
    Ok((rx, Some(task)))
}

/// Issue with the newest active key, accept every kept key.
fn keys_from(rows: &[NonceKeyRecord], now_ms: i64) -> Option<NonceKeys> {
    let current = rows
        .iter()
        .find(|r| r.active_from <= now_ms)
        .or_else(|| rows.last())?;
    let others: Vec<&[u8]> = rows
        .iter()
        .filter(|r| !std::ptr::eq(*r, current))
        .map(|r| r.key.as_slice())
        .collect();
    Some(NonceKeys::new(&current.key, &others))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_node_id_is_kept_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            data_dir: Some(dir.path().to_path_buf()),
            ..Config::default()
        };
        let first = node_id(&config).unwrap();
        assert!(first.starts_with("node-") && first.len() > 20, "{first}");
        assert_eq!(node_id(&config).unwrap(), first, "stable across starts");
        let other = tempfile::tempdir().unwrap();
        config.data_dir = Some(other.path().to_path_buf());
        assert_ne!(
            node_id(&config).unwrap(),
            first,
            "another data directory, another id"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(NODE_ID_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        config.node_id = Some("edge-7".into());
        assert_eq!(node_id(&config).unwrap(), "edge-7");
    }

    #[test]
    fn data_dir_defaults_to_the_sqlite_directory() {
        let mut config = Config::default();
        config.database.url = "sqlite:///var/lib/tollgate/t.db?mode=rwc".into();
        assert_eq!(data_dir(&config), PathBuf::from("/var/lib/tollgate"));
        config.database.url = "postgres://db/tollgate".into();
        assert_eq!(data_dir(&config), PathBuf::from("."));
    }

    #[test]
    fn the_newest_active_key_issues() {
        let ip = std::net::IpAddr::from([10, 0, 0, 1]);
        let rows = vec![
            NonceKeyRecord {
                key: b"next".to_vec(),
                active_from: 200,
            },
            NonceKeyRecord {
                key: b"current".to_vec(),
                active_from: 100,
            },
            NonceKeyRecord {
                key: b"previous".to_vec(),
                active_from: 0,
            },
        ];
        let keys = keys_from(&rows, 150).unwrap();
        let nonce = keys.issue(150, ip);
        let current_only = NonceKeys::new(b"current", &[]);
        assert!(matches!(
            current_only.check(&nonce, ip, 150, 1_000),
            crate::sip::digest::NonceStatus::Valid(_)
        ));
        for other in ["next", "previous"] {
            let n = NonceKeys::new(other.as_bytes(), &[]).issue(150, ip);
            assert!(matches!(
                keys.check(&n, ip, 150, 1_000),
                crate::sip::digest::NonceStatus::Valid(_)
            ));
        }
        assert!(keys_from(&[], 0).is_none());
    }
}
