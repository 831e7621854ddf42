//! The running server's shared state, and what happens at start: open the store, load the
//! keys, create the `admin` user on first start, check and load the flows.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use idflow_authenticators::PasswordHasher;
use idflow_dsl::{SourceFile, Syntax};
use idflow_engine::{Engine, Registry};

use crate::config::server::EMBEDDED_FLOWS;
use crate::config::{FlowsSource, ServerConfig};
use crate::keys::KeySet;
use crate::metrics::Metrics;
use crate::store::{AuditEvent, EmbeddedStore, Role, Store, User, Write};

/// Everything a request handler reads. Built once; shared behind an `Arc`.
pub struct App {
    /// The configuration, swapped whole by a reload; read it with [`App::config`].
    pub live_config: arc_swap::ArcSwap<ServerConfig>,
    /// This process among the nodes sharing a store (random at each start): reload
    /// announcements name it, so a node ignores its own.
    pub node: String,
    /// The store.
    pub store: Arc<dyn Store>,
    /// Signing keys.
    pub keys: KeySet,
    /// Runs flows.
    pub engine: Engine,
    /// The live flows.
    pub registry: Registry,
    /// argon2id with the configured parameters.
    pub passwords: PasswordHasher,
    /// Verifies passwords on a few threads with reused memory.
    pub password_pool: crate::hashing::PasswordPool,
    /// Login page templates.
    pub pages: crate::http::pages::Pages,
    /// Counters and latencies for `/metrics`.
    pub metrics: Metrics,
    /// Second factors: sealing key, WebAuthn relying party, mail.
    pub mfa: crate::mfa::Mfa,
    /// Limits on failed attempts per address and per user and address.
    pub throttle: crate::throttle::Throttle,
    /// The key and certificate idflow signs SAML messages with.
    pub saml: idflow_saml::Credential,
    /// Upstream OpenID Connect providers: HTTP client and discovered metadata.
    pub federation: std::sync::Arc<crate::federation::oidc::Oidc>,
}

