//! The `tollgate` command line: a thin layer over the library (anyhow lives only here).

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tollgate::client::Transport;
use tollgate::clock::SystemClock;
use tollgate::config::{Config, Protocol};
use tollgate::store::{ForkMode, SessionFilter, SessionState, Store};

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "A SIP relay that authenticates, routes and times sessions for application servers"
)]
struct Cli {
    /// Configuration file (default: ./tollgate.toml when present).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay.
    Serve {
        /// Seed a demo user alice/secret, an application server `demo-shop` and the service
        /// service1@<domain> (idempotent; never done without this flag).
        #[arg(long)]
        demo: bool,
    },
    /// Run everything to try Tollgate in a browser: the relay (SQLite in --data-dir), two
    /// reference shops, a demo user, two services, a tariff and an operator key.
    Demo {
        /// Where the demo database lives.
        #[arg(long, default_value = "tollgate-demo")]
        data_dir: PathBuf,
        /// The relay's HTTP address (browser client at /, console at /console).
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: std::net::SocketAddr,
        /// The relay's SIP UDP address.
        #[arg(long, default_value = "127.0.0.1:5060")]
        sip: std::net::SocketAddr,
        /// The relay's SIP-over-WebSocket address (the browser client's).
        #[arg(long, default_value = "127.0.0.1:5066")]
        ws: std::net::SocketAddr,
        /// The two shops' SIP and HTTP addresses.
        #[arg(long, num_args = 4, value_names = ["SIP1", "HTTP1", "SIP2", "HTTP2"],
              default_values = ["127.0.0.1:5091", "127.0.0.1:8091", "127.0.0.1:5092", "127.0.0.1:8092"])]
        shops: Vec<std::net::SocketAddr>,
    },
    /// Run the reference shop: an application server answering INVITEs, with a landing page
    /// that verifies session tokens and a catalogue that posts charges.
    Shop {
        /// The relay's HTTP base URL, e.g. http://127.0.0.1:8080
        #[arg(long)]
        relay_url: String,
        /// This shop's API key (printed by `tollgate appserver add`).
        #[arg(long, env = "TOLLGATE_SHOP_API_KEY")]
        api_key: String,
        /// The tokens' issuer, when the relay's public URL is not --relay-url.
        #[arg(long)]
        issuer: Option<String>,
        #[arg(long, default_value = "127.0.0.1:5090")]
        sip_listen: std::net::SocketAddr,
        #[arg(long, default_value = "127.0.0.1:8090")]
        http_listen: std::net::SocketAddr,
        /// The base URL browsers reach this shop at (default: http:// + the bound address).
        #[arg(long)]
        public_url: Option<String>,
        /// Sessions at once; one more is answered 486 Busy Here.
        #[arg(long, default_value_t = 10)]
        capacity: usize,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the REST API's OpenAPI document (the committed openapi/openapi.json).
    Openapi,
    /// Manage users.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Manage application servers.
    Appserver {
        #[command(subcommand)]
        action: AppServerAction,
    },
    /// Manage services.
    Service {
        #[command(subcommand)]
        action: ServiceAction,
    },
    /// Manage service tariffs (time billing).
    Tariff {
        #[command(subcommand)]
        action: TariffAction,
    },
    /// Print a user's statement (JSON, or CSV with --csv).
    Statement {
        /// The user's name or id.
        user: String,
        /// Start of the period, inclusive (RFC 3339, e.g. 2026-12-01T00:00:00Z).
        #[arg(long)]
        from: Option<String>,
        /// End of the period, exclusive (RFC 3339); now when absent.
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        csv: bool,
    },
    /// Manage the session-token signing keys.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Read sessions.
    Sessions {
        #[command(subcommand)]
        action: SessionsAction,
    },
    /// Call a service: INVITE with digest authentication, print the answer, ACK, hold, BYE.
    Call {
        /// The service to call, e.g. sip:service1@portal.com
        target: String,
        #[arg(long)]
        user: String,
        #[arg(long)]
        password: String,
        /// File sent as the INVITE body (.json → application/json, .xml → application/xml).
        #[arg(long)]
        body: Option<PathBuf>,
        /// Seconds to hold the session before sending BYE.
        #[arg(long, default_value_t = 0.0)]
        hold: f64,
        /// The relay to send through (default: the first SIP listener of the configuration).
        #[arg(long)]
        proxy: Option<String>,
        /// Use TCP instead of UDP.
        #[arg(long)]
        tcp: bool,
    },
}

