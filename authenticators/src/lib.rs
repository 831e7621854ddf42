//! idflow's authenticators (password, TOTP, passkey, email OTP, federated), each behind the
//! engine's `Authenticator` trait.
//!
//! Empty until the server and MFA issues land; the crate exists now so the workspace has its
//! final shape.
