//! `idflow.toml`: the names flows refer to ([`names`]) and everything the server reads
//! ([`server`]). One file serves both, so `flow check` and `serve` cannot disagree about which
//! applications exist.

pub mod federation;
pub mod mfa;
pub mod names;
pub mod provisioning;
pub mod saml;
pub mod server;

pub use mfa::{EmailSettings, MfaSettings, ThrottleSettings};
pub use names::{
    ConfigError, DEFAULT_CONFIG, FlowNames, IdentityProvider, load_names, parse_names,
};
pub use server::{
    Application, ConfigSource, FlowsSource, GrantType, Overrides, ServerConfig, TokenSettings,
};
