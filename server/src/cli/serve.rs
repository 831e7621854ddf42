//! `idflow serve`: the identity server.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::{EXIT_OK, EXIT_USAGE};
use crate::app::{self, App};
use crate::config::{Overrides, server};

/// Flags of `idflow serve`; each also reads an `IDFLOW_*` environment variable.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration and data directory.
    #[command(flatten)]
    pub location: Location,
    /// Address and port to listen on (default 127.0.0.1:8080).
    #[arg(long, env = "IDFLOW_LISTEN")]
    pub listen: Option<String>,
    /// The issuer URL tokens carry (default http://localhost:8080).
    #[arg(long, env = "IDFLOW_ISSUER")]
    pub issuer: Option<String>,
    /// Directory of flow files (default: the configuration's, else the shipped flows).
    #[arg(long, env = "IDFLOW_FLOWS")]
    pub flows: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, env = "IDFLOW_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Reload when the configuration file or a flow file changes (checked every second, after
    /// the files have stopped changing).
    #[arg(long)]
    pub watch: bool,
}

/// Where the configuration and data are: shared by every command that opens the store.
#[derive(Debug, Args)]
pub struct Location {
    /// The configuration file (default: ./idflow.toml if present, else the embedded quickstart).
    #[arg(long, env = "IDFLOW_CONFIG")]
    pub config: Option<PathBuf>,
    /// The data directory (default ./idflow-data).
    #[arg(long, env = "IDFLOW_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

impl Location {
    /// Loads the configuration and opens the store of its data directory: what every command
    /// that works on a stopped server's data does first. Prints the error and returns the exit
    /// code on failure.
    pub fn open_store(
        &self,
    ) -> Result<
        (
            crate::config::ServerConfig,
            std::sync::Arc<dyn crate::store::Store>,
        ),
        u8,
    > {
        let config = self.load(Overrides::default())?;
        let store = crate::app::open_store(&config).map_err(|e| {
            eprintln!("error: {e}");
            EXIT_USAGE
        })?;
        Ok((config, store))
    }

