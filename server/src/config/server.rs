//! The server's configuration: `[server]`, `[tokens]`, `[password]`, `[log]`, `[store]` and the
//! OAuth side of `[applications.<id>]`, read from `idflow.toml`, then overridden by flags and
//! `IDFLOW_*` environment variables (clap reads both; see `cli::serve`).
//!
//! Every table rejects unknown keys, so a typo is an error naming the key and its line rather
//! than a setting silently ignored. Values that parse but make no sense (a relative redirect URI,
//! a public client with a secret) are errors with the line of the value.
//!
//! Relative paths in a file are relative to that file's directory (resolved through symlinks);
//! defaults and flags are relative to the current directory.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use idflow_authenticators::PasswordPolicy;
use serde::Deserialize;
use toml::Spanned;

use super::mfa::{EmailSettings, MfaSettings, ThrottleSettings};
use super::names::{ConfigError, parse_names};

/// The quickstart configuration, compiled in: what `idflow serve` runs on when no file is named
/// and none is in the current directory.
pub const EMBEDDED_CONFIG: &str = include_str!("../../../examples/quickstart/idflow.toml");

/// The shipped flows, compiled in for the embedded default (file name, text).
pub const EMBEDDED_FLOWS: &[(&str, &str)] = &[
    (
        "federated-jit.yaml",
        include_str!("../../../flows/federated-jit.yaml"),
    ),
    (
        "identifier-first-routing.yaml",
        include_str!("../../../flows/identifier-first-routing.yaml"),
    ),
    (
        "mfa-for-admins.yaml",
        include_str!("../../../flows/mfa-for-admins.yaml"),
    ),
    (
        "password-totp.yaml",
        include_str!("../../../flows/password-totp.yaml"),
    ),
    (
        "password.yaml",
        include_str!("../../../flows/password.yaml"),
    ),
    (
        "passwordless-passkey.yaml",
        include_str!("../../../flows/passwordless-passkey.yaml"),
    ),
    (
        "risk-adaptive.yaml",
        include_str!("../../../flows/risk-adaptive.yaml"),
    ),
];

/// Where the configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A file (canonical path).
    File(PathBuf),
    /// The compiled-in quickstart configuration.
    Embedded,
}

/// Where the flows come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowsSource {
    /// A directory of flow files.
    Dir(PathBuf),
    /// The compiled-in shipped flows.
    Embedded,
}

/// Values from flags or the environment; each replaces the file's value when present.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Listen address.
    pub listen: Option<String>,
    /// Issuer URL.
    pub issuer: Option<String>,
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// Flows directory.
    pub flows: Option<PathBuf>,
    /// Log format (`text` or `json`).
    pub log_format: Option<String>,
}

/// Everything `idflow serve` needs, validated.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where this came from.
    pub source: ConfigSource,
    /// The flags and environment it was read with (a reload reads the file with them again).
    pub overrides: Overrides,
    /// The socket to listen on.
    pub listen: SocketAddr,
    /// The issuer URL, without a trailing slash.
    pub issuer: String,
    /// Whether the issuer is `https` (cookies are then `Secure`).
    pub secure_cookies: bool,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The embedded store's page cache, in bytes (`[store] cache_mib`, default 128).
    pub store_cache_bytes: usize,
    /// The PostgreSQL store to use instead of the embedded one (`[store] kind = "postgres"`).
    pub postgres: Option<PostgresSettings>,
    /// The flows.
    pub flows: FlowsSource,
    /// Native TLS, when configured.
    pub tls: Option<TlsFiles>,
    /// Token and session lifetimes and algorithms.
    pub tokens: TokenSettings,
    /// argon2id parameters.
    pub password: PasswordPolicy,
    /// Second factors: the sealing key, TOTP issuer, email codes.
    pub mfa: MfaSettings,
    /// How mail is sent.
    pub email: EmailSettings,
    /// Limits on failed attempts per address and per user and address.
    pub throttle: ThrottleSettings,
    /// Upstream identity providers, by name.
    pub identity_providers: BTreeMap<String, super::federation::Upstream>,
    /// idflow's SAML credential files and time limits.
    pub saml: super::saml::SamlSettings,
    /// SAML service providers, by application name.
    pub service_providers: BTreeMap<String, super::saml::ServiceProvider>,
    /// Where users are provisioned to, by name.
    pub provisioning_targets: Vec<super::provisioning::Target>,
    /// `text` or `json` logs.
    pub log_json: bool,
    /// OAuth clients by client id (the application id).
    pub applications: BTreeMap<String, Application>,
    /// Origins of public clients, allowed to call the token endpoints from a browser.
    pub cors_origins: std::collections::BTreeSet<String>,
    /// The names flows may refer to (checked with the flows at start and reload).
    pub names: idflow_dsl::Names,
}

