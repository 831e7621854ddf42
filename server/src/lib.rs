//! The `idflow` program: the identity server and its command line.
//!
//! Architecture invariant: this is the only crate that does I/O (files, HTTP, the store, keys
//! and the clock). Each subcommand lives in its own module under [`cli`]; each HTTP endpoint in
//! its own module under [`http`]; the store is reached only through [`store::Store`].

pub mod app;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod directory;
pub mod effects;
pub mod federation;
pub mod hashing;
pub mod http;
pub mod keys;
pub mod mail;
pub mod metrics;
pub mod mfa;
pub mod provisioning;
pub mod reload;
pub mod secrets;
pub mod sources;
pub mod store;
pub mod throttle;
pub mod tls;
