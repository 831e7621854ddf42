//! The idflow engine: runs compiled flows (the IR of `idflow-dsl`).
//!
//! A functional core: [`Engine::start`] and [`Engine::advance`] take a [`Run`] and an [`Input`]
//! and return the next run, an [`Output`] and [`Effect`]s for the server to apply in one store
//! transaction. The engine does no I/O and reads no clock; the store is reached only through the
//! read-only [`Directory`]. [`Registry`] holds versioned, atomically swapped snapshots of loaded
//! flows; [`scenario`] runs the scenario files of `idflow flow test`.
//!
//! Architecture invariant: everything here is deterministic given its arguments, which is what
//! makes scenario tests, dry runs and multi-node servers agree.

pub mod diff;
pub mod directory;
pub mod flow;
pub mod jit;
pub mod machine;
pub mod model;
pub mod registry;
pub mod run;
pub mod sandbox;
pub mod scenario;

pub use directory::{Directory, Fixtures};
pub use flow::LoadedFlow;
pub use machine::{Engine, Step};
pub use model::{Carried, Effect, Input, Output, Request, UserView};
pub use registry::Registry;
pub use run::Run;