/// Certificate and key files for native TLS.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Lifetimes, in seconds, and signing algorithms (`[tokens]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenSettings {
    /// Access tokens. Default 300.
    pub access_token_seconds: u64,
    /// ID tokens. Default 300.
    pub id_token_seconds: u64,
    /// Refresh tokens (absolute, from the login). Default 30 days.
    pub refresh_token_seconds: u64,
    /// Authorization codes. Default 60.
    pub code_seconds: u64,
    /// Browser sessions (SSO). Default 10 hours.
    pub session_seconds: u64,
    /// A login in progress. Default 30 minutes.
    pub login_seconds: u64,

    /// `RS256` or `ES256` for access tokens. Default `ES256`: 15x cheaper to sign.
    pub access_token_alg: String,
    /// Whether a refresh also returns a new ID token (OpenID Connect Core 12.2 makes it
    /// optional). Default false: an RS256 signature is most of a refresh's cost.
    pub id_token_on_refresh: bool,
}

impl Default for TokenSettings {
    fn default() -> Self {
        TokenSettings {
            access_token_seconds: 300,
            id_token_seconds: 300,
            refresh_token_seconds: 30 * 24 * 3600,
            code_seconds: 60,
            session_seconds: 10 * 3600,
            login_seconds: 1800,

            access_token_alg: "ES256".into(),
            id_token_on_refresh: false,
        }
    }
}

/// OAuth 2.0 grant types a client may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantType {
    /// `authorization_code`.
    AuthorizationCode,
    /// `refresh_token`.
    RefreshToken,
    /// `client_credentials`.
    ClientCredentials,
}

/// An application as an OAuth 2.0 / OpenID Connect client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    /// The client id (the application id).
    pub client_id: String,
    /// A display name for login pages.
    pub name: String,
    /// The secret of a confidential client.
    pub secret: Option<String>,
    /// Public clients (browser or native apps) have no secret and must use PKCE.
    pub public: bool,
    /// Exact redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Exact URIs RP-initiated logout may return to.
    pub post_logout_redirect_uris: Vec<String>,
    /// Grants allowed.
    pub grant_types: Vec<GrantType>,
    /// API scopes the client may request with client_credentials (OpenID scopes need a user).
    pub scopes: Vec<String>,
}

