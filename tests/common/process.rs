//! The `tollgate` binary as a separate process: a node with its own config file and
//! database, its admin commands, and `serve` (which a test may kill -9, signal and restart).

use super::raw::LIMIT;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tollgate::store::Store;

pub const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

/// A relay node's files: `tollgate.toml` in a fresh directory, and its database.
pub struct Node {
    pub dir: TempDir,
    pub config: PathBuf,
    pub database_url: String,
}

/// A running `tollgate serve` and the addresses it printed.
pub struct Served {
    pub child: Child,
    pub udp: SocketAddr,
    pub http: SocketAddr,
}

impl Node {
    /// A node on SQLite next to its config (or on `database_url`), with `extra` TOML appended
    /// to a config whose SIP listener is `udp` (port 0 when `None`) and HTTP listener port 0.
    pub fn new(database_url: Option<String>, udp: Option<u16>, extra: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("tollgate.toml");
        let database_url = database_url.unwrap_or_else(|| super::db::sqlite_url(dir.path()));
        std::fs::write(
            &config,
            format!(
                "[database]\nurl = \"{database_url}\"\n\
                 [sip]\ndomain = \"portal.com\"\nlisten = [\"udp:127.0.0.1:{}\"]\n\
                 digest_algorithms = [\"MD5\"]\n{extra}\n\
                 [http]\nlisten = \"127.0.0.1:0\"\n",
                udp.unwrap_or(0)
            ),
        )
        .unwrap();
        Node {
            dir,
            config,
            database_url,
        }
    }

    /// Runs a command to completion; returns (success, stdout + stderr).
    pub async fn run(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("TOLLGATE_DATABASE_URL")
            .env_remove("TOLLGATE_KEY_ENCRYPTION_KEY")
            .kill_on_drop(true)
            .output()
            .await
            .expect("tollgate runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// User alice/secret and `service1@portal.com` served by `shop1` at `app_port`.
    pub async fn seed(&self, app_port: u16) {
        for args in [
            vec!["user", "add", "alice", "--password", "secret"],
            vec![
                "appserver",
                "add",
                "shop1",
                "--uri",
                &format!("sip:127.0.0.1:{app_port}"),
            ],
            vec![
                "service",
                "add",
                "service1@portal.com",
                "--appserver",
                "shop1",
            ],
        ] {
            let (ok, out) = self.run(&args).await;
            assert!(ok, "{args:?}: {out}");
        }
    }

    /// Starts `serve` and waits for its ready lines.
    pub async fn serve(&self) -> Served {
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .env_remove("TOLLGATE_DATABASE_URL")
            .env_remove("TOLLGATE_KEY_ENCRYPTION_KEY")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("serve starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut udp = None;
        let http = loop {
            let line = tokio::time::timeout(LIMIT, lines.next_line())
                .await
                .expect("ready in time")
                .unwrap()
                .expect("serve printed its ready lines");
            if let Some(addr) = line.strip_prefix("tollgate ready: sip udp ") {
                udp = Some(addr.parse().unwrap());
            }
            if let Some(addr) = line.strip_prefix("tollgate ready: http ") {
                break addr.parse().unwrap();
            }
        };
        // Keep reading whatever else it prints.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Served {
            child,
            udp: udp.expect("a UDP listener"),
            http,
        }
    }

    /// The node's database, opened by the test.
    pub async fn store(&self) -> Store {
        Store::connect(&self.database_url).await.unwrap()
    }
}

impl Served {
    /// kill -9, and waits until the process is gone.
    pub async fn kill_9(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }
}