#[derive(Subcommand)]
enum UserAction {
    /// Add a user (only the digest HA1 hashes are stored).
    Add {
        name: String,
        #[arg(long)]
        password: String,
    },
    /// List users.
    List,
}

#[derive(Subcommand)]
enum AppServerAction {
    /// Add an application server reached at a SIP URI; prints its REST API key, once.
    Add {
        name: String,
        #[arg(long)]
        uri: String,
        /// Print a JSON object with `id`, `name`, `uri` and `api_key`.
        #[arg(long)]
        json: bool,
    },
    /// List application servers.
    List,
}

#[derive(Subcommand)]
enum ServiceAction {
    /// Add a service NAME@DOMAIN delivered by one or more application servers.
    Add {
        name: String,
        #[arg(long = "appserver", required = true)]
        appservers: Vec<String>,
        /// How an INVITE forks to several application servers: `first` (in parallel, the
        /// first answer wins), `all` (in parallel, every answer reaches the caller) or
        /// `serial` (one after another, in the order given).
        #[arg(long = "fork", default_value = "first")]
        fork: String,
    },
    /// List services and their application servers.
    List,
}

#[derive(Subcommand)]
enum TariffAction {
    /// Set the tariff of a service NAME@DOMAIN: a new version for sessions confirmed from now.
    Set {
        service: String,
        /// ISO 4217 currency code, e.g. EUR.
        #[arg(long)]
        currency: String,
        /// Price per minute in minor units (cents).
        #[arg(long)]
        per_minute: i64,
        /// Set-up fee per session in minor units.
        #[arg(long, default_value_t = 0)]
        setup: i64,
        /// Billing increment in seconds.
        #[arg(long, default_value_t = 60)]
        increment: i32,
        /// Free seconds at the start of each session.
        #[arg(long, default_value_t = 0)]
        free: i32,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Promote the next key to current, retire the current one (still published for the grace
    /// period, so tokens it signed keep verifying) and generate a new next key.
    Rotate,
    /// Print a new key-encryption key (the base64 of 32 random bytes) for `[tokens]
    /// key_encryption_key` or TOLLGATE_KEY_ENCRYPTION_KEY; it reads no configuration.
    GenerateKek,
}

#[derive(Subcommand)]
enum SessionsAction {
    /// List sessions, newest first.
    List {
        #[arg(long)]
        json: bool,
        /// Only sessions in this state (trying, confirmed, terminated, failed, cancelled).
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(Cli::parse()).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<()> {
    if let Command::Openapi = cli.command {
        // Needs no configuration and no database: the document is generated from the code.
        print!("{}", tollgate::api::openapi_json());
        return Ok(());
    }
    if let Command::Keys {
        action: KeysAction::GenerateKek,
    } = cli.command
    {
        // Needs no configuration either: it only draws 32 random bytes.
        println!("{}", tollgate::tokens::KeyEncryptionKey::generate_base64());
        return Ok(());
    }
    let command = match cli.command {
        Command::Shop {
            relay_url,
            api_key,
            issuer,
            sip_listen,
            http_listen,
            public_url,
            capacity,
        } => {
            return run_shop(tollgate::shop::ShopConfig {
                relay_url,
                issuer,
                api_key,
                sip_listen,
                http_listen,
                public_url,
                capacity,
            })
            .await
        }
        other => other,
    };
    let config = Config::load(cli.config.as_deref())?;
    match command {
        Command::Demo {
            data_dir,
            http,
            sip,
            ws,
            shops,
        } => {
            let settings = tollgate::demo::DemoSettings {
                http,
                sip_udp: sip,
                sip_ws: ws,
                shops: [(shops[0], shops[1]), (shops[2], shops[3])],
            };
            demo(config, &data_dir, settings).await
        }
        Command::Shop { .. } => unreachable!("handled before the configuration is loaded"),
        Command::Serve { demo } => serve(config, demo).await,
        Command::Openapi => unreachable!("handled before the configuration is loaded"),
        Command::Keys {
            action: KeysAction::GenerateKek,
        } => unreachable!("handled before the configuration is loaded"),
        Command::Migrate => {
            Store::connect(&config.database.url).await?;
            println!("migrations applied to {}", config.database.url);
            Ok(())
        }
        Command::User { action } => {
            let store = Store::connect(&config.database.url).await?;
            match action {
                UserAction::Add { name, password } => {
                    store.add_user(&name, &config.sip.domain, &password).await?;
                    println!("user {name} added (realm {})", config.sip.domain);
                }
                UserAction::List => {
                    for u in store.list_users().await? {
                        println!("{}\t{}", u.name, u.realm);
                    }
                }
            }
            Ok(())
        }
        Command::Appserver { action } => {
            let store = Store::connect(&config.database.url).await?;
            match action {
                AppServerAction::Add { name, uri, json } => {
                    let (server, key) = store.add_app_server_with_key(&name, &uri).await?;
                    if json {
                        let out = serde_json::json!({
                            "id": server.id,
                            "name": server.name,
                            "uri": server.uri,
                            "api_key": key.expose(),
                        });
                        println!("{}", serde_json::to_string_pretty(&out)?);
                    } else {
                        println!("application server {name} added ({})", server.uri);
                        println!("id: {}", server.id);
                        println!("api key (shown once, store it now): {}", key.expose());
                    }
                }
                AppServerAction::List => {
                    for a in store.list_app_servers().await? {
                        println!("{}\t{}", a.name, a.uri);
                    }
                }
            }
            Ok(())
        }
        Command::Service { action } => {
            let store = Store::connect(&config.database.url).await?;
            match action {
                ServiceAction::Add {
                    name,
                    appservers,
                    fork,
                } => {
                    let mode: ForkMode = fork.parse()?;
                    store.add_service(&name, &appservers, mode).await?;
                    println!(
                        "service {name} added → {} ({})",
                        appservers.join(", "),
                        mode.as_str()
                    );
                }
                ServiceAction::List => {
                    for s in store.list_services().await? {
                        let servers: Vec<_> =
                            s.app_servers.iter().map(|a| a.name.as_str()).collect();
                        println!(
                            "{}\t{}\t{}",
                            s.address(),
                            servers.join(","),
                            s.fork_mode.as_str()
                        );
                    }
                }
            }
            Ok(())
        }
        Command::Tariff {
            action:
                TariffAction::Set {
                    service,
                    currency,
                    per_minute,
                    setup,
                    increment,
                    free,
                },
        } => {
            let store = Store::connect(&config.database.url).await?;
            let wanted = service.to_lowercase();
            let found = store
                .list_services()
                .await?
                .into_iter()
                .find(|s| s.address() == wanted)
                .with_context(|| format!("no service {service}"))?;
            let tariff = tollgate::billing::Tariff {
                currency,
                setup_amount: setup,
                per_minute_amount: per_minute,
                increment_secs: increment,
                free_secs: free,
            };
            if let Err((field, message)) = tariff.validate() {
                bail!("--{}: {message}", field.replace('_', "-"));
            }
            let now = tollgate::clock::Clock::now_ms(&SystemClock);
            let record = store.set_tariff(&found.id, &tariff, now).await?;
            println!(
                "tariff of {} set: {} {}/min, setup {}, increment {} s, {} s free (version {}, from {})",
                found.address(),
                tariff.currency,
                tariff.per_minute_amount,
                tariff.setup_amount,
                tariff.increment_secs,
                tariff.free_secs,
                record.id,
                tollgate::clock::rfc3339::format(record.effective_from)
            );
            Ok(())
        }
        Command::Statement {
            user,
            from,
            to,
            csv,
        } => {
            let store = Store::connect(&config.database.url).await?;
            let found = store
                .list_users()
                .await?
                .into_iter()
                .find(|u| u.name == user || u.id == user)
                .with_context(|| format!("no user {user}"))?;
            let parse = |flag: &str, v: Option<String>| -> Result<Option<i64>> {
                v.map(|t| {
                    tollgate::clock::rfc3339::parse(&t)
                        .map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
                })
                .transpose()
            };
            let now = tollgate::clock::Clock::now_ms(&SystemClock);
            let from = parse("from", from)?.unwrap_or(0);
            let to = parse("to", to)?.unwrap_or(now + 1);
            use tollgate::billing::statement::{write_statement, StatementFormat, StatementHead};
            let head = StatementHead {
                user_id: found.id,
                user: found.name,
                from,
                to,
            };
            let format = if csv {
                StatementFormat::Csv
            } else {
                StatementFormat::Json
            };
            write_statement(&store, head, format, StdoutSink).await?;
            if !csv {
                println!();
            }
            Ok(())
        }
        Command::Keys {
            action: KeysAction::Rotate,
        } => {
            let store = Store::connect(&config.database.url).await?;
            let token_config =
                tollgate::tokens::TokenConfig::from_config(&config, config.http.listen)?;
            let now = tollgate::clock::Clock::now_ms(&SystemClock);
            let report = tollgate::tokens::rotate(&store, &token_config, now).await?;
            println!("{report}");
            println!("running relays pick the new key up within a minute");
            Ok(())
        }
        Command::Sessions {
            action: SessionsAction::List { json, state, limit },
        } => {
            let store = Store::connect(&config.database.url).await?;
            let state = match state {
                Some(s) => Some(
                    s.parse::<SessionState>()
                        .map_err(|e| anyhow::anyhow!("--state: {e}"))?,
                ),
                None => None,
            };
            let sessions = store.list_sessions(SessionFilter { state, limit }).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&sessions)?);
            } else {
                println!(
                    "{:<36}  {:<10}  {:>6}  {:>10}  {:<12}  {:<24}  app server",
                    "id", "state", "status", "duration", "caller", "service"
                );
                for s in sessions {
                    let duration = s
                        .duration_ms
                        .map(|d| format!("{:.3}s", d as f64 / 1000.0))
                        .unwrap_or_default();
                    let status = s.final_status.map(|c| c.to_string()).unwrap_or_default();
                    println!(
                        "{:<36}  {:<10}  {:>6}  {:>10}  {:<12}  {:<24}  {}",
                        s.id,
                        s.state.as_str(),
                        status,
                        duration,
                        s.caller,
                        s.service,
                        s.app_server
                    );
                }
            }
            Ok(())
        }
        Command::Call {
            target,
            user,
            password,
            body,
            hold,
            proxy,
            tcp,
        } => {
            let protocol = if tcp { Protocol::Tcp } else { Protocol::Udp };
            let proxy = match proxy {
                Some(p) => tokio::net::lookup_host(&p)
                    .await
                    .with_context(|| format!("--proxy {p}"))?
                    .next()
                    .with_context(|| format!("--proxy {p}: no address"))?,
                None => {
                    let listen = config
                        .sip
                        .listen
                        .iter()
                        .find(|l| l.protocol == protocol)
                        .context(
                            "no SIP listener of that transport in the configuration; pass --proxy",
                        )?;
                    let mut addr = listen.addr;
                    if addr.ip().is_unspecified() {
                        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                    }
                    addr
                }
            };
            let body = match body {
                Some(path) => {
                    let bytes = std::fs::read(&path)
                        .with_context(|| format!("--body {}", path.display()))?;
                    let content_type = tollgate::client::content_type_for(&path);
                    Some((content_type.to_string(), bytes))
                }
                None => None,
            };
            if !(0.0..=86_400.0).contains(&hold) {
                bail!("--hold must be between 0 and 86400 seconds");
            }
            let options = tollgate::client::CallOptions {
                target,
                proxy,
                transport: if tcp { Transport::Tcp } else { Transport::Udp },
                user,
                password,
                body,
                hold: Duration::from_secs_f64(hold),
                local_ip: if proxy.ip().is_loopback() {
                    proxy.ip()
                } else {
                    std::net::Ipv4Addr::UNSPECIFIED.into()
                },
            };
            let mut out = std::io::stdout();
            tollgate::client::call(options, &mut out).await?;
            Ok(())
        }
    }
}

/// `tollgate shop`: runs until Ctrl-C.
async fn run_shop(config: tollgate::shop::ShopConfig) -> Result<()> {
    let shop = tollgate::shop::start(config, Arc::new(SystemClock)).await?;
    println!("shop {} ({}) ready", shop.name, shop.id);
    println!("  sip udp {}", shop.sip);
    println!("  landing URL {}", shop.landing_url);
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    eprintln!("shutting down");
    shop.shutdown().await;
    Ok(())
}

/// `tollgate demo`: runs until Ctrl-C.
async fn demo(
    config: Config,
    data_dir: &std::path::Path,
    settings: tollgate::demo::DemoSettings,
) -> Result<()> {
    use tollgate::demo::{DEMO_OPERATOR_KEY, DEMO_USER};
    tollgate::demo::prepare_dir(data_dir)?;
    let config = tollgate::demo::config(config, data_dir, &settings);
    let demo = tollgate::demo::start(&config, &settings, Arc::new(SystemClock)).await?;
    let operator_key = config
        .api
        .operator_key
        .as_ref()
        .map(|k| k.expose().to_owned())
        .unwrap_or_else(|| DEMO_OPERATOR_KEY.to_owned());
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "Tollgate demo is running (data in {})",
        data_dir.display()
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "  browser client  {}", demo.client_url());
    let _ = writeln!(
        out,
        "                  sign in as {} / {}",
        DEMO_USER.0, DEMO_USER.1
    );
    let _ = writeln!(out, "  console         {}", demo.console_url());
    let _ = writeln!(out, "                  operator key {operator_key}");
    let _ = writeln!(
        out,
        "  services        wine@{0} (wine-shop), books@{0} (both shops, all answers)",
        demo.domain
    );
    for shop in &demo.shops {
        let _ = writeln!(
            out,
            "  {:<15} http://{} (SIP {})",
            shop.name, shop.http, shop.sip
        );
    }
    for listen in &demo.relay.sip {
        let _ = writeln!(
            out,
            "tollgate ready: sip {} {}",
            listen.protocol, listen.addr
        );
    }
    let _ = writeln!(out, "tollgate ready: http {}", demo.relay.http);
    let _ = writeln!(out, "Press Ctrl-C to stop.");
    let _ = out.flush();
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    eprintln!("shutting down");
    demo.shutdown().await;
    Ok(())
}