impl App {
    /// The live configuration: cheap, and stable for as long as the caller holds it (a
    /// request that reads it twice should hold one).
    pub fn config(&self) -> Arc<ServerConfig> {
        self.live_config.load_full()
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The name of the built-in administrator, and of its role.
pub const ADMIN: &str = "admin";

/// What starting found, for the start-up message.
pub struct Started {
    /// The state.
    pub app: Arc<App>,
    /// The admin password, when this start created the admin user with a generated one.
    pub generated_admin_password: Option<String>,
}

/// Why the server could not start.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Opens the store in the configured data directory.
pub fn open_store(config: &ServerConfig) -> Result<Arc<dyn Store>, StartError> {
    if let Some(postgres) = &config.postgres {
        let store = crate::store::PostgresStore::open(&postgres.url.0, postgres.connections)
            .map_err(|e| StartError(e.to_string()))?;
        return Ok(Arc::new(store));
    }
    let store = EmbeddedStore::open_with_cache(&config.data_dir, config.store_cache_bytes)
        .map_err(|e| StartError(e.to_string()))?;
    Ok(Arc::new(store))
}

/// Builds the state: store, keys, admin user, flows.
pub fn start(config: ServerConfig, admin_password: Option<String>) -> Result<Started, StartError> {
    let store = open_store(&config)?;
    let passwords =
        PasswordHasher::new(config.password).map_err(|e| StartError(format!("[password]: {e}")))?;
    let now = now();
    let keep = config
        .tokens
        .access_token_seconds
        .max(config.tokens.id_token_seconds);
    let keys =
        KeySet::load_or_create(store.as_ref(), now, keep).map_err(|e| StartError(e.to_string()))?;
    let generated_admin_password = ensure_admin(store.as_ref(), &passwords, admin_password, now)?;
    let engine = Engine::new();
    let registry = Registry::new(engine.sandbox());
    load_flows(&registry, &config)?;
    keep_flow_versions(store.as_ref(), &registry).map_err(|e| StartError(e.to_string()))?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let password_pool = crate::hashing::PasswordPool::new(passwords.clone(), threads)
        .map_err(|e| StartError(format!("cannot start password threads: {e}")))?;
    let mut mfa = crate::mfa::Mfa::new(&config).map_err(StartError)?;
    // Limits on mail (codes, sign-ups) count across the nodes sharing the store.
    mfa.email_sends = crate::throttle::Counter::shared(&store);
    let throttle = crate::throttle::Throttle::shared(config.throttle.clone(), &store);
    let federation = crate::federation::oidc::Oidc::new().map_err(StartError)?;
    let saml_host = url::Url::parse(&config.issuer)
        .ok()
        .and_then(|u| u.host_str().map(String::from))
        .unwrap_or_else(|| "idflow".into());
    let saml = idflow_saml::Credential::load_or_create(
        &config.saml.key_file,
        &config.saml.certificate_file,
        &saml_host,
    )
    .map_err(|e| StartError(e.to_string()))?;
    let app = App {
        node: crate::crypto::random_token(12),
        saml,
        federation,
        mfa,
        throttle,
        live_config: arc_swap::ArcSwap::from_pointee(config),
        store,
        keys,
        engine,
        registry,
        passwords,
        password_pool,
        pages: crate::http::pages::Pages::new(),
        metrics: Metrics::default(),
    };
    Ok(Started {
        app: Arc::new(app),
        generated_admin_password,
    })
}

/// Reads the flow files and makes them the live flows; any error in any file is an error.
pub fn load_flows(registry: &Registry, config: &ServerConfig) -> Result<(), StartError> {
    let files = flow_files(config).map_err(StartError)?;
    registry
        .reload(&files, &config.names)
        .map(|_| ())
        .map_err(|error| StartError(render_reload_error(&error)))
}

/// The flow files a configuration names (the shipped ones when it names none).
pub fn flow_files(config: &ServerConfig) -> Result<Vec<SourceFile>, String> {
    match &config.flows {
        FlowsSource::Embedded => Ok(EMBEDDED_FLOWS
            .iter()
            .map(|(name, text)| SourceFile {
                name: format!("(embedded) flows/{name}"),
                text: (*text).to_string(),
                syntax: Syntax::Yaml,
            })
            .collect()),
        FlowsSource::Dir(dir) => {
            let collected = crate::sources::collect(std::slice::from_ref(dir))
                .map_err(|e| format!("flows: {e}"))?;
            if let Some(bad) = collected.unreadable.first() {
                return Err(format!("flows: {}: {}", bad.name, bad.diagnostic.message));
            }
            Ok(collected.files)
        }
    }
}

/// Why flows were refused, for a person: the errors of every file, one a line.
pub fn render_reload_error(error: &idflow_engine::registry::ReloadError) -> String {
    match error {
        idflow_engine::registry::ReloadError::Check(reports) => {
            let rendered: String = reports
                .iter()
                .flat_map(|r| {
                    r.diagnostics
                        .iter()
                        .filter(|d| d.is_error())
                        .map(move |d| format!("  {}: {} {}\n", r.name, d.code, d.message))
                })
                .collect();
            format!("the flows have errors (run `idflow flow check`):\n{rendered}")
        }
        idflow_engine::registry::ReloadError::Load(why) => format!("flows: {why}"),
    }
}

/// Creates the `admin` role and user if missing. Returns the password when it was generated.
pub fn ensure_admin(
    store: &dyn Store,
    passwords: &PasswordHasher,
    password: Option<String>,
    now: u64,
) -> Result<Option<String>, StartError> {
    let fail = |e: crate::store::StoreError| StartError(e.to_string());
    let mut batch = Vec::new();
    if store.role(ADMIN).map_err(fail)?.is_none() {
        batch.push(Write::PutRole(Role {
            name: ADMIN.into(),
            description: "Administers idflow: users, roles, flows, keys.".into(),
            privileges: vec!["*".into()],
            external_id: None,
        }));
    }
    let mut generated = None;
    if store.user_by_login(ADMIN).map_err(fail)?.is_none() {
        let password = match password {
            Some(password) => password,
            None => {
                let password = crate::crypto::random_token(15);
                generated = Some(password.clone());
                password
            }
        };
        let hash = passwords
            .hash(&password)
            .map_err(|e| StartError(format!("IDFLOW_ADMIN_PASSWORD: {e}")))?;
        let mut admin = User::new(crate::crypto::random_token(12), ADMIN.into(), now);
        admin.name = "Administrator".into();
        admin.password_hash = Some(hash);
        admin.roles = vec![ADMIN.into()];
        batch.push(Write::CreateUser(admin.clone()));
        batch.push(Write::Audit(AuditEvent {
            time: now,
            event: "user.create".into(),
            actor: "idflow".into(),
            subject: admin.id,
            ip: String::new(),
            detail: serde_json::json!({ "username": ADMIN, "bootstrap": true }),
        }));
    }
    store.commit(batch).map_err(fail)?;
    Ok(generated)
}

/// Stores the IR of every live flow version not stored yet (see [`Write::PutFlowVersion`]).
pub fn keep_flow_versions(
    store: &dyn Store,
    registry: &Registry,
) -> Result<(), crate::store::StoreError> {
    let mut batch = Vec::new();
    for flow in registry.snapshot().flows.values() {
        if store.flow_version(&flow.version)?.is_none() {
            let ir = serde_json::to_string(&flow.ir)
                .map_err(|e| crate::store::StoreError::Failed(e.to_string()))?;
            batch.push(Write::PutFlowVersion {
                version: flow.version.clone(),
                ir,
            });
        }
    }
    store.commit(batch)
}

/// The flow of `version`: live or retained in the registry, else loaded from its stored IR
/// (a login that started before a restart, or on another node, after the files changed).
pub fn flow_version(app: &App, version: &str) -> Option<Arc<idflow_engine::LoadedFlow>> {
    if let Some(flow) = app.registry.snapshot().version(version) {
        return Some(flow);
    }
    let ir = match app.store.flow_version(version) {
        Ok(Some(ir)) => ir,
        Ok(None) => return None,
        Err(error) => {
            tracing::error!(%error, version, "cannot read a stored flow version");
            return None;
        }
    };
    let ir: idflow_dsl::FlowIr = match serde_json::from_str(&ir) {
        Ok(ir) => ir,
        Err(error) => {
            tracing::error!(%error, version, "stored flow version does not parse");
            return None;
        }
    };
    match app.registry.load_version(version, ir) {
        Ok(flow) => Some(flow),
        Err(error) => {
            tracing::error!(%error, version, "stored flow version does not load");
            None
        }
    }
}
