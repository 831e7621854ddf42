//! What every store backend must do, as test functions over `&dyn Store`: the embedded store
//! runs them always, the PostgreSQL store against the database `IDFLOW_TEST_POSTGRES` names
//! (`scripts/postgres` starts one). One suite, so the backends cannot drift apart.

use crate::store::{
    AuditEvent, AuthCode, Authentication, Challenge, Factor, IssuedByCode, Login, Redemption,
    RefreshToken, Role, Rotation, Session, Store, StoreError, User, Write,
};

/// Every test of the suite, for [`suite!`]-style instantiation by each backend.
#[macro_export]
macro_rules! store_conformance {
    ($make:expr) => {
        $crate::store_conformance!(@each $make;
            a_totp_step_passes_once_and_never_goes_back,
            recovery_codes_strike_once_and_passkey_counters_only_rise,
            deleting_a_user_frees_their_names_and_removes_factors_links_and_sessions,
            a_replacement_applies_only_over_the_record_it_was_made_from,
            deleting_a_users_sessions_keeps_the_one_asked_and_other_users,
            a_challenge_is_taken_once_and_expires_and_a_handle_keeps_its_owner,
            usernames_and_emails_are_unique_and_case_insensitive,
            a_username_cannot_shadow_another_users_email,
            a_login_advances_only_from_the_state_a_request_read,
            a_failed_batch_writes_nothing,
            failures_lock_at_the_threshold_in_the_same_write,
            a_code_redeems_once_and_its_reuse_revokes_what_it_issued,
            an_expired_code_is_invalid,
            refresh_rotation_spends_and_reuse_revokes_the_family,
            refresh_tokens_expire,
            the_audit_log_reads_newest_first,
            concurrent_writes_to_one_record_all_count,
            a_code_redeemed_by_many_at_once_is_fresh_once,
            one_worker_at_a_time_holds_an_outbox_event,
            a_user_being_delivered_waits_for_the_worker_delivering_it,
            windows_count_until_they_end_and_admit_all_or_nothing,
        );
    };
    (@each $make:expr; $($name:ident,)*) => {
        $(
            #[test]
            fn $name() {
                if let Some(store) = $make() {
                    $crate::store::conformance::$name(&store);
                }
            }
        )*
    };
}

/// Starts a live refresh family the way a code redemption does.
fn start_family(store: &dyn Store, family: &str, expires: u64) {
    let key = format!("family-start-{family}");
    store
        .commit(vec![Write::PutCode(code(&key, expires))])
        .expect("code");
    let issued = IssuedByCode {
        family: Some((family.to_string(), expires)),
        access: (format!("jti-{family}"), expires),
    };
    assert!(matches!(
        store.redeem_code(&key, 0, &issued).expect("redeem"),
        Redemption::Fresh(_)
    ));
}

/// A factor of `user`.
fn factor(user: &str, id: &str, kind: crate::store::FactorKind) -> Factor {
    Factor {
        id: id.into(),
        user: user.into(),
        kind,
        label: String::new(),
        created: 1,
        last_used: 0,
        sealed_secret: None,
        last_step: 0,
        passkey: None,
        credential_id: None,
        counter: 0,
        user_handle: None,
        code_hashes: Vec::new(),
    }
}

/// What every store must do: a totp step passes once and never goes back.
pub fn a_totp_step_passes_once_and_never_goes_back(store: &dyn Store) {
    let totp = factor("u1", "f1", crate::store::FactorKind::Totp);
    store.commit(vec![Write::PutFactor(totp)]).expect("put");
    let using = |step| Write::UseTotpStep {
        user: "u1".into(),
        id: "f1".into(),
        step,
        now: 5,
    };
    store.commit(vec![using(10)]).expect("first use");
    assert!(matches!(
        store.commit(vec![using(10)]),
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.commit(vec![using(9)]),
        Err(StoreError::Conflict(_))
    ));
    store.commit(vec![using(11)]).expect("a later step");
    assert_eq!(store.factors("u1").expect("factors")[0].last_step, 11);
}

