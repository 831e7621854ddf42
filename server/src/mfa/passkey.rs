//! Passkeys (WebAuthn) with webauthn-rs: registration during a login (`enroll passkey`) or from
//! the account page, sign-in for a known user, and usernameless sign-in with a discoverable
//! credential. The relying-party id is the issuer's host and the only origin is the issuer's.
//!
//! Ceremony state (the challenge) is stored server-side per login or session and taken by the
//! answer, so an assertion is accepted once. Counters are checked twice: webauthn-rs refuses an
//! assertion whose counter did not increase, and the store refuses to record one that does not
//! exceed the stored counter (two racing answers cannot both pass).

use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{
    DiscoverableAuthentication, DiscoverableKey, Passkey, PasskeyAuthentication,
    PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential, Url, Uuid,
};

use super::{Checked, Mfa, challenge_data, challenge_key, user_challenge};
use crate::crypto::{b64url, random_token};
use crate::store::{Challenge, Factor, FactorKind, Store, User, Write};

/// Purpose of a sign-in challenge's key.
pub const SIGN_IN: &str = "passkey";
/// Purpose of a registration challenge's key.
pub const REGISTER: &str = "register-passkey";

/// The relying party for `issuer`.
pub fn relying_party(issuer: &str) -> Result<webauthn_rs::Webauthn, String> {
    let origin = Url::parse(issuer).map_err(|e| format!("issuer: {e}"))?;
    let host = origin
        .host_str()
        .ok_or("the issuer has no host, so passkeys have no relying-party id")?
        .to_string();
    webauthn_rs::WebauthnBuilder::new(&host, &origin)
        .and_then(|b| b.rp_name("idflow").build())
        .map_err(|e| format!("WebAuthn relying party for {issuer}: {e}"))
}

/// The relying party, or why passkeys are not available.
fn rp(mfa: &Mfa) -> Result<&webauthn_rs::Webauthn, String> {
    mfa.webauthn
        .as_ref()
        .map_err(|why| format!("passkeys are not available: {why}"))
}