    /// Loads the configuration with these flags and `extra` overrides.
    pub fn load(&self, mut extra: Overrides) -> Result<crate::config::ServerConfig, u8> {
        extra.data_dir = self.data_dir.clone();
        server::load(self.config.as_deref(), &extra).map_err(|e| {
            eprintln!("error: {e}");
            EXIT_USAGE
        })
    }
}

fn init_logs(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("IDFLOW_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Runs the server until interrupted.
pub fn run(args: ServeArgs) -> u8 {
    let overrides = Overrides {
        listen: args.listen,
        issuer: args.issuer,
        data_dir: None,
        flows: args.flows,
        log_format: args.log_format,
    };
    let config = match args.location.load(overrides) {
        Ok(config) => config,
        Err(code) => return code,
    };
    init_logs(config.log_json);
    let tls = match config.tls.as_ref().map(crate::tls::acceptor).transpose() {
        Ok(tls) => tls,
        Err(error) => {
            eprintln!("error: {error}");
            return EXIT_USAGE;
        }
    };
    let admin_password = std::env::var("IDFLOW_ADMIN_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty());
    let started = match app::start(config, admin_password) {
        Ok(started) => started,
        Err(error) => {
            eprintln!("error: {error}");
            return EXIT_USAGE;
        }
    };
    if let Some(password) = &started.generated_admin_password {
        eprintln!(
            "idflow: created the user `admin` with the password\n\n    {password}\n\n\
             It is shown this once. Change it with `idflow user set-password admin`."
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return EXIT_USAGE;
        }
    };
    runtime.block_on(serve(started.app, tls, args.watch))
}

async fn serve(app: Arc<App>, tls: Option<tokio_rustls::TlsAcceptor>, watch: bool) -> u8 {
    // Taken over before the server listens: a SIGHUP from then on reloads, never kills.
    #[cfg(unix)]
    let hangups =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).map_err(|e| {
            tracing::warn!(error = %e, "cannot listen for SIGHUP");
        });
    let listener = match tokio::net::TcpListener::bind(app.config().listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("error: cannot listen on {}: {error}", app.config().listen);
            return EXIT_USAGE;
        }
    };
    let address = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%address, scheme, issuer = %app.config().issuer, data_dir = %app.config().data_dir.display(), "idflow listening");
    eprintln!(
        "idflow: listening on {scheme}://{address}, issuer {}",
        app.config().issuer
    );
    tokio::spawn(purge_expired(Arc::clone(&app)));
    tokio::spawn(crate::provisioning::worker::run(Arc::clone(&app)));
    #[cfg(unix)]
    if let Ok(hangups) = hangups {
        tokio::spawn(reload_on_hangup(Arc::clone(&app), hangups));
    }
    if watch {
        tokio::spawn(reload_on_change(Arc::clone(&app)));
    }
    follow_other_nodes(&app);
    let service =
        crate::http::router(app).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let served = match tls {
        None => {
            axum::serve(listener, service)
                .with_graceful_shutdown(shutdown())
                .await
        }
        Some(acceptor) => {
            let listener = match crate::tls::TlsListener::new(listener, acceptor) {
                Ok(listener) => listener,
                Err(error) => {
                    eprintln!("error: {error}");
                    return EXIT_USAGE;
                }
            };
            // `tap_io` adapts any listener to axum's connect-info support.
            use axum::serve::ListenerExt;
            axum::serve(listener.tap_io(|_| {}), service)
                .with_graceful_shutdown(shutdown())
                .await
        }
    };
    match served {
        Ok(()) => EXIT_OK,
        Err(error) => {
            eprintln!("error: {error}");
            EXIT_USAGE
        }
    }
}

/// Reloads whenever another node sharing the store announces that it reloaded (a PostgreSQL
/// store: several nodes), so that a reload on one node reaches them all.
fn follow_other_nodes(app: &Arc<App>) {
    let follower = Arc::clone(app);
    let heard = move |from: &str| {
        if from == follower.node {
            return;
        }
        let outcome = crate::reload::reload_announced(&follower);
        let detail = match &outcome {
            Ok(done) => {
                serde_json::json!({ "by": "another node", "node": from, "generation": done.generation })
            }
            Err(error) => serde_json::json!({ "by": "another node", "node": from,
                "refused": error.lines().next().unwrap_or_default() }),
        };
        audit_reload(&follower, detail);
        match outcome {
            Ok(done) => tracing::info!(
                node = from,
                generation = done.generation,
                "configuration reloaded after another node's reload"
            ),
            Err(error) => {
                tracing::warn!(node = from, %error, "another node reloaded, but this node's files do not check; the live configuration stays")
            }
        }
    };
    if let Err(error) = app.store.on_reload_announced(Box::new(heard)) {
        tracing::error!(%error, "cannot follow the other nodes' reloads");
    }
}

/// Records a reload the process made itself (`detail` says why and how it ended).
fn audit_reload(app: &App, detail: serde_json::Value) {
    let entry = crate::store::Write::Audit(crate::store::AuditEvent {
        time: app::now(),
        event: "config.reload".into(),
        actor: "idflow".into(),
        subject: String::new(),
        ip: String::new(),
        detail,
    });
    if let Err(error) = app.store.commit(vec![entry]) {
        tracing::error!(%error, "cannot audit a reload");
    }
}

/// Reloads (off the async workers) and logs the outcome: what `SIGHUP` and `--watch` do.
async fn reload_and_log(app: &Arc<App>, why: &'static str) {
    let worker = Arc::clone(app);
    let outcome = tokio::task::spawn_blocking(move || crate::reload::reload(&worker)).await;
    let detail = match &outcome {
        Ok(Ok(done)) => serde_json::json!({ "by": why, "generation": done.generation }),
        Ok(Err(error)) => {
            serde_json::json!({ "by": why, "refused": error.lines().next().unwrap_or_default() })
        }
        Err(_) => serde_json::json!({ "by": why, "refused": "the reload task failed" }),
    };
    audit_reload(app, detail);
    match outcome {
        Ok(Ok(done)) => {
            tracing::info!(why, generation = done.generation, changes = %done.render().trim_end(), "configuration reloaded");
        }
        Ok(Err(error)) => {
            tracing::warn!(why, %error, "reload refused; the live configuration stays");
        }
        Err(error) => tracing::error!(%error, "reload task failed"),
    }
}

/// `SIGHUP` reloads, as `idflow reload` does.
#[cfg(unix)]
async fn reload_on_hangup(app: Arc<App>, mut hangups: tokio::signal::unix::Signal) {
    while hangups.recv().await.is_some() {
        reload_and_log(&app, "SIGHUP").await;
    }
}

/// `serve --watch`: reloads when the configuration file or a file under the flows directory
/// changes, once the files have been still for a second (an editor's save is several writes).
/// Polls modification times rather than using inotify: it works the same on every file system,
/// container mounts included, and a second's delay is nothing for a reload.
async fn reload_on_change(app: Arc<App>) {
    let fingerprint = |app: &Arc<App>| {
        let config = app.config();
        let mut paths = Vec::new();
        if let crate::config::server::ConfigSource::File(path) = &config.source {
            paths.push(path.clone());
        }
        if let crate::config::server::FlowsSource::Dir(dir) = &config.flows {
            paths.push(dir.clone());
        }
        tokio::task::spawn_blocking(move || crate::sources::fingerprint(&paths))
    };
    let mut seen = fingerprint(&app).await.unwrap_or_default();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = fingerprint(&app).await.unwrap_or_default();
        if now == seen {
            continue;
        }
        // Changed: wait until it stops changing.
        let mut settled = now;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let again = fingerprint(&app).await.unwrap_or_default();
            if again == settled {
                break;
            }
            settled = again;
        }
        seen = settled;
        reload_and_log(&app, "a watched file changed").await;
    }
}

/// Deletes expired sessions, logins, codes and tokens once a minute.
async fn purge_expired(app: Arc<App>) {
    let mut interval = tokio::time::interval(Duration::from_secs(60));
    loop {
        interval.tick().await;
        let store = Arc::clone(&app.store);
        match tokio::task::spawn_blocking(move || store.purge_expired(app::now())).await {
            Ok(Ok(removed)) if removed > 0 => tracing::debug!(removed, "purged expired records"),
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::error!(%error, "purging expired records failed"),
            Err(error) => tracing::error!(%error, "purge task failed"),
        }
    }
}

async fn shutdown() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