/// What every store must do: recovery codes strike once and passkey counters only rise.
pub fn recovery_codes_strike_once_and_passkey_counters_only_rise(store: &dyn Store) {
    let mut codes = factor("u1", "r", crate::store::FactorKind::RecoveryCodes);
    codes.code_hashes = vec!["h1".into(), "h2".into()];
    let passkey = factor("u1", "p", crate::store::FactorKind::Passkey);
    store
        .commit(vec![Write::PutFactor(codes), Write::PutFactor(passkey)])
        .expect("put");
    let strike = || Write::UseRecoveryCode {
        user: "u1".into(),
        id: "r".into(),
        hash: "h1".into(),
        now: 2,
    };
    store.commit(vec![strike()]).expect("first use");
    assert!(matches!(
        store.commit(vec![strike()]),
        Err(StoreError::Conflict(_))
    ));
    let assert_with = |counter| Write::UsePasskey {
        user: "u1".into(),
        id: "p".into(),
        passkey: serde_json::json!({}),
        counter,
        now: 3,
    };
    store.commit(vec![assert_with(4)]).expect("counter rises");
    assert!(matches!(
        store.commit(vec![assert_with(4)]),
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.commit(vec![assert_with(1)]),
        Err(StoreError::Conflict(_))
    ));
    let factors = store.factors("u1").expect("factors");
    assert_eq!(
        factors.iter().find(|f| f.id == "p").map(|f| f.counter),
        Some(4)
    );
    assert_eq!(
        factors
            .iter()
            .find(|f| f.id == "r")
            .map(|f| f.code_hashes.clone()),
        Some(vec!["h2".to_string()])
    );
    // Another user's factors are a different range.
    assert!(store.factors("u").expect("factors").is_empty());
}

/// What every store must do: deleting a user frees their names and removes factors links and sessions.
pub fn deleting_a_user_frees_their_names_and_removes_factors_links_and_sessions(store: &dyn Store) {
    let mut ann = User::new("u1".into(), "ann".into(), 0);
    ann.email = "ann@example.com".into();
    let session = Session {
        key: "s1".into(),
        sid: "s1".into(),
        user: "u1".into(),
        auth_time: 1,
        amr: Vec::new(),
        acr: String::new(),
        claims: Default::default(),
        flow: String::new(),
        expires: u64::MAX,
        csrf: String::new(),
        steps: Vec::new(),
        identifier: String::new(),
        saml: Vec::new(),
    };
    store
        .commit(vec![
            Write::CreateUser(ann),
            Write::PutFactor(factor("u1", "f1", crate::store::FactorKind::Totp)),
            Write::LinkIdentity {
                idp: "google".into(),
                subject: "g-1".into(),
                user: "u1".into(),
            },
            Write::PutSession(session),
        ])
        .expect("setup");
    store
        .commit(vec![Write::DeleteUser("u1".into())])
        .expect("delete");
    assert_eq!(store.user("u1").expect("read"), None);
    assert!(store.factors("u1").expect("read").is_empty());
    assert_eq!(store.linked_user("google", "g-1").expect("read"), None);
    assert!(store.session("s1").expect("read").is_none());
    let again = User::new("u2".into(), "ANN@example.com".into(), 0);
    store
        .commit(vec![Write::CreateUser(again)])
        .expect("the name and address are free again");
    assert!(matches!(
        store.commit(vec![Write::DeleteUser("u1".into())]),
        Err(StoreError::Conflict(_))
    ));
}

