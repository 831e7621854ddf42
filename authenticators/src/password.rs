//! Passwords: argon2id hashes in the PHC string format, with parameters from configuration.
//!
//! Verification takes the parameters from the stored hash, so raising the cost in configuration
//! affects new hashes at once and old ones when [`PasswordHasher::needs_rehash`] says so (the
//! server rehashes at the next successful login).

use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, PasswordVerifier, Version};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// argon2id cost parameters (`[password]` in `idflow.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordPolicy {
    /// Memory in KiB. Default 19456 (19 MiB), OWASP's first argon2id recommendation.
    pub memory_kib: u32,
    /// Passes over memory. Default 2.
    pub iterations: u32,
    /// Lanes. Default 1.
    pub parallelism: u32,
    /// Shortest password accepted when one is set. Default 8.
    pub min_length: usize,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        PasswordPolicy {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
            min_length: 8,
        }
    }
}

/// Why a password could not be hashed or set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordError {
    /// The parameters are outside argon2's limits.
    BadParameters(String),
    /// The password is shorter than the policy allows.
    TooShort(usize),
    /// The password is longer than 1024 bytes (a denial-of-service guard).
    TooLong,
}

impl std::fmt::Display for PasswordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PasswordError::BadParameters(why) => write!(f, "bad argon2id parameters: {why}"),
            PasswordError::TooShort(min) => {
                write!(f, "the password must be at least {min} characters long")
            }
            PasswordError::TooLong => f.write_str("the password must be at most 1024 bytes long"),
        }
    }
}

impl std::error::Error for PasswordError {}

/// Longest password hashed: bounds the work an attacker can make one request cost.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// argon2 working memory kept by one thread between verifications.
#[derive(Default)]
pub struct Scratch {
    blocks: Vec<Block>,
}

/// Hashes and verifies passwords with one set of parameters. Cheap to clone and share.
#[derive(Debug, Clone)]
pub struct PasswordHasher {
    policy: PasswordPolicy,
    params: Params,
    /// A hash of a random password with the same parameters, verified against when a login
    /// names no user, so that "no such user" costs the same time as "wrong password".
    decoy: String,
}

impl PasswordHasher {
    /// A hasher with `policy`'s parameters; fails if argon2 rejects them.
    pub fn new(policy: PasswordPolicy) -> Result<Self, PasswordError> {
        let params = Params::new(
            policy.memory_kib,
            policy.iterations,
            policy.parallelism,
            None,
        )
        .map_err(|e| PasswordError::BadParameters(e.to_string()))?;
        let mut hasher = PasswordHasher {
            policy,
            params,
            decoy: String::new(),
        };
        hasher.decoy = hasher.hash_unchecked(b"decoy password for unknown users")?;
        Ok(hasher)
    }

    /// The policy this hasher applies.
    pub fn policy(&self) -> &PasswordPolicy {
        &self.policy
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// Hashes a new password after checking the policy's length bounds.
    pub fn hash(&self, password: &str) -> Result<String, PasswordError> {
        if password.chars().count() < self.policy.min_length {
            return Err(PasswordError::TooShort(self.policy.min_length));
        }
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(PasswordError::TooLong);
        }
        self.hash_unchecked(password.as_bytes())
    }

    fn hash_unchecked(&self, password: &[u8]) -> Result<String, PasswordError> {
        use argon2::PasswordHasher as _;
        self.argon2()
            .hash_password(password)
            .map(|hash| hash.to_string())
            .map_err(|e| PasswordError::BadParameters(e.to_string()))
    }

    /// Whether `password` matches the stored PHC `hash`. A malformed hash or an over-long
    /// password is a mismatch, never an error a caller could forget to treat as one.
    pub fn verify(&self, password: &str, hash: &str) -> bool {
        if password.len() > MAX_PASSWORD_BYTES {
            return false;
        }
        let Ok(parsed) = PasswordHash::new(hash) else {
            return false;
        };
        // The parameters come from the hash itself: a hash made under older settings verifies.
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    }

    /// Spends the time of one verification and returns false: for logins naming no user.
    pub fn verify_decoy(&self, password: &str) -> bool {
        let _ = self.verify(password, &self.decoy);
        false
    }

