//! Sign-up codes: a `register` state with `verify_email` creates the account only once the
//! person types back a code sent to the address they gave. What they filled in waits with the
//! code (the password already hashed) in a challenge of the login, valid for `[mfa]
//! email_code_seconds`.
//!
//! An address that already has an account gets a message saying so instead of a code, and the
//! page looks the same: signing up must not tell a stranger which addresses have accounts.
//! Sending is limited like email sign-in codes, per address (counted apart from sign-in codes,
//! and with any `+tag` dropped, so that sign-up mail cannot be multiplied with tags or used to
//! throttle someone's own sign-in) and per client.

use std::collections::BTreeMap;

use idflow_authenticators::email_code::{self, CodeError};
use serde::{Deserialize, Serialize};

use super::email_otp::{NotSent, admit_mail, mask};
use super::{Mfa, challenge_data, challenge_key};
use crate::mail::Mail;
use crate::store::{Challenge, Store, Write};

/// Purpose of a sign-up's challenge key.
pub const PURPOSE: &str = "signup";

/// Wrong codes one emailed code survives, whatever the state's `attempts` (which a person can
/// start again by starting the sign-up again; the code cannot).
pub const MAX_TRIES: u32 = 5;

/// What a person filled in on a `register` page, waiting for the emailed code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Details {
    /// The id the account will have.
    pub id: String,
    /// The chosen username.
    pub username: String,
    /// The address the code went to.
    pub email: String,
    /// The profile attributes typed.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// The chosen password's hash.
    pub password_hash: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Waiting {
    details: Details,
    /// The code's hash, salted with the challenge key; empty when the address already has an
    /// account (no code was sent, so none can pass).
    hash: String,
    #[serde(default)]
    tries: u32,
}

/// The details waiting for a code in login `owner`, if any, and where the code went (masked).
pub fn waiting(store: &dyn Store, owner: &str, now: u64) -> Option<(Details, String)> {
    let challenge = store
        .challenge(&challenge_key(owner, PURPOSE), now)
        .ok()
        .flatten()?;
    let waiting = challenge_data::<Waiting>(&challenge)?;
    let to = mask(&waiting.details.email);
    Some((waiting.details, to))
}

/// Emails a code for `details` (or, when `address_taken`, a note that the address has an
/// account) and returns the challenge that keeps them waiting for it.
pub async fn send(
    mfa: &Mfa,
    owner: &str,
    details: Details,
    address_taken: bool,
    issuer: &str,
    ip: &str,
    now: u64,
) -> Result<Write, NotSent> {
    let settings = &mfa.settings;
    admit_mail(
        mfa,
        &format!("signup to {}", mailbox(&details.email)),
        ip,
        now,
    )?;
    let key = challenge_key(owner, PURPOSE);
    let mut random = [0u8; 4];
    aws_lc_rs::rand::fill(&mut random).map_err(|_| NotSent::Failed)?;
    let code = email_code::from_random(random);
    let minutes = settings.email_code_seconds.div_ceil(60);
    let mail = if address_taken {
        Mail {
            to: details.email.clone(),
            subject: "You already have an account".into(),
            body: format!(
                "Someone, perhaps you, tried to create an account at {issuer} with this address.\n\nThere already is an account with this address: sign in with it instead. If this was not you, ignore this message.\n"
            ),
        }
    } else {
        Mail {
            to: details.email.clone(),
            subject: format!("Your code to create an account: {code}"),
            body: format!(
                "Your code to create an account at {issuer} is {code}\n\nIt is valid for {minutes} minutes and works once. If you did not ask for an account, ignore this message.\n"
            ),
        }
    };
    if let Err(error) = mfa.mailer.send(&mail).await {
        tracing::error!(%error, "sending a sign-up code failed");
        return Err(NotSent::Failed);
    }
    let waiting = Waiting {
        details,
        hash: if address_taken {
            String::new()
        } else {
            email_code::hash(&code, &key)
        },
        tries: 0,
    };
    Ok(Write::PutChallenge(Challenge {
        key,
        user: String::new(),
        data: serde_json::to_value(&waiting).map_err(|_| NotSent::Failed)?,
        expires: now + settings.email_code_seconds,
    }))
}

/// The mailbox an address delivers to, for counting mail: lower case, without a `+tag`.
fn mailbox(address: &str) -> String {
    let address = address.to_lowercase();
    match address.split_once('@') {
        Some((local, domain)) => {
            let local = local.split_once('+').map_or(local, |(base, _)| base);
            format!("{local}@{domain}")
        }
        None => address,
    }
}

/// What checking a typed sign-up code found.
#[derive(Debug)]
pub enum CodeCheck {
    /// The code is right: create the account from these details, spending the code with
    /// [`spend`] in the same transaction.
    Passed(Details),
    /// It is not: tell the person this; the writes count the try (or void the code).
    Refused(String, Vec<Write>),
}

