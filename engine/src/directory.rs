//! What the engine may ask the store, read-only: which local user an upstream account is linked
//! to, and which user has an attribute value (for JIT `match`). The server implements it over
//! the store; scenario tests over fixtures. Keeping it a trait keeps the engine free of I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::UserView;

/// Read-only lookups the engine needs during a login.
pub trait Directory {
    /// The local user an upstream account (`idp`, `subject`) is linked to.
    fn linked_user(&self, idp: &str, subject: &str) -> Option<UserView>;
    /// The user whose `attribute` (`email`, `username`, or a custom attribute) equals `value`.
    fn find_user(&self, attribute: &str, value: &str) -> Option<UserView>;
}

/// An in-memory directory: the users and links a scenario file declares.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Fixtures {
    /// Users in the store.
    pub users: Vec<UserView>,
    /// Upstream links: `idp` → upstream subject → local user id.
    pub links: BTreeMap<String, BTreeMap<String, String>>,
}

impl Directory for Fixtures {
    fn linked_user(&self, idp: &str, subject: &str) -> Option<UserView> {
        let id = self.links.get(idp)?.get(subject)?;
        self.users.iter().find(|u| &u.id == id).cloned()
    }

    fn find_user(&self, attribute: &str, value: &str) -> Option<UserView> {
        self.users
            .iter()
            .find(|u| match attribute {
                "email" => u.email.eq_ignore_ascii_case(value),
                "username" => u.username == value,
                "id" => u.id == value,
                other => u.attributes.get(other).and_then(|v| v.as_str()) == Some(value),
            })
            .cloned()
    }
}
