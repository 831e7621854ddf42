//! The idflow engine: runs compiled flows (the IR of `idflow-dsl`) as a pure step function.
//!
//! Empty until the engine issue lands; the crate exists now so the workspace has its final
//! shape and the layering (dsl → engine → authenticators → server) is fixed from the start.
