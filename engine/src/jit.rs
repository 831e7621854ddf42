//! Just-in-time provisioning at run time: the flow's `jit` rules for one identity provider,
//! tried in order. The first rule whose `when` holds decides: link to a user matched by a
//! verified attribute, else create one (after asking, when the rule says to), else the next rule.

use std::collections::BTreeMap;

use idflow_dsl::ir::JitRuleIr;
use sha2::{Digest, Sha256};

use crate::directory::Directory;
use crate::flow::LoadedFlow;
use crate::model::{Effect, UserView, Value};
use crate::run::{PendingJit, Run};
use crate::sandbox::{JitScope, Sandbox, to_value};

/// What the JIT rules decided.
pub enum JitOutcome {
    /// The upstream account maps to this user; apply these effects.
    User(UserView, Vec<Effect>),
    /// Ask the user first.
    Confirm(PendingJit),
    /// No rule admits the account.
    NoRule,
}

/// Why JIT did not produce a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JitError {
    /// A rule's script failed: the login fails closed.
    Script(String),
    /// The rules refuse this account (no consent, a disabled account, a taken username...).
    Refused(String),
}

impl std::fmt::Display for JitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JitError::Script(why) => write!(f, "script error: {why}"),
            JitError::Refused(why) => f.write_str(why),
        }
    }
}

impl From<String> for JitError {
    fn from(why: String) -> Self {
        JitError::Refused(why)
    }
}

impl From<&str> for JitError {
    fn from(why: &str) -> Self {
        JitError::Refused(why.to_string())
    }
}

/// The user's answers to a JIT confirmation.
pub struct Answers {
    /// Consent given.
    pub consent: bool,
    /// A chosen username.
    pub username: Option<String>,
    /// Whether a local password was set.
    pub password_set: bool,
}

/// The id a JIT-created user gets: stable for one upstream account, so a retried login after a
/// crash creates the same user rather than a second one.
pub fn user_id(idp: &str, subject: &str) -> String {
    let digest = Sha256::digest(format!("{idp}\u{0}{subject}").as_bytes());
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("u-{hex}")
}

fn eval(
    flow: &LoadedFlow,
    sandbox: &Sandbox,
    run: &Run,
    idp: &str,
    script: &str,
) -> Result<rhai::Dynamic, JitError> {
    let ast = flow
        .script(script)
        .ok_or_else(|| JitError::Script(format!("script `{script}` is not compiled")))?;
    sandbox
        .eval_jit(
            ast,
            JitScope {
                claims: &run.upstream_claims,
                request: &run.request,
                idp,
            },
        )
        .map_err(JitError::Script)
}

