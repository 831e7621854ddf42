//! Reloading the declarative configuration while logins are in flight: the configuration file
//! (applications, identity providers, service providers, provisioning targets) and the flows,
//! checked together and made live as one unit, or not at all.
//!
//! Settings that shape the process (listen address, issuer, data directory, TLS, lifetimes,
//! password hashing, second factors, mail, throttling, SAML keys) keep their running values; a
//! reload that changes them says they need a restart. A run keeps the flow version it started
//! on (the store keeps every version a run may use; the registry keeps the live ones loaded,
//! and loads an older one again from the store when a run needs it).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::app::{App, flow_files, keep_flow_versions, render_reload_error};
use crate::config::server::{self, ServerConfig};

/// Serializes reloads: two at once (SIGHUP during an admin call) would interleave the flow
/// and configuration swaps.
static RELOADING: Mutex<()> = Mutex::new(());

/// What a reload changed.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Reloaded {
    /// The flows' new generation.
    pub generation: u64,
    /// Flows that are new.
    pub added: Vec<String>,
    /// Flows that changed, with what changed in their state machines.
    pub changed: Vec<FlowChange>,
    /// Flows that are gone.
    pub removed: Vec<String>,
    /// Configuration tables whose entries were added, removed or changed, e.g.
    /// `applications: + crm, ~ wiki`.
    pub config: Vec<String>,
    /// Settings that changed in the file but keep their running value until a restart.
    pub restart_needed: Vec<String>,
}

/// One changed flow.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct FlowChange {
    /// The flow id.
    pub flow: String,
    /// The version that was live.
    pub from: String,
    /// The version now live.
    pub to: String,
    /// `idflow flow diff` of the two, one change a line.
    pub diff: Vec<String>,
}

impl Reloaded {
    /// The change for a person: the generation, each flow's diff, the configuration tables.
    pub fn render(&self) -> String {
        let mut out = format!("reloaded: generation {}\n", self.generation);
        for flow in &self.added {
            out.push_str(&format!("+ flow {flow}\n"));
        }
        for flow in &self.removed {
            out.push_str(&format!("- flow {flow}\n"));
        }
        for change in &self.changed {
            out.push_str(&format!(
                "~ flow {} {} -> {}\n",
                change.flow, change.from, change.to
            ));
            for line in &change.diff {
                out.push_str(&format!("    {line}\n"));
            }
        }
        for line in &self.config {
            out.push_str(&format!("{line}\n"));
        }
        if !self.restart_needed.is_empty() {
            out.push_str(&format!(
                "needs a restart to take effect: {}\n",
                self.restart_needed.join(", ")
            ));
        }
        if self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.config.is_empty()
            && self.restart_needed.is_empty()
        {
            out.push_str("nothing changed\n");
        }
        out
    }
}

/// Reads the configuration file and the flows again and, if everything checks, makes them
/// live; otherwise the live ones stay and the error says why (a person's text: the first line
/// is the reason, the rest the diagnostics).
pub fn reload(app: &App) -> Result<Reloaded, String> {
    let done = reload_here(app)?;
    // The other nodes of a cluster read their files again too.
    if let Err(error) = app.store.announce_reload(&app.node) {
        tracing::error!(%error, "cannot announce the reload to the other nodes");
    }
    Ok(done)
}

/// What another node's announced reload does here: the same reload, announced to nobody.
pub fn reload_announced(app: &App) -> Result<Reloaded, String> {
    reload_here(app)
}

fn reload_here(app: &App) -> Result<Reloaded, String> {
    let _one_at_a_time = RELOADING.lock().unwrap_or_else(|e| e.into_inner());
    let running = app.config();
    let path = match &running.source {
        server::ConfigSource::File(path) => Some(path.as_path()),
        server::ConfigSource::Embedded => None,
    };
    let read = server::load(path, &running.overrides).map_err(|e| e.to_string())?;
    let next = declarative_part(&running, read.clone());
    let files = flow_files(&next)?;
    let before = app.registry.snapshot();
    let summary = app
        .registry
        .reload(&files, &next.names)
        .map_err(|e| render_reload_error(&e))?;
    app.live_config.store(Arc::new(next.clone()));
    match keep_flow_versions(app.store.as_ref(), &app.registry) {
        Ok(()) => retire_flow_versions(app),
        Err(error) => tracing::error!(%error, "cannot store the new flow versions"),
    }
    let after = app.registry.snapshot();
    let changed = summary
        .changed
        .iter()
        .map(|(flow, from, to)| FlowChange {
            flow: flow.clone(),
            from: from.clone(),
            to: to.clone(),
            diff: match (before.version(from), after.version(to)) {
                (Some(old), Some(new)) => idflow_engine::diff::diff(&old.ir, &new.ir),
                _ => Vec::new(),
            },
        })
        .collect();
    Ok(Reloaded {
        generation: summary.generation,
        added: summary.added,
        changed,
        removed: summary.removed,
        config: table_changes(&running, &next),
        restart_needed: restart_needed(&running, &read),
    })
}

