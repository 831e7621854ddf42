//! The engine's read-only view of the store ([`idflow_engine::Directory`]).

use idflow_engine::{Directory, UserView};

use crate::store::Store;

/// Looks users up in the store for the engine, as of one instant (for lock expiry).
pub struct StoreDirectory<'a> {
    store: &'a dyn Store,
    now: u64,
}

impl<'a> StoreDirectory<'a> {
    /// A directory over `store` at time `now`.
    pub fn new(store: &'a dyn Store, now: u64) -> Self {
        StoreDirectory { store, now }
    }
}

impl Directory for StoreDirectory<'_> {
    fn linked_user(&self, idp: &str, subject: &str) -> Option<UserView> {
        let found = self
            .store
            .linked_user(idp, subject)
            .and_then(|id| match id {
                Some(id) => self.store.user(&id),
                None => Ok(None),
            });
        match found {
            Ok(user) => user.and_then(|u| crate::mfa::user_view(self.store, &u, self.now).ok()),
            Err(error) => {
                // As for lookups below: an error reads as "not linked", which JIT rules then
                // decide on, never as someone else's account.
                tracing::error!(%error, "link lookup failed");
                None
            }
        }
    }

    fn find_user(&self, attribute: &str, value: &str) -> Option<UserView> {
        let found = match attribute {
            "email" | "username" => self.store.user_by_login(value),
            "id" => self.store.user(value),
            _ => Ok(None),
        };
        match found {
            Ok(user) => user
                .filter(|u| attribute != "email" || u.email.eq_ignore_ascii_case(value))
                .and_then(|u| crate::mfa::user_view(self.store, &u, self.now).ok()),
            Err(error) => {
                // The engine's lookups cannot fail; a store error reads as "no such user".
                // That denies a login or a link; for a sign-up's checks that a name is free,
                // the store's own uniqueness of usernames and addresses still refuses the
                // account.
                tracing::error!(%error, "directory lookup failed");
                None
            }
        }
    }
}