/// The write that spends the code of login `owner` (and the details waiting with it).
pub fn spend(owner: &str) -> Write {
    Write::TakeChallenge(challenge_key(owner, PURPOSE))
}

/// Checks a typed code for login `owner`.
pub fn check(store: &dyn Store, owner: &str, typed: &str, now: u64) -> Result<CodeCheck, String> {
    let key = challenge_key(owner, PURPOSE);
    let Some(challenge) = store.challenge(&key, now).map_err(|e| e.to_string())? else {
        return Ok(CodeCheck::Refused(
            "the code has expired; start again".into(),
            Vec::new(),
        ));
    };
    let Some(mut waiting) = challenge_data::<Waiting>(&challenge) else {
        return Ok(CodeCheck::Refused("start again".into(), Vec::new()));
    };
    // An address that has an account was sent no code: its empty hash is checked as a hash
    // no code matches, so every answer (a malformed code too) is the same as for a free one.
    let decoy;
    let hash = if waiting.hash.is_empty() {
        decoy = email_code::hash("no code was sent", &key);
        &decoy
    } else {
        &waiting.hash
    };
    let verdict = email_code::verify(typed, &key, hash);
    match verdict {
        Ok(()) => Ok(CodeCheck::Passed(waiting.details)),
        Err(CodeError::Format) => Ok(CodeCheck::Refused(
            "the code in the email is six digits".into(),
            Vec::new(),
        )),
        Err(CodeError::Wrong) => {
            waiting.tries += 1;
            if waiting.tries >= MAX_TRIES {
                return Ok(CodeCheck::Refused(
                    "too many wrong codes; start again".into(),
                    vec![Write::TakeChallenge(key)],
                ));
            }
            let again = Challenge {
                data: serde_json::to_value(&waiting).map_err(|e| e.to_string())?,
                ..challenge
            };
            Ok(CodeCheck::Refused(
                "that code is wrong; check the latest email".into(),
                vec![Write::PutChallenge(again)],
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (crate::store::EmbeddedStore, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("idflow-signup-{}", crate::crypto::random_token(6)));
        (crate::store::EmbeddedStore::open(&dir).expect("store"), dir)
    }

    fn details() -> Details {
        Details {
            id: "n1".into(),
            username: "nina".into(),
            email: "nina@example.com".into(),
            attributes: BTreeMap::new(),
            password_hash: "$argon2id$x".into(),
        }
    }

    fn put(store: &dyn Store, hash: String) {
        let key = challenge_key("login", PURPOSE);
        let waiting = Waiting {
            details: details(),
            hash,
            tries: 0,
        };
        let challenge = Challenge {
            key,
            user: String::new(),
            data: serde_json::to_value(&waiting).expect("json"),
            expires: 100,
        };
        store
            .commit(vec![Write::PutChallenge(challenge)])
            .expect("put");
    }

    #[test]
    fn the_right_code_passes_once_with_the_details_and_wrong_ones_count() {
        let (store, dir) = store();
        let key = challenge_key("login", PURPOSE);
        put(&store, email_code::hash("123456", &key));
        let CodeCheck::Refused(why, writes) = check(&store, "login", "000000", 1).expect("check")
        else {
            panic!("a wrong code passed");
        };
        assert!(why.contains("wrong"), "{why}");
        store.commit(writes).expect("count");
        let CodeCheck::Passed(found) = check(&store, "login", "123456", 1).expect("check") else {
            panic!("the right code was refused");
        };
        assert_eq!(found, details());
        store.commit(vec![spend("login")]).expect("spend");
        assert!(matches!(
            check(&store, "login", "123456", 1).expect("check"),
            CodeCheck::Refused(..)
        ));
        let _ = std::fs::remove_dir_all(dir);
    }

    fn refusal(store: &dyn Store, typed: &str) -> String {
        match check(store, "login", typed, 1).expect("check") {
            CodeCheck::Refused(why, writes) => {
                store.commit(writes).expect("count");
                why
            }
            CodeCheck::Passed(_) => panic!("{typed} passed"),
        }
    }

    #[test]
    fn no_code_passes_for_an_address_that_has_an_account_and_the_answers_are_the_same() {
        let (taken, taken_dir) = store();
        put(&taken, String::new());
        let (free, free_dir) = store();
        put(
            &free,
            email_code::hash("123456", &challenge_key("login", PURPOSE)),
        );
        for typed in [
            "x", "12345", "000000", "999999", "111111", "222222", "333333",
        ] {
            assert_eq!(refusal(&taken, typed), refusal(&free, typed), "{typed}");
        }
        let _ = std::fs::remove_dir_all(taken_dir);
        let _ = std::fs::remove_dir_all(free_dir);
    }

    #[test]
    fn mail_is_counted_per_mailbox_whatever_the_tag_or_case() {
        assert_eq!(mailbox("Victim+1@Example.com"), "victim@example.com");
        assert_eq!(mailbox("victim@example.com"), "victim@example.com");
    }
}
