//! idflow's authenticators: the code that checks a credential and reports `Passed` or `Failed`
//! to the engine. The server does the I/O (reads the user, stores what changed); these modules
//! only decide.
//!
//! Here: passwords (argon2id), TOTP codes, recovery codes and email one-time codes. Passkeys
//! live in the server, because webauthn-rs binds them to the server's relying-party identity.

pub mod email_code;
pub mod password;
pub mod recovery;
pub mod totp;

pub use password::{PasswordError, PasswordHasher, PasswordPolicy, Scratch};