/// The WebAuthn user handle of a user: derived from the id, so it is stable and reveals
/// nothing about the account.
pub fn user_handle(user: &str) -> Uuid {
    let digest = crate::crypto::sha256(format!("idflow webauthn user handle {user}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::from_bytes(bytes)
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
enum SignIn {
    /// For a known user, allowing only their credentials.
    User {
        user: String,
        state: PasskeyAuthentication,
    },
    /// Usernameless: the credential says whose it is.
    Discoverable { state: DiscoverableAuthentication },
}

fn passkeys(store: &dyn Store, user: &str) -> Result<Vec<(Factor, Passkey)>, String> {
    Ok(store
        .factors(user)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|f| f.kind == FactorKind::Passkey)
        .filter_map(|f| {
            let passkey = serde_json::from_value(f.passkey.clone()?).ok()?;
            Some((f, passkey))
        })
        .collect())
}

/// Starts a sign-in ceremony for `owner`: for `user` (only their credentials) or, without one,
/// usernameless. Returns the options for `navigator.credentials.get` (JSON) and the challenge
/// write; `None` when the user has no passkey.
pub fn start_sign_in(
    mfa: &Mfa,
    store: &dyn Store,
    owner: &str,
    user: Option<&str>,
    now: u64,
    lifetime: u64,
) -> Result<Option<(String, Write)>, String> {
    let (options, state) = match user {
        Some(user) => {
            let keys: Vec<Passkey> = passkeys(store, user)?.into_iter().map(|(_, p)| p).collect();
            if keys.is_empty() {
                return Ok(None);
            }
            let (options, state) = rp(mfa)?
                .start_passkey_authentication(&keys)
                .map_err(|e| e.to_string())?;
            (
                serde_json::to_value(options).map_err(|e| e.to_string())?,
                SignIn::User {
                    user: user.to_string(),
                    state,
                },
            )
        }
        None => {
            let (options, state) = rp(mfa)?
                .start_discoverable_authentication()
                .map_err(|e| e.to_string())?;
            let mut options = serde_json::to_value(options).map_err(|e| e.to_string())?;
            // webauthn-rs asks for conditional mediation (autofill); the page asks on a button
            // press instead, which every browser supports.
            if let Some(map) = options.as_object_mut() {
                map.remove("mediation");
            }
            (options, SignIn::Discoverable { state })
        }
    };
    let challenge = Challenge {
        key: challenge_key(owner, SIGN_IN),
        user: user.unwrap_or_default().to_string(),
        data: serde_json::to_value(&state).map_err(|e| e.to_string())?,
        expires: now + lifetime,
    };
    Ok(Some((options.to_string(), Write::PutChallenge(challenge))))
}

/// Finishes a sign-in ceremony with the browser's answer. On success returns the user id and
/// the writes (challenge spent, counter recorded).
pub fn finish_sign_in(
    mfa: &Mfa,
    store: &dyn Store,
    owner: &str,
    answer: &str,
    now: u64,
) -> Result<Result<(String, Vec<Write>), String>, String> {
    let key = challenge_key(owner, SIGN_IN);
    let Some(sign_in) = store
        .challenge(&key, now)
        .map_err(|e| e.to_string())?
        .and_then(|c| challenge_data::<SignIn>(&c))
    else {
        return Ok(Err(
            "this passkey request has expired or was used; try again".into(),
        ));
    };
    let Ok(credential) = serde_json::from_str::<PublicKeyCredential>(answer) else {
        return Ok(Err("the browser's passkey answer was not understood".into()));
    };
    let (user, result) = match sign_in {
        SignIn::User { user, state } => {
            let result = rp(mfa)?.finish_passkey_authentication(&credential, &state);
            (user, result)
        }
        SignIn::Discoverable { state } => {
            let Ok((handle, credential_id)) =
                rp(mfa)?.identify_discoverable_authentication(&credential)
            else {
                return Ok(Err("this passkey does not say whose it is".into()));
            };
            let Some(user) = store
                .user_by_handle(&handle.to_string())
                .map_err(|e| e.to_string())?
            else {
                return Ok(Err("this passkey is not registered here".into()));
            };
            let Some((_, passkey)) = passkeys(store, &user)?
                .into_iter()
                .find(|(_, p)| AsRef::<[u8]>::as_ref(p.cred_id()) == credential_id)
            else {
                return Ok(Err("this passkey is not registered here".into()));
            };
            // The v2 call takes webauthn-rs's internal credential type, which its public API
            // only exposes behind `danger-credential-internals`; this one takes the passkey.
            #[allow(deprecated)]
            let result = rp(mfa)?.finish_discoverable_authentication(
                &credential,
                state,
                &[DiscoverableKey::from(&passkey)],
            );
            (user, result)
        }
    };
    let result = match result {
        Ok(result) => result,
        Err(error) => {
            tracing::info!(%error, user, "passkey assertion refused");
            let why = match error {
                webauthn_rs::prelude::WebauthnError::CredentialPossibleCompromise => {
                    "this passkey's signature counter went backwards, so it may have been copied; it was refused"
                }
                _ => "the passkey could not be verified; try again",
            };
            return Ok(Err(why.to_string()));
        }
    };
    let Some((factor, mut passkey)) = passkeys(store, &user)?
        .into_iter()
        .find(|(_, p)| p.cred_id() == result.cred_id())
    else {
        return Ok(Err("this passkey is not registered for this account".into()));
    };
    passkey.update_credential(&result);
    Ok(Ok((
        user.clone(),
        vec![
            Write::TakeChallenge(key),
            Write::UsePasskey {
                user,
                id: factor.id,
                passkey: serde_json::to_value(&passkey).map_err(|e| e.to_string())?,
                counter: result.counter(),
                now,
            },
        ],
    )))
}

/// Starts registering a passkey for `user`: the options for `navigator.credentials.create`
/// (JSON) and the challenge write. The credential is asked to be discoverable so it also
/// works for usernameless sign-in.
pub fn start_registration(
    mfa: &Mfa,
    store: &dyn Store,
    owner: &str,
    user: &User,
    now: u64,
    lifetime: u64,
) -> Result<(String, Write), String> {
    let existing = passkeys(store, &user.id)?
        .into_iter()
        .map(|(_, p)| p.cred_id().clone())
        .collect::<Vec<_>>();
    let display = if user.name.is_empty() {
        &user.username
    } else {
        &user.name
    };
    let (options, state) = rp(mfa)?
        .start_passkey_registration(
            user_handle(&user.id),
            &user.username,
            display,
            Some(existing),
        )
        .map_err(|e| e.to_string())?;
    let mut options = serde_json::to_value(options).map_err(|e| e.to_string())?;
    // webauthn-rs leaves the resident-key choice to the authenticator; usernameless sign-in
    // needs a discoverable credential, so ask for one. The answer is verified the same way.
    if let Some(selection) = options
        .pointer_mut("/publicKey/authenticatorSelection")
        .and_then(|s| s.as_object_mut())
    {
        selection.insert("residentKey".into(), "required".into());
        selection.insert("requireResidentKey".into(), true.into());
    }
    let challenge = Challenge {
        key: challenge_key(owner, REGISTER),
        user: user.id.clone(),
        data: serde_json::to_value(&state).map_err(|e| e.to_string())?,
        expires: now + lifetime,
    };
    Ok((options.to_string(), Write::PutChallenge(challenge)))
}

/// Finishes a registration with the browser's answer: the new passkey factor and the spent
/// challenge, or why not.
pub fn finish_registration(
    mfa: &Mfa,
    store: &dyn Store,
    owner: &str,
    user: &User,
    answer: &str,
    label: &str,
    now: u64,
) -> Result<Checked, String> {
    let key = challenge_key(owner, REGISTER);
    let Some(state) = user_challenge::<PasskeyRegistration>(store, &key, &user.id, now)? else {
        return Ok(Checked::Refused(
            "this passkey request has expired; try again".into(),
        ));
    };
    let Ok(credential) = serde_json::from_str::<RegisterPublicKeyCredential>(answer) else {
        return Ok(Checked::Refused(
            "the browser's passkey answer was not understood".into(),
        ));
    };
    let passkey = match rp(mfa)?.finish_passkey_registration(&credential, &state) {
        Ok(passkey) => passkey,
        Err(error) => {
            tracing::info!(%error, user = user.id, "passkey registration refused");
            return Ok(Checked::Refused(
                "the passkey could not be registered; try again".into(),
            ));
        }
    };
    let factor = Factor {
        id: random_token(9),
        user: user.id.clone(),
        kind: FactorKind::Passkey,
        label: if label.trim().is_empty() {
            "Passkey".into()
        } else {
            label.trim().chars().take(64).collect()
        },
        created: now,
        last_used: 0,
        sealed_secret: None,
        last_step: 0,
        credential_id: Some(b64url(AsRef::<[u8]>::as_ref(passkey.cred_id()))),
        passkey: Some(serde_json::to_value(&passkey).map_err(|e| e.to_string())?),
        counter: 0,
        user_handle: Some(user_handle(&user.id).to_string()),
        code_hashes: Vec::new(),
    };
    Ok(Checked::Passed(vec![
        Write::TakeChallenge(key),
        Write::PutFactor(factor),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relying_party_follows_the_issuer_host() {
        assert!(relying_party("http://localhost:8080").is_ok());
        assert!(relying_party("https://id.example.com").is_ok());
        assert!(relying_party("not a url").is_err());
    }

    #[test]
    fn user_handles_are_stable_and_distinct() {
        assert_eq!(user_handle("a"), user_handle("a"));
        assert_ne!(user_handle("a"), user_handle("b"));
        let _ = random_token(1);
    }
}
