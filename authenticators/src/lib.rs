//! idflow's authenticators: the code that checks a credential and reports `Passed` or `Failed`
//! to the engine. The server does the I/O (reads the user, stores what changed); these modules
//! only decide.
//!
//! Now: the password authenticator (argon2id). TOTP, passkeys, email OTP and federated
//! authenticators arrive with the MFA and federation issues.

pub mod password;

pub use password::{PasswordError, PasswordHasher, PasswordPolicy, Scratch};