/// What every store must do: a replacement applies only over the record it was made from.
pub fn a_replacement_applies_only_over_the_record_it_was_made_from(store: &dyn Store) {
    let ann = User::new("u1".into(), "ann".into(), 0);
    store
        .commit(vec![Write::CreateUser(ann.clone())])
        .expect("create");
    let mut renamed = ann.clone();
    renamed.username = "ann2".into();
    // Meanwhile an administrator grants a role.
    store
        .commit(vec![Write::GrantRole {
            user: "u1".into(),
            role: "approver".into(),
        }])
        .expect("grant");
    let stale = Write::ReplaceUser {
        user: renamed.clone(),
        expected: Box::new(ann),
    };
    assert!(matches!(
        store.commit(vec![stale]),
        Err(StoreError::Conflict(_))
    ));
    let current = store.user("u1").expect("read").expect("there");
    assert_eq!(
        current.roles,
        vec!["approver".to_string()],
        "the grant stays"
    );
    let mut fresh = current.clone();
    fresh.username = "ann2".into();
    store
        .commit(vec![Write::ReplaceUser {
            user: fresh,
            expected: Box::new(current),
        }])
        .expect("over the current record");
    assert!(store.user_by_login("ann2").expect("read").is_some());
}

/// What every store must do: deleting a users sessions keeps the one asked and other users.
pub fn deleting_a_users_sessions_keeps_the_one_asked_and_other_users(store: &dyn Store) {
    let session = |key: &str, user: &str| Session {
        key: key.into(),
        sid: key.into(),
        user: user.into(),
        auth_time: 1,
        amr: Vec::new(),
        acr: String::new(),
        claims: Default::default(),
        flow: String::new(),
        expires: u64::MAX,
        csrf: String::new(),
        steps: Vec::new(),
        identifier: String::new(),
        saml: Vec::new(),
    };
    store
        .commit(vec![
            Write::PutSession(session("a1", "alice")),
            Write::PutSession(session("a2", "alice")),
            Write::PutSession(session("b1", "bob")),
        ])
        .expect("put");
    store
        .commit(vec![Write::EndUserSessions {
            user: "alice".into(),
            except: Some("a2".into()),
        }])
        .expect("delete");
    assert!(store.session("a1").expect("read").is_none());
    assert!(store.session("a2").expect("read").is_some());
    assert!(store.session("b1").expect("read").is_some());
}

/// What every store must do: a challenge is taken once and expires and a handle keeps its owner.
pub fn a_challenge_is_taken_once_and_expires_and_a_handle_keeps_its_owner(store: &dyn Store) {
    let challenge = crate::store::Challenge {
        key: "login:passkey".into(),
        user: "u1".into(),
        data: serde_json::json!({ "state": 1 }),
        expires: 100,
    };
    store
        .commit(vec![Write::PutChallenge(challenge)])
        .expect("put");
    assert!(
        store
            .challenge("login:passkey", 99)
            .expect("read")
            .is_some()
    );
    assert!(
        store
            .challenge("login:passkey", 100)
            .expect("read")
            .is_none(),
        "expired"
    );
    store
        .commit(vec![Write::TakeChallenge("login:passkey".into())])
        .expect("taken");
    let seen = |expires| Challenge {
        key: "saml-assertion:a1".into(),
        user: String::new(),
        data: serde_json::Value::Null,
        expires,
    };
    let once = |expires, now| Write::RecordOnce {
        seen: seen(expires),
        now,
    };
    store.commit(vec![once(200, 100)]).expect("first sight");
    assert!(
        matches!(
            store.commit(vec![once(300, 150)]),
            Err(StoreError::Conflict(_))
        ),
        "a replay within the window is refused"
    );
    store
        .commit(vec![once(400, 250)])
        .expect("after its expiry the id may be recorded again");
    assert!(matches!(
        store.commit(vec![Write::TakeChallenge("login:passkey".into())]),
        Err(StoreError::Conflict(_))
    ));
    let mut mine = factor("u1", "p1", crate::store::FactorKind::Passkey);
    mine.user_handle = Some("handle-1".into());
    store.commit(vec![Write::PutFactor(mine)]).expect("put");
    assert_eq!(
        store.user_by_handle("handle-1").expect("read").as_deref(),
        Some("u1")
    );
    let mut theirs = factor("u2", "p2", crate::store::FactorKind::Passkey);
    theirs.user_handle = Some("handle-1".into());
    assert!(store.commit(vec![Write::PutFactor(theirs)]).is_err());
    // A credential id belongs to one account; removing the passkey frees it.
    let mut first = factor("u1", "c1", crate::store::FactorKind::Passkey);
    first.credential_id = Some("cred".into());
    store.commit(vec![Write::PutFactor(first)]).expect("put");
    let mut copy = factor("u3", "c3", crate::store::FactorKind::Passkey);
    copy.credential_id = Some("cred".into());
    assert!(matches!(
        store.commit(vec![Write::PutFactor(copy.clone())]),
        Err(StoreError::Conflict(_))
    ));
    store
        .commit(vec![Write::DeleteFactor {
            user: "u1".into(),
            id: "c1".into(),
        }])
        .expect("delete");
    store
        .commit(vec![Write::PutFactor(copy)])
        .expect("now free");
}