fn claim_text(claims: &BTreeMap<String, Value>, name: &str) -> Option<String> {
    match claims.get(name)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Tries the rules for `idp` against the run's upstream claims.
pub fn resolve(
    flow: &LoadedFlow,
    sandbox: &Sandbox,
    directory: &dyn Directory,
    run: &mut Run,
    idp: &str,
    subject: &str,
) -> Result<JitOutcome, JitError> {
    let state = run.state.clone();
    for (index, rule) in flow.ir.jit.iter().enumerate().filter(|(_, r)| r.idp == idp) {
        if let Some(when) = &rule.when {
            // A condition that is not a bool is an error, not "false": falling through to a later,
            // perhaps more permissive, rule would fail open.
            let holds = eval(flow, sandbox, run, idp, when)?
                .as_bool()
                .map_err(|kind| {
                    JitError::Script(format!(
                        "JIT rule {index} `when` returned {kind}, not a bool"
                    ))
                })?;
            run.note(&state, format!("JIT rule {index} `when` = {holds}"));
            if !holds {
                continue;
            }
        }
        if let Some(attribute) = &rule.match_on {
            // An upstream that says, for this one login, that the value is not verified (OpenID
            // Connect's `email_verified: false`) is believed over the IdP-wide setting: linking by
            // an unverified address would hand someone else's account over.
            let unverified = run
                .upstream_claims
                .get(&format!("{attribute}_verified"))
                .is_some_and(|verified| verified != &Value::Bool(true));
            if unverified {
                run.note(
                    &state,
                    format!("JIT rule {index} does not match by {attribute}: the upstream says it is not verified"),
                );
            }
            let found = claim_text(&run.upstream_claims, attribute)
                .filter(|_| !unverified)
                .and_then(|value| directory.find_user(attribute, &value))
                .filter(|user| {
                    // An address typed at a sign-up and never proven says nothing about who
                    // owns the account: linking by it would hand the upstream identity to
                    // whoever typed it.
                    let unproven =
                        attribute == "email" && user.self_registered && !user.email_verified;
                    if unproven {
                        run.note(
                            &state,
                            format!("JIT rule {index} does not link {} by email: the address was typed at sign-up and never proven", user.id),
                        );
                    }
                    !unproven
                });
            if let Some(user) = found {
                run.jit_rules.push(index);
                if user.disabled {
                    // Never link an upstream account to a disabled user; the login then denies.
                    run.note(
                        &state,
                        format!(
                            "JIT rule {index} matches {} by {attribute}, who is disabled",
                            user.id
                        ),
                    );
                    return Ok(JitOutcome::User(user, Vec::new()));
                }
                run.note(
                    &state,
                    format!("JIT rule {index} links to {} by {attribute}", user.id),
                );
                let effects = vec![Effect::LinkIdentity {
                    user: user.id.clone(),
                    idp: idp.to_string(),
                    subject: subject.to_string(),
                }];
                return Ok(JitOutcome::User(user, effects));
            }
        }
        if rule.create.is_none() {
            run.note(
                &state,
                format!("JIT rule {index}: no user matches and the rule does not create"),
            );
            continue;
        }
        run.jit_rules.push(index);
        if !rule.prompt.is_empty() {
            run.note(
                &state,
                format!("JIT rule {index} asks: {}", rule.prompt.join(", ")),
            );
            return Ok(JitOutcome::Confirm(PendingJit {
                rule: index,
                idp: idp.to_string(),
                subject: subject.to_string(),
                ask: rule.prompt.clone(),
            }));
        }
        return create(flow, sandbox, directory, run, rule, idp, subject, None)
            .map(|(user, effects)| JitOutcome::User(user, effects));
    }
    Ok(JitOutcome::NoRule)
}

/// Finishes a confirmation: checks the answers and creates the user.
pub fn confirm(
    flow: &LoadedFlow,
    sandbox: &Sandbox,
    directory: &dyn Directory,
    run: &mut Run,
    pending: &PendingJit,
    answers: &Answers,
) -> Result<(UserView, Vec<Effect>), JitError> {
    let rule = flow
        .ir
        .jit
        .get(pending.rule)
        .ok_or("the JIT rule no longer exists")?;
    if pending.ask.iter().any(|a| a == "consent") && !answers.consent {
        return Err("the user did not consent to the account".into());
    }
    // A username the rule did not ask for is ignored: otherwise anyone could name themselves
    // `admin` by adding a form field.
    let asks_username = pending.ask.iter().any(|a| a == "username");
    let chosen = answers
        .username
        .as_deref()
        .map(str::trim)
        .filter(|u| asks_username && !u.is_empty());
    if asks_username && chosen.is_none() {
        return Err("no username was chosen".into());
    }
    if pending.ask.iter().any(|a| a == "password") && !answers.password_set {
        return Err("no password was set".into());
    }
    create(
        flow,
        sandbox,
        directory,
        run,
        rule,
        &pending.idp,
        &pending.subject,
        chosen.map(String::from),
    )
}

#[allow(clippy::too_many_arguments)]
fn create(
    flow: &LoadedFlow,
    sandbox: &Sandbox,
    directory: &dyn Directory,
    run: &mut Run,
    rule: &JitRuleIr,
    idp: &str,
    subject: &str,
    chosen_username: Option<String>,
) -> Result<(UserView, Vec<Effect>), JitError> {
    let create = rule
        .create
        .as_ref()
        .ok_or("the rule does not create users")?;
    let username = match chosen_username {
        Some(username) => username,
        None => match to_value(&eval(flow, sandbox, run, idp, &create.username)?) {
            Value::String(s) if !s.trim().is_empty() => s,
            other => {
                return Err(JitError::Script(format!(
                    "the username expression gave {other}, not a name"
                )));
            }
        },
    };
    let mut attributes = BTreeMap::new();
    for (name, script) in &create.attributes {
        attributes.insert(
            name.clone(),
            to_value(&eval(flow, sandbox, run, idp, script)?),
        );
    }
    let id = user_id(idp, subject);
    // Only an attribute the rule maps explicitly becomes the user's email: copying an
    // unverified upstream email would let someone pre-claim another person's address.
    let email = attributes
        .get("email")
        .and_then(Value::as_str)
        .map(String::from);
    let user = UserView {
        id: id.clone(),
        username: username.clone(),
        email: email.unwrap_or_default(),
        roles: create.roles.clone(),
        attributes: attributes.clone(),
        ..UserView::default()
    };
    if let Some(existing) = directory.find_user("id", &id) {
        // The account was created by an earlier login whose link has since gone: reuse it,
        // unless it was disabled.
        if existing.disabled {
            return Err("the account for this upstream identity is disabled".into());
        }
        run.note(
            &run.state.clone(),
            format!("JIT finds {id} from an earlier login and links it again"),
        );
        let effects = vec![Effect::LinkIdentity {
            user: id,
            idp: idp.to_string(),
            subject: subject.to_string(),
        }];
        return Ok((existing, effects));
    }
    if directory.find_user("username", &username).is_some() {
        return Err(format!("the username `{username}` is already taken").into());
    }
    // An address is unique to one account: one a rule could not link by (not verified) must
    // not be copied onto a second account either.
    if !user.email.is_empty() && directory.find_user("email", &user.email).is_some() {
        return Err("the email address belongs to another account".into());
    }
    let mut effects = vec![
        Effect::CreateUser {
            id: id.clone(),
            username,
            attributes,
            roles: create.roles.clone(),
            email_verified: false,
            disabled: false,
            signup: false,
        },
        Effect::LinkIdentity {
            user: id.clone(),
            idp: idp.to_string(),
            subject: subject.to_string(),
        },
    ];
    effects.extend(roles_and_triggers(flow, &id, &create.roles));
    run.note(
        &run.state.clone(),
        format!("JIT creates {id} ({})", user.username),
    );
    Ok((user, effects))
}

/// What follows creating account `id` with `roles` (by JIT or sign-up): each role assigned,
/// and the flow's provisioning triggers on `user.created` and, with roles, `role.assigned`.
pub(crate) fn roles_and_triggers(flow: &LoadedFlow, id: &str, roles: &[String]) -> Vec<Effect> {
    let mut effects: Vec<Effect> = roles
        .iter()
        .map(|role| Effect::AssignRole {
            user: id.to_string(),
            role: role.clone(),
        })
        .collect();
    for trigger in &flow.ir.provisioning {
        for event in ["user.created", "role.assigned"] {
            let fires = trigger.on.iter().any(|e| e == event)
                && (event == "user.created" || !roles.is_empty());
            if fires {
                effects.push(Effect::Provision {
                    target: trigger.to.clone(),
                    event: event.into(),
                    user: id.to_string(),
                });
            }
        }
    }
    effects
}
