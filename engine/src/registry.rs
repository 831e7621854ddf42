//! The registry of loaded flows: immutable snapshots swapped atomically. A reload checks and
//! loads every file off to the side; if anything fails, the live snapshot stays and the
//! diagnostics come back. Versions that were live stay resolvable, so a run finishes on the
//! version it started on, until the server retires versions no run uses.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arc_swap::ArcSwap;
use idflow_dsl::{FileReport, Names, SourceFile, check_project};

use crate::flow::LoadedFlow;
use crate::sandbox::Sandbox;

/// One immutable generation of flows.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Current flows by id.
    pub flows: BTreeMap<String, Arc<LoadedFlow>>,
    /// Every version still resolvable (current and retained), by version.
    pub versions: HashMap<String, Arc<LoadedFlow>>,
    /// Application id to flow id.
    pub applications: BTreeMap<String, String>,
    /// The default flow's id.
    pub default: Option<String>,
    /// Increases by one per successful reload.
    pub generation: u64,
}

impl Snapshot {
    /// The flow that runs logins for `application`: the one claiming it, else the default.
    pub fn flow_for(&self, application: &str) -> Option<Arc<LoadedFlow>> {
        let id = self
            .applications
            .get(application)
            .or(self.default.as_ref())?;
        self.flows.get(id).cloned()
    }

    /// The same flows with another set of retained versions (same generation: the live flows
    /// did not change).
    pub fn with_versions(&self, versions: HashMap<String, Arc<LoadedFlow>>) -> Snapshot {
        Snapshot {
            flows: self.flows.clone(),
            versions,
            applications: self.applications.clone(),
            default: self.default.clone(),
            generation: self.generation,
        }
    }

    /// The flow of a version, current or retained.
    pub fn version(&self, version: &str) -> Option<Arc<LoadedFlow>> {
        self.versions.get(version).cloned()
    }
}

/// What a successful reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// The new generation.
    pub generation: u64,
    /// Flows that are new.
    pub added: Vec<String>,
    /// Flows whose version changed: (id, old version, new version).
    pub changed: Vec<(String, String, String)>,
    /// Flows that are gone (their versions stay resolvable until retired).
    pub removed: Vec<String>,
}

/// Why a reload was refused; the live snapshot is unchanged.
#[derive(Debug)]
pub enum ReloadError {
    /// Some file has errors: every file's report.
    Check(Vec<FileReport>),
    /// A flow checked but could not be loaded (a bug; the message says which).
    Load(String),
}

/// The live flows.
pub struct Registry {
    sandbox: Arc<Sandbox>,
    current: ArcSwap<Snapshot>,
    /// Serializes writers (reload, retire) so no update is lost; readers never wait.
    writer: std::sync::Mutex<()>,
}

impl Registry {
    /// An empty registry whose flows run in `sandbox`.
    pub fn new(sandbox: Arc<Sandbox>) -> Self {
        Registry {
            sandbox,
            current: ArcSwap::from_pointee(Snapshot::default()),
            writer: std::sync::Mutex::new(()),
        }
    }

    /// The live snapshot; cheap, and stable for as long as the caller holds it.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Checks `files` together and, if all are clean, makes them the live flows.
    pub fn reload(
        &self,
        files: &[SourceFile],
        names: &Names,
    ) -> Result<ReloadSummary, ReloadError> {
        let reports = check_project(files, names);
        let _writer = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if reports.iter().any(FileReport::has_errors) {
            return Err(ReloadError::Check(reports));
        }
        let old = self.snapshot();
        let mut flows = BTreeMap::new();
        let mut versions = old.versions.clone();
        let mut applications = BTreeMap::new();
        let mut default = None;
        for report in reports {
            let Some(compiled) = report.compiled else {
                continue;
            };
            let id = compiled.ir.flow.clone();
            if flows.contains_key(&id) {
                continue; // a YAML/.flow twin: same id, same version
            }
            let loaded = match versions.get(&compiled.version) {
                Some(loaded) => Arc::clone(loaded),
                None => Arc::new(
                    LoadedFlow::load(&self.sandbox, compiled.ir).map_err(ReloadError::Load)?,
                ),
            };
            for application in &loaded.ir.applies_to {
                applications.insert(application.clone(), id.clone());
            }
            if loaded.ir.default {
                default = Some(id.clone());
            }
            versions.insert(loaded.version.clone(), Arc::clone(&loaded));
            flows.insert(id, loaded);
        }
        let summary = ReloadSummary {
            generation: old.generation + 1,
            added: flows
                .keys()
                .filter(|id| !old.flows.contains_key(*id))
                .cloned()
                .collect(),
            changed: flows
                .iter()
                .filter_map(|(id, flow)| {
                    let before = old.flows.get(id)?;
                    (before.version != flow.version)
                        .then(|| (id.clone(), before.version.clone(), flow.version.clone()))
                })
                .collect(),
            removed: old
                .flows
                .keys()
                .filter(|id| !flows.contains_key(*id))
                .cloned()
                .collect(),
        };
        self.install(Snapshot {
            flows,
            versions,
            applications,
            default,
            generation: summary.generation,
        });
        Ok(summary)
    }

    /// Makes `snapshot` live in one atomic store.
    pub fn install(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
    }

    /// Makes a version resolvable from its IR, e.g. read from the store on a node that never
    /// loaded it or after a restart (the server stores each version's canonical IR when it goes
    /// live). Returns the loaded flow; the IR must hash to `version`.
    pub fn load_version(
        &self,
        version: &str,
        ir: idflow_dsl::FlowIr,
    ) -> Result<Arc<LoadedFlow>, String> {
        if let Some(loaded) = self.snapshot().version(version) {
            return Ok(loaded);
        }
        if ir.version() != version {
            return Err(format!(
                "stored IR hashes to {}, not {version}",
                ir.version()
            ));
        }
        let loaded = Arc::new(LoadedFlow::load(&self.sandbox, ir)?);
        let _writer = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let old = self.snapshot();
        let mut versions = old.versions.clone();
        versions.insert(version.to_string(), Arc::clone(&loaded));
        self.install(old.with_versions(versions));
        Ok(loaded)
    }

    /// Drops retained versions that are neither current nor in `in_use` (the versions of runs
    /// still stored).
    pub fn retire_versions(&self, in_use: &HashSet<String>) {
        let _writer = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let old = self.snapshot();
        let current: HashSet<&String> = old.flows.values().map(|f| &f.version).collect();
        let versions = old
            .versions
            .iter()
            .filter(|(v, _)| current.contains(v) || in_use.contains(*v))
            .map(|(v, f)| (v.clone(), Arc::clone(f)))
            .collect();
        self.install(old.with_versions(versions));
    }
}