/// A sign-in for codes and tokens.
pub fn authentication() -> Authentication {
    Authentication {
        user: "u1".into(),
        sid: "s".into(),
        auth_time: 1,
        amr: vec!["pwd".into()],
        acr: "1".into(),
        claims: Default::default(),
    }
}

/// A refresh token of `family`.
pub fn refresh(key: &str, family: &str, expires: u64) -> RefreshToken {
    RefreshToken {
        key: key.into(),
        family: family.into(),
        client_id: "app".into(),
        scopes: vec!["openid".into()],
        authentication: authentication(),
        expires,
        spent: false,
    }
}

/// An authorization code.
fn code(key: &str, expires: u64) -> AuthCode {
    AuthCode {
        key: key.into(),
        request: Default::default(),
        authentication: authentication(),
        expires,
        redeemed: None,
    }
}

/// What every store must do: usernames and emails are unique and case insensitive.
pub fn usernames_and_emails_are_unique_and_case_insensitive(store: &dyn Store) {
    let mut alice = User::new("u1".into(), "Alice".into(), 0);
    alice.email = "alice@example.com".into();
    store
        .commit(vec![Write::CreateUser(alice.clone())])
        .expect("create");
    assert_eq!(
        store.user_by_login("alice").expect("read"),
        Some(alice.clone())
    );
    assert_eq!(
        store.user_by_login("ALICE@example.com").expect("read"),
        Some(alice.clone())
    );
    let twin = User::new("u2".into(), "alice".into(), 0);
    let error = store.commit(vec![Write::CreateUser(twin)]).unwrap_err();
    assert!(error.to_string().contains("taken"), "{error}");
    assert_eq!(
        store.user("u2").expect("read"),
        None,
        "the failed batch wrote nothing"
    );
    // Renaming releases the old name.
    alice.username = "alicia".into();
    store
        .commit(vec![Write::UpdateUser(alice)])
        .expect("update");
    assert!(store.user_by_login("alice").expect("read").is_none());
    assert!(store.user_by_login("alicia").expect("read").is_some());
}

/// What every store must do: a username cannot shadow another users email.
pub fn a_username_cannot_shadow_another_users_email(store: &dyn Store) {
    let mut alice = User::new("u1".into(), "alice".into(), 0);
    alice.email = "alice@example.com".into();
    store
        .commit(vec![Write::CreateUser(alice)])
        .expect("create");
    let shadow = User::new("u2".into(), "Alice@Example.com".into(), 0);
    assert!(store.commit(vec![Write::CreateUser(shadow)]).is_err());
    let mut bob = User::new("u3".into(), "bob".into(), 0);
    bob.email = "alice".into();
    assert!(store.commit(vec![Write::CreateUser(bob)]).is_err());
}

/// What every store must do: a login advances only from the state a request read.
pub fn a_login_advances_only_from_the_state_a_request_read(store: &dyn Store) {
    let login = |seq| Login {
        key: "k".into(),
        seq,
        browser: String::new(),
        csrf: String::new(),
        run: idflow_engine::Run::new("f", "v", "s", Default::default()),
        output: idflow_engine::Output::Denied {
            reason: String::new(),
        },
        authorize: None,
        saml: None,
        expires: 100,
        supersedes: None,
        replaces: None,
    };
    store.commit(vec![Write::PutLogin(login(0))]).expect("put");
    let step = |seq, next| Write::AdvanceLogin {
        key: "k".into(),
        seq,
        next,
    };
    store
        .commit(vec![step(0, Some(login(1)))])
        .expect("first step");
    // A second request that read seq 0 lost the race.
    let error = store.commit(vec![step(0, Some(login(1)))]).unwrap_err();
    assert!(matches!(error, StoreError::Conflict(_)), "{error}");
    store.commit(vec![step(1, None)]).expect("finish");
    assert_eq!(store.login("k").expect("read"), None);
    assert!(
        store.commit(vec![step(1, None)]).is_err(),
        "a finished login cannot finish twice"
    );
}

