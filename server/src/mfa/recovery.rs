//! Recovery codes on the server: issued with an authenticator app, stored as hashes in one
//! factor per user, struck as they are used.

use idflow_authenticators::recovery;

use super::Checked;
use crate::store::{Factor, FactorKind, Store, StoreResult, Write};

/// The id of a user's recovery-code factor: one set per user, replaced when new codes are
/// issued.
pub const FACTOR_ID: &str = "recovery-codes";

/// Ten fresh codes.
pub fn generate() -> Result<Vec<String>, String> {
    (0..recovery::COUNT)
        .map(|_| {
            let mut bytes = [0u8; recovery::CODE_BYTES];
            aws_lc_rs::rand::fill(&mut bytes).map_err(|_| "no randomness".to_string())?;
            Ok(recovery::format(&bytes))
        })
        .collect()
}

/// The factor holding the hashes of `codes`.
pub fn factor<'a>(user: &str, codes: impl Iterator<Item = &'a str>, now: u64) -> Factor {
    Factor {
        id: FACTOR_ID.into(),
        user: user.to_string(),
        kind: FactorKind::RecoveryCodes,
        label: "Recovery codes".into(),
        created: now,
        last_used: 0,
        sealed_secret: None,
        last_step: 0,
        passkey: None,
        credential_id: None,
        counter: 0,
        user_handle: None,
        code_hashes: codes.filter_map(recovery::hash).collect(),
    }
}

/// Checks a typed recovery code; a pass strikes it.
pub fn check(store: &dyn Store, user: &str, code: &str, now: u64) -> StoreResult<Checked> {
    let Some(hash) = recovery::hash(code) else {
        return Ok(Checked::Refused(
            "a recovery code looks like abcd-efgh-ijkl-mnop".into(),
        ));
    };
    let found = store
        .factors(user)?
        .into_iter()
        .find(|f| f.kind == FactorKind::RecoveryCodes && f.code_hashes.contains(&hash));
    Ok(match found {
        Some(factor) => Checked::Passed(vec![Write::UseRecoveryCode {
            user: user.to_string(),
            id: factor.id,
            hash,
            now,
        }]),
        None => Checked::Refused("that recovery code is wrong or was already used".into()),
    })
}
