//! HTTP Basic credentials for the machine-facing APIs (SCIM, the admin API): a password guess
//! like any other. The address and name are throttled as at the login page, only a user the
//! caller admits (one holding the right privilege) can pass, and whether a name exists, is not
//! admitted or has another password, the answer is the same after the same argon2id work.

use base64::Engine as _;

use crate::app::App;
use crate::store::User;

/// Why Basic credentials did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BasicRefusal {
    /// Not Basic credentials, or not decodable.
    Missing,
    /// Too many failures from this address or for this name: try later.
    Throttled,
    /// No such user, not admitted, disabled, locked or another password: one answer for all.
    Invalid,
    /// The store failed.
    Internal(String),
}

/// The user `credentials` (the part after `Basic `) name, if the password is theirs and
/// `admit` accepts them.
pub async fn verify(
    app: &App,
    credentials: &str,
    ip: &str,
    now: u64,
    admit: impl Fn(&User) -> Result<bool, String>,
) -> Result<User, BasicRefusal> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or(BasicRefusal::Missing)?;
    let (name, password) = decoded.split_once(':').ok_or(BasicRefusal::Missing)?;
    let key = name.trim().to_lowercase();
    if app.throttle.check(ip, Some(&key), now).is_err() {
        return Err(BasicRefusal::Throttled);
    }
    let user = app
        .store
        .user_by_login(name)
        .map_err(|e| BasicRefusal::Internal(e.to_string()))?
        .filter(|u| !u.disabled && !u.locked_at(now));
    let user = match user {
        Some(user) if admit(&user).map_err(BasicRefusal::Internal)? => Some(user),
        _ => None,
    };
    let hash = user.as_ref().and_then(|u| u.password_hash.clone());
    // The decoy hash runs when there is no such user (or it is not admitted): the answer takes
    // as long either way.
    let verified = app.password_pool.verify(password.to_string(), hash).await;
    match user.filter(|_| verified) {
        Some(user) => {
            app.throttle.passed(ip, &key);
            Ok(user)
        }
        None => {
            app.throttle.failed(ip, Some(&key), now);
            Err(BasicRefusal::Invalid)
        }
    }
}

/// The privileges `user`'s roles give.
pub fn privileges(app: &App, user: &User) -> Result<Vec<String>, String> {
    let mut all = Vec::new();
    for role in &user.roles {
        if let Some(found) = app.store.role(role).map_err(|e| e.to_string())? {
            all.extend(found.privileges);
        }
    }
    Ok(all)
}

/// Whether `privileges` include `wanted` (or every privilege, `*`).
pub fn grants(privileges: &[String], wanted: &str) -> bool {
    privileges.iter().any(|p| p == "*" || p == wanted)
}