/// What every store must do: a failed batch writes nothing.
pub fn a_failed_batch_writes_nothing(store: &dyn Store) {
    let batch = vec![
        Write::PutRole(Role {
            name: "r".into(),
            description: String::new(),
            privileges: vec![],
            external_id: None,
        }),
        Write::ResetFailures("nobody".into()),
    ];
    assert!(store.commit(batch).is_err());
    assert_eq!(store.role("r").expect("read"), None);
}

/// What every store must do: failures lock at the threshold in the same write.
pub fn failures_lock_at_the_threshold_in_the_same_write(store: &dyn Store) {
    store
        .commit(vec![Write::CreateUser(User::new(
            "u1".into(),
            "bob".into(),
            0,
        ))])
        .expect("create");
    let failure = || Write::RecordFailure {
        user: "u1".into(),
        lock_after: Some(3),
        lock_seconds: 900,
        now: 1000,
    };
    store
        .commit(vec![failure(), failure()])
        .expect("two failures");
    let user = store.user("u1").expect("read").expect("user");
    assert_eq!((user.failed_attempts, user.locked_until), (2, 0));
    store.commit(vec![failure()]).expect("third failure");
    let user = store.user("u1").expect("read").expect("user");
    assert_eq!(user.locked_until, 1900);
    assert!(user.locked_at(1899) && !user.locked_at(1900));
}

/// What every store must do: a code redeems once and its reuse revokes what it issued.
pub fn a_code_redeems_once_and_its_reuse_revokes_what_it_issued(store: &dyn Store) {
    store
        .commit(vec![Write::PutCode(code("k", 100))])
        .expect("put");
    let issued = IssuedByCode {
        family: Some(("f1".into(), 1000)),
        access: ("jti1".into(), 400),
    };
    assert!(matches!(
        store.redeem_code("k", 50, &issued),
        Ok(Redemption::Fresh(_))
    ));
    store
        .commit(vec![Write::PutRefresh(refresh("r1", "f1", 1000))])
        .expect("refresh");
    assert_eq!(
        store.redeem_code("k", 51, &issued).expect("redeem"),
        Redemption::Reused
    );
    // The spent code outlives its 100 s: a late replay still revokes.
    assert_eq!(store.purge_expired(300).expect("purge"), 0);
    assert!(store.code("k").expect("read").is_some());
    assert!(store.access_revoked("jti1").expect("read"));
    assert_eq!(
        store.rotate_refresh("r1", "r2", 60).expect("rotate"),
        Rotation::Invalid
    );
}

/// What every store must do: an expired code is invalid.
pub fn an_expired_code_is_invalid(store: &dyn Store) {
    store
        .commit(vec![Write::PutCode(code("k", 100))])
        .expect("put");
    let issued = IssuedByCode {
        family: None,
        access: ("j".into(), 1),
    };
    assert_eq!(
        store.redeem_code("k", 100, &issued).expect("redeem"),
        Redemption::Invalid
    );
}

/// What every store must do: refresh rotation spends and reuse revokes the family.
pub fn refresh_rotation_spends_and_reuse_revokes_the_family(store: &dyn Store) {
    start_family(store, "f", 1000);
    store
        .commit(vec![Write::PutRefresh(refresh("r1", "f", 1000))])
        .expect("put");
    let Rotation::Rotated(next) = store.rotate_refresh("r1", "r2", 10).expect("rotate") else {
        panic!("first rotation must succeed");
    };
    assert_eq!((next.key.as_str(), next.family.as_str()), ("r2", "f"));
    assert_eq!(
        store.rotate_refresh("r1", "r3", 11).expect("rotate"),
        Rotation::Reused
    );
    // The legitimate successor dies with its family.
    assert_eq!(
        store.rotate_refresh("r2", "r4", 12).expect("rotate"),
        Rotation::Invalid
    );
    assert_eq!(
        store.rotate_refresh("nope", "r5", 12).expect("rotate"),
        Rotation::Invalid
    );
}

