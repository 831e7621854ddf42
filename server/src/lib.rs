//! The `idflow` program: the command line now, the identity server later.
//!
//! Architecture invariant: this is the only crate that does I/O (files, and later HTTP, the
//! store, keys and the clock). Each subcommand lives in its own module under [`cli`] and does
//! little more than read files, call a library crate and print.

pub mod cli;
pub mod config;
pub mod sources;