/// Unloads the flow versions that are no longer live and that the store keeps.
///
/// Without this the registry kept every version that ever went live (or that a login loaded
/// from the store) for the life of the process: each edit of a flow followed by a reload
/// leaked one compiled flow (about 9 KiB for the shipped password flow, more with scripts).
/// A login still running on a retired version loses nothing: [`crate::app::flow_version`]
/// loads it again from the IR the store keeps, as after a restart, and the registry keeps it
/// until the next reload. A version whose IR the store does not have (storing it failed, or
/// the store cannot say) stays loaded, since nothing could load it again.
fn retire_flow_versions(app: &App) {
    let snapshot = app.registry.snapshot();
    let current: HashSet<&String> = snapshot.flows.values().map(|f| &f.version).collect();
    let keep: HashSet<String> = snapshot
        .versions
        .keys()
        .filter(|version| !current.contains(version))
        .filter(|version| !matches!(app.store.flow_version(version), Ok(Some(_))))
        .cloned()
        .collect();
    app.registry.retire_versions(&keep);
}

/// `read` with the running process settings: only the declarative part changes. The built-in
/// console client follows the running issuer (a changed issuer waits for the restart).
fn declarative_part(running: &ServerConfig, read: ServerConfig) -> ServerConfig {
    let mut applications = read.applications;
    let console = server::CONSOLE_CLIENT;
    if applications.get(console) == Some(&server::console_client(&read.issuer)) {
        applications.insert(console.to_string(), server::console_client(&running.issuer));
    }
    ServerConfig {
        cors_origins: crate::http::cors::allowed_origins(applications.values()),
        applications,
        identity_providers: read.identity_providers,
        service_providers: read.service_providers,
        provisioning_targets: read.provisioning_targets,
        names: read.names,
        flows: read.flows,
        ..running.clone()
    }
}

/// The process settings the file changed (compared as printed: secrets print alike, so a
/// changed secret in them is not reported).
fn restart_needed(running: &ServerConfig, read: &ServerConfig) -> Vec<String> {
    let mut changed = Vec::new();
    let mut check = |name: &str, a: String, b: String| {
        if a != b {
            changed.push(name.to_string());
        }
    };
    check(
        "listen",
        running.listen.to_string(),
        read.listen.to_string(),
    );
    check("issuer", running.issuer.clone(), read.issuer.clone());
    check(
        "data_dir",
        format!("{:?}", running.data_dir),
        format!("{:?}", read.data_dir),
    );
    // Compared, not printed: the printed URL hides its secret, and a changed URL matters.
    if running.store_cache_bytes != read.store_cache_bytes || running.postgres != read.postgres {
        check("store", "running".into(), "changed".into());
    }
    check(
        "tls",
        format!("{:?}", running.tls),
        format!("{:?}", read.tls),
    );
    check(
        "tokens",
        format!("{:?}", running.tokens),
        format!("{:?}", read.tokens),
    );
    check(
        "password",
        format!("{:?}", running.password),
        format!("{:?}", read.password),
    );
    check(
        "mfa",
        format!("{:?}", running.mfa),
        format!("{:?}", read.mfa),
    );
    check(
        "email",
        format!("{:?}", running.email),
        format!("{:?}", read.email),
    );
    check(
        "throttle",
        format!("{:?}", running.throttle),
        format!("{:?}", read.throttle),
    );
    check(
        "saml",
        format!("{:?}", running.saml),
        format!("{:?}", read.saml),
    );
    changed
}

/// `applications: + a, - b, ~ c` for each table whose entries changed.
fn table_changes(old: &ServerConfig, new: &ServerConfig) -> Vec<String> {
    fn compare<T: std::fmt::Debug>(
        name: &str,
        old: impl Iterator<Item = (String, T)>,
        new: impl Iterator<Item = (String, T)>,
    ) -> Option<String> {
        let old: std::collections::BTreeMap<String, String> =
            old.map(|(k, v)| (k, format!("{v:?}"))).collect();
        let new: std::collections::BTreeMap<String, String> =
            new.map(|(k, v)| (k, format!("{v:?}"))).collect();
        let mut parts = Vec::new();
        for (key, value) in &new {
            match old.get(key) {
                None => parts.push(format!("+ {key}")),
                Some(before) if before != value => parts.push(format!("~ {key}")),
                Some(_) => {}
            }
        }
        for key in old.keys().filter(|k| !new.contains_key(*k)) {
            parts.push(format!("- {key}"));
        }
        (!parts.is_empty()).then(|| format!("{name}: {}", parts.join(", ")))
    }
    [
        compare(
            "applications",
            old.applications.iter().map(|(k, v)| (k.clone(), v)),
            new.applications.iter().map(|(k, v)| (k.clone(), v)),
        ),
        compare(
            "identity_providers",
            old.identity_providers.iter().map(|(k, v)| (k.clone(), v)),
            new.identity_providers.iter().map(|(k, v)| (k.clone(), v)),
        ),
        compare(
            "service_providers",
            old.service_providers.iter().map(|(k, v)| (k.clone(), v)),
            new.service_providers.iter().map(|(k, v)| (k.clone(), v)),
        ),
        compare(
            "provisioning_targets",
            old.provisioning_targets.iter().map(|t| (t.name.clone(), t)),
            new.provisioning_targets.iter().map(|t| (t.name.clone(), t)),
        ),
    ]
    .into_iter()
    .flatten()
    .collect()
}