/// What every store must do: refresh tokens expire.
pub fn refresh_tokens_expire(store: &dyn Store) {
    start_family(store, "f", 1000);
    store
        .commit(vec![Write::PutRefresh(refresh("r1", "f", 1000))])
        .expect("put");
    assert_eq!(
        store.rotate_refresh("r1", "r2", 1000).expect("rotate"),
        Rotation::Invalid
    );
    assert_eq!(
        store.purge_expired(1000).expect("purge"),
        3,
        "the token, its family and the code that started it"
    );
}

/// What every store must do: the audit log reads newest first.
pub fn the_audit_log_reads_newest_first(store: &dyn Store) {
    let event = |name: &str| AuditEvent {
        time: 1,
        event: name.into(),
        actor: String::new(),
        subject: String::new(),
        ip: String::new(),
        detail: serde_json::Value::Null,
    };
    store
        .commit(vec![Write::Audit(event("a")), Write::Audit(event("b"))])
        .expect("audit");
    store.commit(vec![Write::Audit(event("c"))]).expect("audit");
    let log: Vec<_> = store
        .audit_log(2)
        .expect("read")
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(log, ["c", "b"]);
}

/// What every store must do: concurrent writes to one record all count (none lost to a race,
/// which under PostgreSQL means retried serialization failures).
pub fn concurrent_writes_to_one_record_all_count(store: &dyn Store) {
    store
        .commit(vec![Write::CreateUser(User::new(
            "u1".into(),
            "ann".into(),
            0,
        ))])
        .expect("user");
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for _ in 0..10 {
                    let failure = Write::RecordFailure {
                        user: "u1".into(),
                        lock_after: None,
                        lock_seconds: 0,
                        now: 1,
                    };
                    store.commit(vec![failure]).expect("commit");
                }
            });
        }
    });
    let user = store.user("u1").expect("read").expect("user");
    assert_eq!(user.failed_attempts, 80);
}

/// What every store must do: a code redeemed by many requests at once (on one node or
/// several) is fresh for exactly one of them; the others see a reuse.
pub fn a_code_redeemed_by_many_at_once_is_fresh_once(store: &dyn Store) {
    store
        .commit(vec![Write::PutCode(code("c1", 100))])
        .expect("code");
    let outcomes: Vec<Redemption> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                scope.spawn(move || {
                    let issued = IssuedByCode {
                        family: Some((format!("family-{i}"), 100)),
                        access: (format!("jti-{i}"), 100),
                    };
                    store.redeem_code("c1", 1, &issued).expect("redeem")
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let fresh = outcomes
        .iter()
        .filter(|o| matches!(o, Redemption::Fresh(_)))
        .count();
    assert_eq!(fresh, 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Redemption::Fresh(_) | Redemption::Reused)),
        "{outcomes:?}"
    );
}