impl Application {
    /// Whether the client may use `grant`.
    pub fn allows(&self, grant: GrantType) -> bool {
        self.grant_types.contains(&grant)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    tokens: TokenSettings,
    #[serde(default)]
    password: PasswordPolicy,
    #[serde(default)]
    log: LogSection,
    #[serde(default)]
    store: StoreField,
    #[serde(default)]
    mfa: MfaSettings,
    #[serde(default)]
    email: EmailSettings,
    #[serde(default)]
    throttle: ThrottleSettings,
    #[serde(default)]
    applications: BTreeMap<String, ApplicationSection>,
    // `names` reads the verified attributes; `federation` how to reach each provider.
    #[serde(default)]
    identity_providers: toml::Table,
    #[serde(default)]
    saml: super::saml::SamlSection,
    #[serde(default)]
    service_providers: toml::Table,
    #[serde(default)]
    provisioning_targets: toml::Table,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    listen: Option<Spanned<String>>,
    issuer: Option<Spanned<String>>,
    data_dir: Option<PathBuf>,
    flows: Option<PathBuf>,
    tls: Option<TlsFiles>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogSection {
    format: Option<Spanned<String>>,
}

/// `store = "postgres://..."` (short for `[store] kind = "postgres"` with that `url`) or a
/// `[store]` table.
#[derive(Debug, Default)]
struct StoreField(StoreSection);

impl<'de> Deserialize<'de> for StoreField {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Either;
        impl<'de> serde::de::Visitor<'de> for Either {
            type Value = StoreField;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a postgres:// URL or a [store] table")
            }
            fn visit_str<E: serde::de::Error>(self, url: &str) -> Result<StoreField, E> {
                Ok(StoreField(StoreSection {
                    kind: Some(Spanned::new(0..0, "postgres".to_string())),
                    url: Some(Spanned::new(0..0, url.to_string())),
                    ..StoreSection::default()
                }))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<StoreField, A::Error> {
                StoreSection::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(StoreField)
            }
        }
        deserializer.deserialize_any(Either)
    }
}

impl StoreField {
    /// The table form of either.
    fn section(&self) -> StoreSection {
        self.0.clone()
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreSection {
    kind: Option<Spanned<String>>,
    cache_mib: Option<usize>,
    url: Option<Spanned<String>>,
    url_env: Option<Spanned<String>>,
    connections: Option<usize>,
}

/// Where the PostgreSQL store is (`[store] kind = "postgres"`).
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresSettings {
    /// The connection URL (`postgres://user:password@host:port/db`); it may hold a password,
    /// so it is never printed.
    pub url: super::federation::Secret,
    /// Connections each node keeps open.
    pub connections: usize,
}

impl std::fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSettings")
            .field("url", &self.url)
            .field("connections", &self.connections)
            .finish()
    }
}

/// The PostgreSQL settings of `[store]`, when it names PostgreSQL; `kind` is `embedded` (the
/// default) or `postgres`.
fn postgres_settings(
    section: &StoreSection,
    at: &dyn Fn(std::ops::Range<usize>, String) -> ConfigError,
) -> Result<Option<PostgresSettings>, ConfigError> {
    let kind = section.kind.as_ref();
    match kind.map(|k| k.get_ref().as_str()) {
        None | Some("embedded") => {
            for (given, name) in [
                (section.url.as_ref().map(Spanned::span), "url"),
                (section.url_env.as_ref().map(Spanned::span), "url_env"),
            ] {
                if let Some(span) = given {
                    return Err(at(
                        span,
                        format!("store.{name}: only for `kind = \"postgres\"`"),
                    ));
                }
            }
            return Ok(None);
        }
        Some("postgres") => {}
        Some(other) => {
            return Err(at(
                kind.map(Spanned::span).unwrap_or_default(),
                format!(
                    "store.kind: `{other}` is not available; use `embedded` (redb) or `postgres`"
                ),
            ));
        }
    }
    let url = match (&section.url, &section.url_env) {
        (Some(url), None) => url.get_ref().clone(),
        (None, Some(variable)) => std::env::var(variable.get_ref()).map_err(|_| {
            at(
                variable.span(),
                format!(
                    "store.url_env: the environment variable `{}` is not set",
                    variable.get_ref()
                ),
            )
        })?,
        (Some(url), Some(_)) => {
            return Err(at(
                url.span(),
                "store: give url or url_env, not both".into(),
            ));
        }
        (None, None) => {
            return Err(ConfigError(
                "store: `kind = \"postgres\"` needs url or url_env (postgres://user:password@host/db)"
                    .into(),
            ));
        }
    };
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        // Not echoed: it may hold a password.
        return Err(ConfigError(
            "store.url: not a postgres:// or postgresql:// URL".into(),
        ));
    }
    let connections = section
        .connections
        .unwrap_or(crate::store::postgres::DEFAULT_CONNECTIONS);
    if !(1..=256).contains(&connections) {
        return Err(ConfigError(format!(
            "store.connections: {connections} is not between 1 and 256"
        )));
    }
    Ok(Some(PostgresSettings {
        url: super::federation::Secret(url),
        connections,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplicationSection {
    name: Option<String>,
    client_secret: Option<Spanned<String>>,
    /// The name of an environment variable holding the secret (keeps it out of the file).
    client_secret_env: Option<Spanned<String>>,
    #[serde(default)]
    public: bool,
    #[serde(default)]
    redirect_uris: Vec<Spanned<String>>,
    #[serde(default)]
    post_logout_redirect_uris: Vec<Spanned<String>>,
    grant_types: Option<Vec<GrantType>>,
    #[serde(default)]
    scopes: Vec<String>,
}

/// The admin console's client id: a public client (PKCE) whose only redirect is the console
/// and whose only API scope is `admin`.
pub const CONSOLE_CLIENT: &str = "idflow-console";

/// A TOML error as line and message, without the source line toml quotes: that line may hold
/// a secret, and this message reaches logs and `idflow reload`'s output.
fn syntax_error(label: &str, text: &str, error: &toml::de::Error) -> ConfigError {
    let line = error
        .span()
        .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
    let message = error.message().trim_end();
    match line {
        Some(line) => ConfigError(format!("{label}:{line}: {message}")),
        None => ConfigError(format!("{label}: {message}")),
    }
}

/// The built-in console client for `issuer` (see [`CONSOLE_CLIENT`]).
pub fn console_client(issuer: &str) -> Application {
    Application {
        client_id: CONSOLE_CLIENT.into(),
        name: "idflow console".into(),
        secret: None,
        public: true,
        redirect_uris: vec![format!("{issuer}/console/")],
        post_logout_redirect_uris: vec![format!("{issuer}/console/")],
        grant_types: vec![GrantType::AuthorizationCode],
        scopes: vec!["admin".into()],
    }
}

/// The longest lifetime accepted for any token, code or session (ten years).
pub const MAX_LIFETIME_SECONDS: u64 = 10 * 365 * 24 * 3600;

/// The default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The default issuer.
pub const DEFAULT_ISSUER: &str = "http://localhost:8080";
/// The default data directory.
pub const DEFAULT_DATA_DIR: &str = "idflow-data";

/// Reads the configuration: `path` if given, else `idflow.toml` in the current directory if
/// there is one, else the embedded quickstart; then applies `overrides`.
pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<ServerConfig, ConfigError> {
    let discovered = Path::new(super::DEFAULT_CONFIG);
    let path = path.or_else(|| discovered.is_file().then_some(discovered));
    match path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
            let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
            parse(&text, ConfigSource::File(canonical), overrides)
        }
        None => parse(EMBEDDED_CONFIG, ConfigSource::Embedded, overrides),
    }
}

/// Parses and validates configuration text.
pub fn parse(
    text: &str,
    source: ConfigSource,
    overrides: &Overrides,
) -> Result<ServerConfig, ConfigError> {
    let label = match &source {
        ConfigSource::File(path) => path.display().to_string(),
        ConfigSource::Embedded => "embedded quickstart configuration".to_string(),
    };
    let at = |span: std::ops::Range<usize>, message: String| {
        let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
        ConfigError(format!("{label}:{line}: {message}"))
    };
    let file: File = toml::from_str(text).map_err(|e| syntax_error(&label, text, &e))?;
    let names = parse_names(text).map_err(|e| ConfigError(format!("{label}: {e}")))?;
    let base = match &source {
        ConfigSource::File(path) => path.parent().map(Path::to_path_buf),
        ConfigSource::Embedded => None,
    };
    let relative = |p: PathBuf| match &base {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p,
    };

    let listen = match (&overrides.listen, &file.server.listen) {
        (Some(value), _) => {
            parse_listen(value).map_err(|e| ConfigError(format!("--listen: {e}")))?
        }
        (None, Some(value)) => parse_listen(value.get_ref())
            .map_err(|e| at(value.span(), format!("server.listen: {e}")))?,
        (None, None) => parse_listen(DEFAULT_LISTEN).map_err(ConfigError)?,
    };
    let issuer = match (&overrides.issuer, &file.server.issuer) {
        (Some(value), _) => {
            parse_issuer(value).map_err(|e| ConfigError(format!("--issuer: {e}")))?
        }
        (None, Some(value)) => parse_issuer(value.get_ref())
            .map_err(|e| at(value.span(), format!("server.issuer: {e}")))?,
        (None, None) => DEFAULT_ISSUER.to_string(),
    };
    let data_dir = overrides
        .data_dir
        .clone()
        .or_else(|| file.server.data_dir.clone().map(relative))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    // The embedded configuration's `flows` path points into the repository it came from; the
    // binary carries those flows itself.
    let flows = match (&overrides.flows, &source, &file.server.flows) {
        (Some(dir), _, _) => FlowsSource::Dir(dir.clone()),
        (None, ConfigSource::Embedded, _) => FlowsSource::Embedded,
        (None, ConfigSource::File(_), Some(dir)) => FlowsSource::Dir(relative(dir.clone())),
        (None, ConfigSource::File(_), None) => FlowsSource::Dir(relative(PathBuf::from("flows"))),
    };
    let log_json = match (&overrides.log_format, &file.log.format) {
        (Some(value), _) => {
            parse_log_format(value).map_err(|e| ConfigError(format!("--log-format: {e}")))?
        }
        (None, Some(value)) => parse_log_format(value.get_ref())
            .map_err(|e| at(value.span(), format!("log.format: {e}")))?,
        (None, None) => false,
    };
    let store = file.store.section();
    let postgres = postgres_settings(&store, &at)?;
    let alg = &file.tokens.access_token_alg;
    if alg != "RS256" && alg != "ES256" {
        return Err(ConfigError(format!(
            "{label}: tokens.access_token_alg: `{alg}` is not supported; use RS256 or ES256"
        )));
    }
    let tokens = &file.tokens;
    for (key, seconds) in [
        ("access_token_seconds", tokens.access_token_seconds),
        ("id_token_seconds", tokens.id_token_seconds),
        ("refresh_token_seconds", tokens.refresh_token_seconds),
        ("code_seconds", tokens.code_seconds),
        ("session_seconds", tokens.session_seconds),
        ("login_seconds", tokens.login_seconds),
    ] {
        if !(1..=MAX_LIFETIME_SECONDS).contains(&seconds) {
            return Err(ConfigError(format!(
                "{label}: tokens.{key}: {seconds} is outside 1..={MAX_LIFETIME_SECONDS} seconds"
            )));
        }
    }
    let mut applications = BTreeMap::new();
    for (id, section) in file.applications {
        let app = application(&id, section, &at)?;
        applications.insert(id, app);
    }
    // The console signs administrators in like any application; a configuration may declare
    // it itself (another redirect URI, say), else it is this public client.
    applications
        .entry(CONSOLE_CLIENT.to_string())
        .or_insert_with(|| console_client(&issuer));
    let saml = file
        .saml
        .clone()
        .settings(&data_dir, &relative)
        .map_err(|e| ConfigError(format!("{label}: {e}")))?;
    let service_providers =
        super::saml::parse_service_providers(&file.service_providers, &relative)
            .map_err(|e| ConfigError(format!("{label}: {e}")))?;
    // One namespace of applications: flows' `applies_to` names either kind.
    if let Some(name) = service_providers
        .keys()
        .find(|n| applications.contains_key(*n))
    {
        return Err(ConfigError(format!(
            "{label}: `{name}` is both an application and a service provider"
        )));
    }
    Ok(ServerConfig {
        source,
        overrides: overrides.clone(),
        listen,
        secure_cookies: issuer.starts_with("https://"),
        issuer,
        data_dir,
        store_cache_bytes: store
            .cache_mib
            .map_or(crate::store::embedded::DEFAULT_CACHE_BYTES, |mib| {
                mib.saturating_mul(1024 * 1024)
            }),
        postgres,
        flows,
        tls: file.server.tls.map(|tls| TlsFiles {
            cert: relative(tls.cert),
            key: relative(tls.key),
        }),
        tokens: file.tokens,
        password: file.password,
        mfa: MfaSettings {
            secret_key_file: file.mfa.secret_key_file.clone().map(relative),
            ..file.mfa
        },
        email: EmailSettings {
            outbox: file.email.outbox.clone().map(relative),
            ..file.email
        },
        throttle: file.throttle,
        identity_providers: super::federation::parse(&file.identity_providers, &relative)
            .map_err(|e| ConfigError(format!("{label}: {e}")))?,
        saml,
        service_providers,
        provisioning_targets: super::provisioning::parse(&file.provisioning_targets)
            .map_err(|e| ConfigError(format!("{label}: {e}")))?,
        log_json,
        cors_origins: crate::http::cors::allowed_origins(applications.values()),
        applications,
        names,
    })
}

fn application(
    id: &str,
    section: ApplicationSection,
    at: &dyn Fn(std::ops::Range<usize>, String) -> ConfigError,
) -> Result<Application, ConfigError> {
    let key = |field: &str| format!("applications.{id}.{field}");
    let secret = match (&section.client_secret, &section.client_secret_env) {
        (Some(_), Some(env)) => {
            return Err(at(
                env.span(),
                format!(
                    "{}: give client_secret or client_secret_env, not both",
                    key("client_secret_env")
                ),
            ));
        }
        (Some(secret), None) => Some(secret.get_ref().clone()),
        (None, Some(env)) => match std::env::var(env.get_ref()) {
            Ok(value) if !value.is_empty() => Some(value),
            _ => {
                return Err(at(
                    env.span(),
                    format!(
                        "{}: the environment variable `{}` is not set",
                        key("client_secret_env"),
                        env.get_ref()
                    ),
                ));
            }
        },
        (None, None) => None,
    };
    if section.public
        && let Some(span) = section
            .client_secret
            .as_ref()
            .map(Spanned::span)
            .or(section.client_secret_env.as_ref().map(Spanned::span))
    {
        return Err(at(
            span,
            format!("{}: a public client has no secret", key("client_secret")),
        ));
    }
    if let Some(span) = section
        .client_secret
        .as_ref()
        .or(section.client_secret_env.as_ref())
        .map(Spanned::span)
        && secret.as_ref().is_some_and(|s| s.len() < 16)
    {
        let secret_span = span;
        return Err(at(
            secret_span,
            format!(
                "{}: a client secret must be at least 16 characters",
                key("client_secret")
            ),
        ));
    }
    let uris = |list: &[Spanned<String>], field: &str| {
        list.iter()
            .map(|uri| {
                check_redirect_uri(uri.get_ref())
                    .map(|()| uri.get_ref().clone())
                    .map_err(|e| at(uri.span(), format!("{}: {e}", key(field))))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let redirect_uris = uris(&section.redirect_uris, "redirect_uris")?;
    let post_logout_redirect_uris = uris(
        &section.post_logout_redirect_uris,
        "post_logout_redirect_uris",
    )?;
    let grant_types = section.grant_types.unwrap_or_else(|| {
        let mut grants = Vec::new();
        if !redirect_uris.is_empty() {
            grants.extend([GrantType::AuthorizationCode, GrantType::RefreshToken]);
        }
        if secret.is_some() {
            grants.push(GrantType::ClientCredentials);
        }
        grants
    });
    if !section.public && secret.is_none() && !grant_types.is_empty() {
        return Err(ConfigError(format!(
            "applications.{id}: a confidential client needs client_secret or client_secret_env \
             (or set public = true for a browser or native app)"
        )));
    }
    if let Some(scope) = section
        .scopes
        .iter()
        .find(|s| crate::http::tokens::SCOPES.contains(&s.as_str()))
    {
        return Err(ConfigError(format!(
            "{}: `{scope}` is an OpenID scope, which needs a user; list API scopes here",
            key("scopes")
        )));
    }
    if section.public && grant_types.contains(&GrantType::ClientCredentials) {
        return Err(ConfigError(format!(
            "{}: a public client cannot use client_credentials",
            key("grant_types")
        )));
    }
    Ok(Application {
        client_id: id.to_string(),
        name: section.name.unwrap_or_else(|| id.to_string()),
        secret,
        public: section.public,
        redirect_uris,
        post_logout_redirect_uris,
        grant_types,
        scopes: section.scopes,
    })
}

fn parse_listen(value: &str) -> Result<SocketAddr, String> {
    value
        .parse()
        .map_err(|_| format!("`{value}` is not an address and port such as 127.0.0.1:8080"))
}

fn parse_issuer(value: &str) -> Result<String, String> {
    let url = url::Url::parse(value).map_err(|e| format!("`{value}` is not a URL: {e}"))?;
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err(format!("`{value}` must be an http or https URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("`{value}` must have no query or fragment"));
    }
    // The endpoints are served at the root; an issuer with a path would advertise addresses
    // nothing answers.
    if url.path() != "/" {
        return Err(format!(
            "`{value}` must have no path (serve idflow at the root of a host)"
        ));
    }
    Ok(value.trim_end_matches('/').to_string())
}

fn parse_log_format(value: &str) -> Result<bool, String> {
    match value {
        "text" => Ok(false),
        "json" => Ok(true),
        other => Err(format!("`{other}` is not a log format; use text or json")),
    }
}

/// A redirect URI must be absolute and have no fragment (RFC 6749 §3.1.2).
fn check_redirect_uri(value: &str) -> Result<(), String> {
    let url =
        url::Url::parse(value).map_err(|e| format!("`{value}` is not an absolute URL: {e}"))?;
    if url.fragment().is_some() {
        return Err(format!("`{value}` must not have a fragment"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<ServerConfig, ConfigError> {
        parse(
            text,
            ConfigSource::File(PathBuf::from("/etc/idflow/idflow.toml")),
            &Overrides::default(),
        )
    }

    #[test]
    fn the_embedded_default_is_valid_and_uses_the_shipped_flows() {
        let config = parse(
            EMBEDDED_CONFIG,
            ConfigSource::Embedded,
            &Overrides::default(),
        )
        .expect("valid");
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.issuer, DEFAULT_ISSUER);
        assert_eq!(config.flows, FlowsSource::Embedded);
        assert_eq!(config.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert!(!config.secure_cookies);
    }

    #[test]
    fn overrides_win_over_the_file() {
        let overrides = Overrides {
            listen: Some("127.0.0.1:0".into()),
            issuer: Some("https://id.example.com/".into()),
            data_dir: Some("/tmp/d".into()),
            flows: Some("/tmp/f".into()),
            log_format: Some("json".into()),
        };
        let config = parse(
            "[server]\nlisten = \"0.0.0.0:1\"\nissuer = \"http://a\"\n",
            ConfigSource::Embedded,
            &overrides,
        )
        .expect("valid");
        assert_eq!(config.listen.port(), 0);
        assert_eq!(config.issuer, "https://id.example.com");
        assert!(config.secure_cookies);
        assert_eq!(config.flows, FlowsSource::Dir("/tmp/f".into()));
        assert!(config.log_json);
    }

    #[test]
    fn paths_in_a_file_are_relative_to_it() {
        let config =
            parse_text("[server]\ndata_dir = \"data\"\nflows = \"../flows\"\n").expect("valid");
        assert_eq!(config.data_dir, PathBuf::from("/etc/idflow/data"));
        assert_eq!(
            config.flows,
            FlowsSource::Dir("/etc/idflow/../flows".into())
        );
    }

    #[test]
    fn an_unknown_key_names_the_key_and_line() {
        let error = parse_text("[server]\nlisten = \"127.0.0.1:1\"\nlisen = \"x\"\n").unwrap_err();
        assert!(
            error.to_string().contains("lisen") && error.to_string().contains(":3: "),
            "{error}"
        );
    }

    #[test]
    fn a_bad_value_names_the_key_and_line() {
        let error = parse_text("[server]\n\nlisten = \"localhost\"\n").unwrap_err();
        assert!(
            error.to_string().contains("idflow.toml:3: server.listen"),
            "{error}"
        );
        let error = parse_text(
            "[applications.a]\nredirect_uris = [\n  \"https://a/cb\",\n  \"/relative\",\n]\n",
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains(":4: applications.a.redirect_uris"),
            "{error}"
        );
    }

    #[test]
    fn public_clients_have_no_secret_and_no_client_credentials() {
        let error = parse_text(
            "[applications.spa]\npublic = true\nclient_secret = \"0123456789abcdefgh\"\n",
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("public client has no secret"),
            "{error}"
        );
        let error = parse_text(
            "[applications.spa]\npublic = true\ngrant_types = [\"client_credentials\"]\n",
        )
        .unwrap_err();
        assert!(error.to_string().contains("client_credentials"), "{error}");
    }

    #[test]
    fn grants_default_from_what_the_client_has() {
        let config = parse_text(
            "[applications.web]\nclient_secret = \"0123456789abcdefgh\"\nredirect_uris = [\"http://localhost/cb\"]\n[applications.flow-only]\n",
        )
        .expect("valid");
        let web = &config.applications["web"];
        assert!(
            web.allows(GrantType::AuthorizationCode) && web.allows(GrantType::ClientCredentials)
        );
        assert!(config.applications["flow-only"].grant_types.is_empty());
    }

    #[test]
    fn a_store_url_is_short_for_a_postgres_store_table() {
        let config =
            parse_text("store = \"postgres://idflow@db.internal/idflow\"\n").expect("parses");
        let postgres = config.postgres.expect("postgres");
        assert_eq!(postgres.url.0, "postgres://idflow@db.internal/idflow");
        assert_eq!(
            postgres.connections,
            crate::store::postgres::DEFAULT_CONNECTIONS
        );
        assert!(
            !format!("{postgres:?}").contains("db.internal"),
            "never printed"
        );
        let error = parse_text("store = \"mysql://x\"\n").unwrap_err();
        assert!(error.to_string().contains("not a postgres://"), "{error}");
        assert!(parse_text("").expect("default").postgres.is_none());
    }

    #[test]
    fn short_secrets_and_unknown_stores_are_refused() {
        let error = parse_text("[applications.a]\nclient_secret = \"short\"\n").unwrap_err();
        assert!(error.to_string().contains("at least 16"), "{error}");
        let error = parse_text("[store]\nkind = \"sled\"\n").unwrap_err();
        assert!(error.to_string().contains("store.kind"), "{error}");
    }
}