async fn serve(config: Config, demo: bool) -> Result<()> {
    if demo {
        seed_demo(&config).await?;
    }
    let relay = tollgate::app::start(&config, Arc::new(SystemClock)).await?;
    // A closed stdout (a supervisor that stopped reading) must not take the relay down.
    let mut out = std::io::stdout();
    for listen in &relay.sip {
        let _ = writeln!(
            out,
            "tollgate ready: sip {} {}",
            listen.protocol, listen.addr
        );
    }
    let _ = writeln!(out, "tollgate ready: http {}", relay.http);
    let _ = out.flush();
    let mut relay = relay;
    let mut stop = StopSignals::install()?;
    stop.next().await;
    let drain = Duration::from_secs(config.sip.drain_secs);
    eprintln!(
        "stopping: new calls refused; {} live session(s) may finish within {} s (a second signal stops now)",
        relay.live_sessions(),
        drain.as_secs()
    );
    let left = tokio::select! {
        left = relay.drain(drain) => left,
        _ = stop.next() => relay.live_sessions(),
    };
    if left > 0 {
        eprintln!("{left} live session(s) left to the next start of this node");
    }
    relay.shutdown().await;
    Ok(())
}

/// SIGTERM (systemd, Kubernetes) and SIGINT (Ctrl-C), as one stream.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// The demo data: idempotent, so `serve --demo` can be run again on the same database.
async fn seed_demo(config: &Config) -> Result<()> {
    let store = Store::connect(&config.database.url).await?;
    let domain = &config.sip.domain;
    if !store.list_users().await?.iter().any(|u| u.name == "alice") {
        store.add_user("alice", domain, "secret").await?;
    }
    if !store
        .list_app_servers()
        .await?
        .iter()
        .any(|a| a.name == "demo-shop")
    {
        store
            .add_app_server("demo-shop", "sip:127.0.0.1:5090")
            .await?;
    }
    let service = format!("service1@{domain}");
    if !store
        .list_services()
        .await?
        .iter()
        .any(|s| s.address() == service)
    {
        store
            .add_service(&service, &["demo-shop".to_string()], ForkMode::FirstAnswer)
            .await?;
    }
    println!(
        "demo data: user alice/secret, service sip:{service} → demo-shop (sip:127.0.0.1:5090)"
    );
    Ok(())
}

/// A statement written to standard output as it is read.
struct StdoutSink;

impl tollgate::billing::statement::ChunkSink for StdoutSink {
    fn send(&mut self, chunk: Vec<u8>) -> Result<(), tollgate::store::StoreError> {
        use std::io::Write;
        std::io::stdout()
            .write_all(&chunk)
            .map_err(|e| tollgate::store::StoreError::internal(format!("standard output: {e}")))
    }
}