/// What every store must do: one worker at a time holds an outbox event (workers on several
/// nodes share the outbox), until it settles the event or its claim runs out.
pub fn one_worker_at_a_time_holds_an_outbox_event(store: &dyn Store) {
    use crate::store::ProvisioningEvent;
    store
        .commit(vec![Write::QueueProvisioning(ProvisioningEvent::new(
            1,
            "hr",
            "user.created",
            "u1",
        ))])
        .expect("queue");
    let seq = store.provisioning_due(10, 10).expect("due")[0].0;
    let claim = |owner: &str, until: u64, now: u64| Write::ClaimProvisioning {
        seqs: vec![seq],
        owner: owner.into(),
        until,
        now,
    };
    store.commit(vec![claim("a", 100, 10)]).expect("a claims");
    assert!(matches!(
        store.commit(vec![claim("b", 100, 20)]),
        Err(StoreError::Conflict(_))
    ));
    assert!(
        store.provisioning_due(20, 10).expect("due").is_empty(),
        "a holds it"
    );
    store.commit(vec![claim("a", 150, 20)]).expect("a renews");
    // A worker that died holding it is replaced once its claim runs out.
    assert_eq!(store.provisioning_due(150, 10).expect("due").len(), 1);
    store
        .commit(vec![claim("b", 300, 150)])
        .expect("b takes over");
    // A retry settles the event for now and frees it for whoever comes next.
    store
        .commit(vec![Write::RetryProvisioning {
            seq,
            attempts: 1,
            not_before: 160,
            error: "down".into(),
        }])
        .expect("retry");
    let due = store.provisioning_due(160, 10).expect("due");
    assert_eq!(due.len(), 1);
    assert!(due[0].1.lease_owner.is_empty());
}

/// What every store must do: while one worker delivers a user to a target, a newer event of
/// the same user waits (another worker would race it), and other users do not.
pub fn a_user_being_delivered_waits_for_the_worker_delivering_it(store: &dyn Store) {
    use crate::store::ProvisioningEvent;
    let queue = |event: &str, user: &str| {
        Write::QueueProvisioning(ProvisioningEvent::new(1, "hr", event, user))
    };
    store
        .commit(vec![queue("user.created", "u1")])
        .expect("queue");
    let first = store.provisioning_due(10, 10).expect("due")[0].0;
    store
        .commit(vec![Write::ClaimProvisioning {
            seqs: vec![first],
            owner: "a".into(),
            until: 100,
            now: 10,
        }])
        .expect("a claims");
    store
        .commit(vec![
            queue("user.updated", "u1"),
            queue("user.created", "u2"),
        ])
        .expect("queue more");
    let due = store.provisioning_due(20, 10).expect("due");
    assert_eq!(
        due.iter().map(|(_, e)| e.user.as_str()).collect::<Vec<_>>(),
        vec!["u2"],
        "u1 waits for a"
    );
    let (second, _) = store
        .provisioning_events(10)
        .expect("events")
        .into_iter()
        .find(|(_, e)| e.event == "user.updated")
        .expect("queued");
    assert!(matches!(
        store.commit(vec![Write::ClaimProvisioning {
            seqs: vec![second],
            owner: "b".into(),
            until: 100,
            now: 20,
        }]),
        Err(StoreError::Conflict(_))
    ));
    store
        .commit(vec![Write::AckProvisioning(vec![first])])
        .expect("a done");
    assert_eq!(store.provisioning_due(30, 10).expect("due").len(), 2);
}

/// What every store must do: shared throttle windows count until they end, admit all limits or
/// none, and forget a key when asked.
pub fn windows_count_until_they_end_and_admit_all_or_nothing(store: &dyn Store) {
    assert_eq!(store.window_add("ip 1", 60, 100, 1).expect("add"), (1, 160));
    assert_eq!(store.window_add("ip 1", 60, 110, 1).expect("add"), (2, 160));
    assert_eq!(
        store.window_add("ip 1", 60, 120, 0).expect("count"),
        (2, 160)
    );
    // The window ended: counting starts again.
    assert_eq!(store.window_add("ip 1", 60, 160, 1).expect("add"), (1, 220));
    let limits = [("a", 60, 2), ("b", 60, 1)];
    assert_eq!(store.window_admit(&limits, 200).expect("admit"), Ok(()));
    // `b` is full: nothing is counted, not even `a`.
    assert_eq!(store.window_admit(&limits, 210).expect("admit"), Err(50));
    assert_eq!(store.window_add("a", 60, 210, 0).expect("count").0, 1);
    store.window_clear("ip 1").expect("clear");
    assert_eq!(store.window_add("ip 1", 60, 170, 0).expect("count").0, 0);
    assert_eq!(
        store.purge_expired(1000).expect("purge"),
        2,
        "the two finished windows"
    );
}
