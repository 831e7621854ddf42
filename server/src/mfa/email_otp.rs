//! Email one-time codes: sent on request (a button, not a page load, so reloading does not mail
//! again), valid for `[mfa] email_code_seconds`, used once, and limited per user to one per
//! `email_resend_seconds` and `email_codes_per_hour` an hour. Asking for a code for an address
//! that has no account looks exactly like asking for one that has.

use idflow_authenticators::email_code::{self, CodeError};
use serde::{Deserialize, Serialize};

use super::{Checked, Mfa, challenge_data, challenge_key};
use crate::mail::Mail;
use crate::store::{Challenge, Store, User, Write};

/// Purpose of a code's challenge key.
pub const PURPOSE: &str = "email-otp";

#[derive(Debug, Serialize, Deserialize)]
struct Sent {
    /// Hash of the code, salted with the challenge key.
    hash: String,
    /// The masked address it went to, for the page.
    to: String,
    /// What the person typed to ask for it (empty when the flow knew the user), so "send a
    /// new code" asks for the same account.
    #[serde(default)]
    typed: String,
    /// Wrong codes typed so far; at [`MAX_TRIES`] the code is void.
    #[serde(default)]
    tries: u32,
}

/// Codes one client address may ask for per hour, as a multiple of the per-user limit (a
/// household or office shares an address).
pub const PER_CLIENT_FACTOR: u32 = 5;

/// Wrong codes one emailed code survives: with six digits, five guesses have a one in 200,000
/// chance, and a new code needs a new email (rate-limited).
pub const MAX_TRIES: u32 = 5;

/// Why no code was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotSent {
    /// Too soon after the last one, or too many this hour: wait this many seconds.
    Throttled(u64),
    /// The mail server refused (logged).
    Failed,
}

/// `alice@example.com` shown as `a••••@example.com`.
pub fn mask(address: &str) -> String {
    match address.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}••••@{domain}")
        }
        None => "your address".into(),
    }
}

/// The masked address a code for `owner` went to, if one is pending.
pub fn pending(store: &dyn Store, owner: &str, now: u64) -> Option<String> {
    store
        .challenge(&challenge_key(owner, PURPOSE), now)
        .ok()
        .flatten()
        .and_then(|c| challenge_data::<Sent>(&c))
        .map(|sent| sent.to)
}

/// What the person typed when asking for the pending code of `owner`, if any.
pub fn asked_for(store: &dyn Store, owner: &str, now: u64) -> Option<String> {
    store
        .challenge(&challenge_key(owner, PURPOSE), now)
        .ok()
        .flatten()
        .and_then(|c| challenge_data::<Sent>(&c))
        .map(|sent| sent.typed)
        .filter(|typed| !typed.is_empty())
}

/// What the page says the code went to. Only an address the person typed themselves, or the
/// address of a user the flow already identified, is shown (masked): showing the address behind
/// a typed username would tell whether that username exists.
fn shown_recipient(typed: &str, recipient: Option<&str>) -> String {
    if typed.contains('@') {
        mask(typed)
    } else if typed.is_empty() {
        recipient.map(mask).unwrap_or_else(|| "your address".into())
    } else {
        "the email address of that account, if there is one".into()
    }
}

/// Counts one code mail for `limit_key` (what was asked for) from client `ip`, or says how long
/// to wait: one per `email_resend_seconds` and `email_codes_per_hour` an hour for the key, and
/// [`PER_CLIENT_FACTOR`] times that per client (asking for codes for ever new names from one
/// place is refused too).
pub fn admit_mail(mfa: &Mfa, limit_key: &str, ip: &str, now: u64) -> Result<(), NotSent> {
    let settings = &mfa.settings;
    let recent_key = format!("{limit_key} recent");
    let client_key = format!("email ip {}", crate::throttle::client_block(ip));
    mfa.email_sends
        .admit(
            &[
                (&recent_key, settings.email_resend_seconds, 1),
                (limit_key, 3600, settings.email_codes_per_hour),
                (
                    &client_key,
                    3600,
                    settings
                        .email_codes_per_hour
                        .saturating_mul(PER_CLIENT_FACTOR),
                ),
            ],
            now,
        )
        .map_err(NotSent::Throttled)
}

