//! Recovery codes on the server: issued with an authenticator app, stored as hashes in one
//! factor per user, struck as they are used.

use idflow_authenticators::recovery;

use super::Checked;
use crate::crypto::constant_time_eq;
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
    // Compared in constant time like every presented secret (`Vec::contains` would stop at
    // the first differing byte of each stored hash).
    let found = store.factors(user)?.into_iter().find(|f| {
        f.kind == FactorKind::RecoveryCodes
            && f.code_hashes
                .iter()
                .any(|stored| constant_time_eq(stored.as_bytes(), hash.as_bytes()))
    });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_passes_however_typed_and_only_if_it_is_the_users() {
        let dir = std::env::temp_dir().join(format!(
            "idflow-recovery-{}",
            crate::crypto::random_token(6)
        ));
        let store = crate::store::EmbeddedStore::open(&dir).expect("store");
        let codes = ["abcd-efgh-ijkl-mnop", "qrst-uvwx-yz23-4567"];
        store
            .commit(vec![Write::PutFactor(factor("u1", codes.into_iter(), 1))])
            .expect("put");
        let Checked::Passed(writes) = check(&store, "u1", "QRST UVWX YZ23 4567", 2).expect("check")
        else {
            panic!("the second code, typed in capitals with spaces, passes");
        };
        assert!(matches!(
            writes.as_slice(),
            [Write::UseRecoveryCode { user, id, hash, now: 2 }]
                if user == "u1" && id == FACTOR_ID && Some(hash) == recovery::hash(codes[1]).as_ref()
        ));
        for (user, code) in [
            ("u1", "abcd-efgh-ijkl-mnoq"),
            ("u2", codes[0]),
            ("u1", "not a code"),
        ] {
            assert!(
                matches!(check(&store, user, code, 2), Ok(Checked::Refused(_))),
                "{user} {code}"
            );
        }
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }
}
