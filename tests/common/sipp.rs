//! Runs sipp (Debian package `sip-tester`) as the client or the application server.
//!
//! A missing sipp fails the test, in CI and on a laptop alike (`scripts/test.sh` installs it).

use super::relay::free_port;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// Fails the test when sipp is not installed (`scripts/test.sh` installs it).
pub fn require_sipp() {
    let found = std::process::Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "sipp is not installed: run scripts/test.sh (or apt-get install -y sip-tester)"
    );
}

pub fn scenario(name: &str) -> String {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "scenarios", name]
        .iter()
        .collect();
    path.display().to_string()
}

/// Transport flag of sipp: `u1` (UDP, one socket) or `t1` (TCP, one connection).
pub fn transport_flag(tcp: bool) -> &'static str {
    if tcp {
        "t1"
    } else {
        "u1"
    }
}

/// A sipp process.
pub struct Sipp {
    child: Child,
    pub port: u16,
    name: String,
    log_dir: tempfile::TempDir,
}

/// What a finished sipp run reports.
#[derive(Debug)]
pub struct SippRun {
    pub exit_code: Option<i32>,
    pub output: String,
    /// The whole `-trace_msg` log: every message sipp sent and received.
    pub messages: String,
}

impl SippRun {
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0)
    }
}

impl Sipp {
    /// sipp as an application server on 127.0.0.1:`port`, handling `calls` calls.
    pub fn uas(scenario_file: &str, port: u16, calls: u32, tcp: bool) -> Sipp {
        Self::uas_with(scenario_file, port, calls, tcp, &[])
    }

    /// Like [`Sipp::uas`], with more sipp arguments (`-set name value`, say).
    pub fn uas_with(scenario_file: &str, port: u16, calls: u32, tcp: bool, extra: &[&str]) -> Sipp {
        let calls = calls.to_string();
        let scenario = scenario(scenario_file);
        let mut args = vec![
            "-sf",
            scenario.as_str(),
            "-m",
            calls.as_str(),
            "-t",
            transport_flag(tcp),
            "-default_behaviors",
            "all,-abortunexp",
        ];
        args.extend_from_slice(extra);
        Self::spawn("uas", port, &args)
    }

    /// sipp as the client, calling `service1` through the relay at `relay`.
    pub fn uac(
        scenario_file: &str,
        relay: SocketAddr,
        calls: u32,
        rate: u32,
        tcp: bool,
        extra: &[&str],
    ) -> Sipp {
        Self::uac_for("service1", scenario_file, relay, calls, rate, tcp, extra)
    }

    /// sipp as the client, calling `service` (sipp's `[service]`) through the relay.
    pub fn uac_for(
        service: &str,
        scenario_file: &str,
        relay: SocketAddr,
        calls: u32,
        rate: u32,
        tcp: bool,
        extra: &[&str],
    ) -> Sipp {
        let port = free_port();
        let calls_s = calls.to_string();
        let rate_s = rate.to_string();
        let mut args = vec![
            relay.to_string(),
            "-sf".into(),
            scenario(scenario_file),
            "-m".into(),
            calls_s,
            "-r".into(),
            rate_s,
            "-t".into(),
            transport_flag(tcp).into(),
            "-s".into(),
            service.into(),
            "-recv_timeout".into(),
            "40000".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Self::spawn("uac", port, &refs)
    }

    fn spawn(name: &str, port: u16, args: &[&str]) -> Sipp {
        let log_dir = tempfile::tempdir().expect("tempdir");
        let child = Command::new("sipp")
            .args(args)
            .args([
                "-i",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-cp",
                &free_port().to_string(),
                "-mp",
                &free_port().to_string(),
                "-nostdin",
                "-trace_err",
                "-trace_msg",
                "-buff_size",
                "1048576",
            ])
            .current_dir(log_dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("sipp starts");
        Sipp {
            child,
            port,
            name: name.into(),
            log_dir,
        }
    }

    /// Waits for sipp to exit (at most `limit`), killing it when it does not.
    pub async fn finish(mut self, limit: Duration) -> SippRun {
        let status = tokio::time::timeout(limit, self.child.wait()).await;
        let exit_code = match status {
            Ok(Ok(s)) => s.code(),
            _ => {
                let _ = self.child.kill().await;
                None
            }
        };
        let mut output = String::new();
        let mut messages = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            use tokio::io::AsyncReadExt;
            let _ = out.read_to_string(&mut output).await;
        }
        if let Some(mut err) = self.child.stderr.take() {
            use tokio::io::AsyncReadExt;
            let _ = err.read_to_string(&mut output).await;
        }
        // The error and message logs explain a failure better than the screen.
        if let Ok(entries) = std::fs::read_dir(self.log_dir.path()) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.ends_with("_errors.log") || name.ends_with("_messages.log") {
                    let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                    if name.ends_with("_messages.log") {
                        messages.push_str(&text);
                    }
                    let tail: String = text
                        .chars()
                        .rev()
                        .take(6000)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    output.push_str(&format!("\n--- {} {name} (tail) ---\n{tail}", self.name));
                }
            }
        }
        SippRun {
            exit_code,
            output,
            messages,
        }
    }
}

/// The application-server URI of a sipp UAS on `port`.
pub fn uas_uri(port: u16, tcp: bool) -> String {
    if tcp {
        format!("sip:127.0.0.1:{port};transport=tcp")
    } else {
        format!("sip:127.0.0.1:{port}")
    }
}

/// Waits until a TCP listener accepts on `port` (sipp binds asynchronously).
pub async fn wait_for_tcp(port: u16) {
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("nothing listens on TCP port {port}");
}