/// Sends a code to `user` (when there is one with an address) for `owner`. Returns the
/// challenge write: stored even when there is no user, so that the page and the timing are the
/// same either way, and any code typed then simply fails.
pub async fn send(
    mfa: &Mfa,
    owner: &str,
    user: Option<&User>,
    typed: &str,
    ip: &str,
    now: u64,
) -> Result<Write, NotSent> {
    let settings = &mfa.settings;
    let recipient = user.map(|u| u.email.clone()).filter(|e| !e.is_empty());
    // Limited by what was asked for: the text typed, or the user the flow identified. Keying
    // typed names by the account they name would answer differently for names that have one.
    let limit_key = if typed.is_empty() {
        format!(
            "email user {}",
            user.map(|u| u.id.as_str()).unwrap_or_default()
        )
    } else {
        format!("email typed {}", typed.to_lowercase())
    };
    admit_mail(mfa, &limit_key, ip, now)?;
    let key = challenge_key(owner, PURPOSE);
    let mut random = [0u8; 4];
    aws_lc_rs::rand::fill(&mut random).map_err(|_| NotSent::Failed)?;
    let code = email_code::from_random(random);
    if let Some(address) = &recipient {
        let minutes = settings.email_code_seconds.div_ceil(60);
        let mail = Mail {
            to: address.clone(),
            subject: format!("Your sign-in code: {code}"),
            body: format!(
                "Your sign-in code is {code}\n\nIt is valid for {minutes} minutes and works once. If you did not try to sign in, ignore this message.\n"
            ),
        };
        if let Err(error) = mfa.mailer.send(&mail).await {
            tracing::error!(%error, "sending an email code failed");
            return Err(NotSent::Failed);
        }
    }
    let sent = Sent {
        hash: email_code::hash(&code, &key),
        to: shown_recipient(typed, recipient.as_deref()),
        typed: typed.to_string(),
        tries: 0,
    };
    Ok(Write::PutChallenge(Challenge {
        key,
        user: user.map(|u| u.id.clone()).unwrap_or_default(),
        data: serde_json::to_value(&sent).map_err(|_| NotSent::Failed)?,
        expires: now + settings.email_code_seconds,
    }))
}

/// Checks a typed code for `owner`. A pass spends the code and names the user it was sent to;
/// a wrong code counts against it (the writes returned record that) and the fifth voids it.
pub fn check(
    store: &dyn Store,
    owner: &str,
    typed: &str,
    now: u64,
) -> Result<(Checked, Option<String>, Vec<Write>), String> {
    let key = challenge_key(owner, PURPOSE);
    let refused = |why: &str| Checked::Refused(why.to_string());
    let Some(challenge) = store.challenge(&key, now).map_err(|e| e.to_string())? else {
        return Ok((
            refused("no code is waiting, or it has expired; ask for a new one"),
            None,
            Vec::new(),
        ));
    };
    let Some(mut sent) = challenge_data::<Sent>(&challenge) else {
        return Ok((refused("ask for a new code"), None, Vec::new()));
    };
    let user = (!challenge.user.is_empty()).then(|| challenge.user.clone());
    match email_code::verify(typed, &key, &sent.hash) {
        Ok(()) if user.is_some() => Ok((
            Checked::Passed(vec![Write::TakeChallenge(key)]),
            user,
            Vec::new(),
        )),
        Err(CodeError::Format) => Ok((
            refused("the code in the email is six digits"),
            user,
            Vec::new(),
        )),
        Ok(()) | Err(CodeError::Wrong) => {
            sent.tries += 1;
            if sent.tries >= MAX_TRIES {
                return Ok((
                    refused("too many wrong codes; ask for a new one"),
                    user,
                    vec![Write::TakeChallenge(key)],
                ));
            }
            let again = Challenge {
                data: serde_json::to_value(&sent).map_err(|e| e.to_string())?,
                ..challenge
            };
            Ok((
                refused("that code is wrong; check the latest email"),
                user,
                vec![Write::PutChallenge(again)],
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_dies_after_five_wrong_tries_and_passes_once() {
        let dir = std::env::temp_dir().join(format!(
            "idflow-email-otp-{}",
            crate::crypto::random_token(6)
        ));
        let store = crate::store::EmbeddedStore::open(&dir).expect("store");
        let key = challenge_key("login", PURPOSE);
        let sent = Sent {
            hash: email_code::hash("123456", &key),
            to: String::new(),
            typed: String::new(),
            tries: 0,
        };
        let challenge = Challenge {
            key: key.clone(),
            user: "u1".into(),
            data: serde_json::to_value(&sent).expect("json"),
            expires: 100,
        };
        store
            .commit(vec![Write::PutChallenge(challenge)])
            .expect("put");
        for attempt in 1..=MAX_TRIES {
            let (checked, user, writes) = check(&store, "login", "000000", 1).expect("check");
            assert!(matches!(checked, Checked::Refused(_)), "{attempt}");
            assert_eq!(user.as_deref(), Some("u1"));
            store.commit(writes).expect("count");
        }
        // The right code now finds nothing: five wrong tries voided it.
        let (checked, _, _) = check(&store, "login", "123456", 1).expect("check");
        assert!(
            matches!(&checked, Checked::Refused(why) if why.contains("no code is waiting")),
            "{checked:?}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn masks_the_local_part() {
        assert_eq!(mask("alice@example.com"), "a••••@example.com");
        assert_eq!(mask("nobody"), "your address");
    }

    #[test]
    fn a_typed_username_never_shows_whether_it_has_an_address() {
        let known = shown_recipient("bob", Some("bob@example.com"));
        let unknown = shown_recipient("nobody", None);
        assert_eq!(known, unknown);
        assert_eq!(
            shown_recipient("bob@example.com", None),
            "b••••@example.com"
        );
        assert_eq!(
            shown_recipient("", Some("bob@example.com")),
            "b••••@example.com"
        );
    }
}
