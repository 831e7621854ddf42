//! What a person choosing an account's name and password during a login (a sign-up, a JIT
//! prompt) is held to, in one place so both pages hold them to the same.

use crate::app::App;

/// Longest username accepted.
pub const MAX_USERNAME: usize = 64;

/// The sentence for a username that [`check_username`] refuses.
pub const USERNAME_RULE: &str =
    "A username is at most 64 letters, digits, dots, dashes or underscores.";

/// Whether `name` is a username a person may choose: letters and digits of any script, `.`,
/// `-` and `_`. No spaces, no `@` (a login name with one would read as an email address), and
/// none of Unicode's invisible or direction-changing characters, which could make one name
/// look like another (`admin\u{200b}`) in the console and the audit log.
pub fn check_username(name: &str) -> Result<(), &'static str> {
    let allowed = |c: char| c.is_alphanumeric() || matches!(c, '.' | '-' | '_');
    if name.is_empty() || name.chars().count() > MAX_USERNAME || !name.chars().all(allowed) {
        return Err(USERNAME_RULE);
    }
    Ok(())
}

/// Why a chosen password was not hashed.
pub enum PasswordProblem {
    /// Tell the person (two passwords differ, the policy refuses it).
    Again(String),
    /// The server could not hash it (logged, a 500 page).
    Broken(String),
}

/// The hash of the password a person chose (typed twice), made on the bounded hashing threads
/// after the policy's checks.
pub async fn new_password_hash(
    app: &App,
    password: &str,
    repeated: &str,
) -> Result<String, PasswordProblem> {
    if password != repeated {
        return Err(PasswordProblem::Again(
            "The two passwords are not the same.".into(),
        ));
    }
    match app.password_pool.hash(password.to_string()).await {
        Ok(hash) => Ok(hash),
        Err(idflow_authenticators::PasswordError::BadParameters(why)) => {
            Err(PasswordProblem::Broken(why))
        }
        Err(why) => Err(PasswordProblem::Again(super::render::sentence(
            &why.to_string(),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_visible_characters_without_spaces_or_at_signs() {
        for good in ["carla", "Ana-María", "j.smith_2", "李雷"] {
            assert!(check_username(good).is_ok(), "{good}");
        }
        let long = "c".repeat(MAX_USERNAME + 1);
        for bad in [
            "",
            "carla diaz",
            "carla@shop",
            "admin\u{200b}",
            "evil\u{202e}nimda",
            "tab\tname",
            long.as_str(),
        ] {
            assert!(check_username(bad).is_err(), "{bad:?}");
        }
    }
}
