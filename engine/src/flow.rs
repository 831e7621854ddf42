//! A flow ready to run: its IR, its version, and every script compiled once.

use std::collections::HashMap;

use idflow_dsl::FlowIr;
use idflow_dsl::ir::{ActionIr, StateKind};
use rhai::AST;

use crate::sandbox::Sandbox;

/// A compiled flow with its scripts compiled for the sandbox.
pub struct LoadedFlow {
    /// The state machine.
    pub ir: FlowIr,
    /// Its version.
    pub version: String,
    scripts: HashMap<String, AST>,
}

impl std::fmt::Debug for LoadedFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedFlow")
            .field("flow", &self.ir.flow)
            .field("version", &self.version)
            .finish()
    }
}

impl LoadedFlow {
    /// Compiles every script of `ir`. Fails only for an IR that did not pass `flow check`.
    pub fn load(sandbox: &Sandbox, ir: FlowIr) -> Result<LoadedFlow, String> {
        let version = ir.version();
        let mut sources: Vec<&str> = Vec::new();
        for state in ir.states.values() {
            match &state.kind {
                StateKind::Decide { script } => sources.push(script),
                StateKind::Action { actions } => {
                    for action in actions {
                        if let ActionIr::SetClaim { script, .. } = action {
                            sources.push(script);
                        }
                    }
                }
                _ => {}
            }
        }
        for rule in &ir.jit {
            sources.extend(rule.when.as_deref());
            if let Some(create) = &rule.create {
                sources.push(&create.username);
                sources.extend(create.attributes.values().map(String::as_str));
            }
        }
        let mut scripts = HashMap::new();
        for source in sources {
            if !scripts.contains_key(source) {
                let ast = sandbox
                    .compile(source)
                    .map_err(|e| format!("script `{source}`: {e}"))?;
                scripts.insert(source.to_string(), ast);
            }
        }
        Ok(LoadedFlow {
            ir,
            version,
            scripts,
        })
    }

    /// The compiled form of a script of this flow.
    pub fn script(&self, source: &str) -> Option<&AST> {
        self.scripts.get(source)
    }
}