    /// [`Self::verify`] computing in `scratch`'s memory instead of allocating `memory_kib`
    /// afresh: a server thread that verifies many passwords keeps one buffer, where a fresh
    /// allocation per login leaves the allocator holding tens of MiB per thread.
    pub fn verify_in(&self, password: &str, hash: &str, scratch: &mut Scratch) -> bool {
        if password.len() > MAX_PASSWORD_BYTES {
            return false;
        }
        let Ok(parsed) = PasswordHash::new(hash) else {
            return false;
        };
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return false;
        };
        let Ok(algorithm) = Algorithm::try_from(parsed.algorithm.as_str()) else {
            return false;
        };
        let version = match parsed.version.map(Version::try_from) {
            None => Version::V0x13,
            Some(Ok(version)) => version,
            Some(Err(_)) => return false,
        };
        let Ok(params) = Params::try_from(&parsed) else {
            return false;
        };
        let blocks = params.block_count();
        if scratch.blocks.len() < blocks {
            scratch.blocks.resize(blocks, Block::default());
        }
        let mut output = vec![0u8; expected.len()];
        Argon2::new(algorithm, version, params)
            .hash_password_into_with_memory(
                password.as_bytes(),
                salt.as_ref(),
                &mut output,
                &mut scratch.blocks[..blocks],
            )
            .is_ok()
            && bool::from(output.as_slice().ct_eq(expected.as_bytes()))
    }

    /// [`Self::verify_decoy`] in `scratch`'s memory.
    pub fn verify_decoy_in(&self, password: &str, scratch: &mut Scratch) -> bool {
        let _ = self.verify_in(password, &self.decoy, scratch);
        false
    }

    /// Whether `hash` was made with other parameters than this hasher's (rehash on next login).
    pub fn needs_rehash(&self, hash: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(hash) else {
            return true;
        };
        let Ok(stored) = Params::try_from(&parsed) else {
            return true;
        };
        parsed.algorithm.as_str() != "argon2id"
            || stored.m_cost() != self.params.m_cost()
            || stored.t_cost() != self.params.t_cost()
            || stored.p_cost() != self.params.p_cost()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordHasher {
        PasswordHasher::new(PasswordPolicy {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
            min_length: 8,
        })
        .expect("valid parameters")
    }

    #[test]
    fn hashes_are_argon2id_salted_and_verify() {
        let hasher = cheap();
        let a = hasher.hash("correct horse").expect("hash");
        let b = hasher.hash("correct horse").expect("hash");
        assert!(a.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{a}");
        assert_ne!(a, b, "each hash has its own salt");
        assert!(hasher.verify("correct horse", &a));
        assert!(!hasher.verify("correct horsE", &a));
        assert!(!hasher.verify("correct horse", "not a hash"));
    }

    #[test]
    fn verifying_in_reused_memory_agrees_with_verify() {
        let hasher = cheap();
        let other = PasswordHasher::new(PasswordPolicy {
            memory_kib: 256,
            ..*hasher.policy()
        })
        .expect("valid");
        let small = hasher.hash("correct horse").expect("hash");
        let large = other.hash("correct horse").expect("hash");
        let mut scratch = Scratch::default();
        for hash in [&large, &small, &large] {
            assert!(hasher.verify_in("correct horse", hash, &mut scratch));
            assert!(!hasher.verify_in("correct horsE", hash, &mut scratch));
        }
        assert!(!hasher.verify_in("x", "$argon2id$v=19$m=64,t=1,p=1$bad", &mut scratch));
        assert!(!hasher.verify_decoy_in("correct horse", &mut scratch));
    }

    #[test]
    fn policy_bounds_are_enforced() {
        let hasher = cheap();
        assert_eq!(hasher.hash("short"), Err(PasswordError::TooShort(8)));
        assert_eq!(hasher.hash(&"x".repeat(1025)), Err(PasswordError::TooLong));
        assert!(!hasher.verify(&"x".repeat(1025), &hasher.decoy));
    }

    #[test]
    fn old_parameters_still_verify_and_ask_for_a_rehash() {
        let old = cheap();
        let hash = old.hash("correct horse").expect("hash");
        let new = PasswordHasher::new(PasswordPolicy {
            memory_kib: 128,
            ..*old.policy()
        })
        .expect("valid");
        assert!(new.verify("correct horse", &hash));
        assert!(new.needs_rehash(&hash));
        assert!(!old.needs_rehash(&hash));
    }

    #[test]
    fn bad_parameters_are_an_error() {
        let error = PasswordHasher::new(PasswordPolicy {
            memory_kib: 1,
            ..PasswordPolicy::default()
        })
        .unwrap_err();
        assert!(matches!(error, PasswordError::BadParameters(_)));
    }
}
