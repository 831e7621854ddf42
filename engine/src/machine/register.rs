//! `register` states: self sign-up. The state asks for the account's details; the server checks
//! what it can (a free username, the password policy, the emailed code) and reports
//! [`Input::Registered`]; the engine checks again against the directory, decides the account
//! (only the attributes the flow asks for, its roles, verified or not, enabled or awaiting
//! approval) as effects, and identifies the new user so the flow goes on as after a sign-in.

use idflow_dsl::ir::{self, AuthOption, StateKind};

use super::{Ctx, Flowing, deny, identified};
use crate::model::{Effect, Input, Output, UserView, Value};
use crate::run::{Run, Status};

/// What the current state asks when it is a `register` state.
pub(super) struct Asks {
    attributes: Vec<String>,
    verify_email: bool,
    approval: bool,
    roles: Vec<String>,
    attempts: u32,
}

/// The current state's registration settings, when it is a `register` state.
pub(super) fn asks(ctx: &Ctx, run: &Run) -> Option<Asks> {
    match &ctx.flow.ir.states.get(&run.state)?.kind {
        StateKind::Register {
            attributes,
            verify_email,
            approval,
            roles,
            attempts,
        } => Some(Asks {
            attributes: attributes.clone(),
            verify_email: *verify_email,
            approval: *approval,
            roles: roles.clone(),
            attempts: *attempts,
        }),
        _ => None,
    }
}

/// Entering a `register` state. Someone the login already knows has an account: the state
/// passes without creating another. A signed-in browser asking to sign up is signed in by its
/// session (the steps it carries count, as at an authenticate state they satisfy); someone only
/// identified (`identifier_first` named an existing account) has proven nothing, so what
/// follows must still verify them, or the login is denied at `success`.
pub(super) fn enter(ctx: &Ctx, run: &mut Run, id: &str) -> Flowing {
    let Some(user) = &run.user else {
        return Flowing::Stop(prompt(ctx, run, None));
    };
    let who = user.id.clone();
    run.note(
        id,
        format!("{who} already has an account: nothing to register"),
    );
    if run.carried_user.as_deref() == Some(who.as_str()) {
        let known = |step: &crate::model::StepRecord| {
            run.steps.iter().any(|s| {
                s.authenticator == step.authenticator && s.idp == step.idp && s.at == step.at
            })
        };
        let carried: Vec<_> = run
            .carried
            .iter()
            .filter(|step| !step.enrolled && !known(step))
            .map(|step| crate::model::StepRecord {
                state: id.to_string(),
                carried: true,
                ..step.clone()
            })
            .collect();
        run.steps.extend(carried);
    }
    Flowing::Take(ir::LABEL_SUCCESS)
}

/// The form of the current `register` state.
pub(super) fn prompt(ctx: &Ctx, run: &mut Run, error: Option<String>) -> Output {
    let Some(asks) = asks(ctx, run) else {
        return deny(run, "not at a register state");
    };
    Output::Register {
        state: run.state.clone(),
        attributes: asks.attributes,
        verify_email: asks.verify_email,
        attempts_left: asks.attempts.saturating_sub(run.attempts),
        error,
    }
}

/// Input at a `register` state.
pub(super) fn on_input(ctx: &mut Ctx, run: &mut Run, asks: Asks, input: Input) -> Flowing {
    let state = run.state.clone();
    let register = AuthOption::Authenticator(ir::REGISTER.into());
    match input {
        Input::Registered {
            user,
            email_verified,
        } => registered(ctx, run, asks, user, email_verified),
        // A wrong emailed code; lockout does not apply, since no account exists to guess at.
        Input::Failed { option, reason, .. } if option == register => {
            run.attempts += 1;
            run.note(
                &state,
                format!(
                    "email code failed (attempt {} of {})",
                    run.attempts, asks.attempts
                ),
            );
            if run.attempts >= asks.attempts {
                run.note(&state, "attempts used up");
                return Flowing::Take(ir::LABEL_FAILURE);
            }
            let error = reason.unwrap_or_else(|| "that did not work; try again".into());
            Flowing::Stop(prompt(ctx, run, Some(error)))
        }
        other => {
            run.note(
                &state,
                format!("{} is not expected here", input_name(&other)),
            );
            Flowing::Stop(prompt(
                ctx,
                run,
                Some("fill in the form to create your account".into()),
            ))
        }
    }
}

fn input_name(input: &Input) -> &'static str {
    match input {
        Input::Choose(_) => "a choice",
        Input::Identify { .. } => "an identifier",
        Input::Passed { .. } => "a passed authenticator",
        Input::Failed { .. } => "a failed authenticator",
        Input::Federated { .. } => "an upstream login",
        Input::Answer { .. } => "a JIT answer",
        Input::Registered { .. } => "a registration",
        Input::Cancel => "cancel",
    }
}

/// The account the person asked for: created (with its roles and provisioning), then either
/// identified, or, when an administrator must approve it, the login ends without a sign-in.
fn registered(
    ctx: &mut Ctx,
    run: &mut Run,
    asks: Asks,
    user: UserView,
    email_verified: bool,
) -> Flowing {
    let state = run.state.clone();
    let refuse = |ctx: &Ctx, run: &mut Run, why: &str| {
        run.note(&state, format!("registration refused: {why}"));
        Flowing::Stop(prompt(ctx, run, Some(why.to_string())))
    };
    if user.id.is_empty() || user.username.trim().is_empty() {
        return refuse(ctx, run, "choose a username");
    }
    if !user.email.contains('@') {
        return refuse(ctx, run, "type your email address");
    }
    if asks.verify_email && !email_verified {
        return refuse(ctx, run, "the email address has not been verified");
    }
    // What `identified` would deny for, checked before anything is created: an account made
    // for a login that then fails would be left behind.
    if run.locked {
        return Flowing::Stop(deny(run, "account locked"));
    }
    let typed = run.identifier.clone();
    if !typed.is_empty()
        && !user.username.eq_ignore_ascii_case(&typed)
        && !user.email.eq_ignore_ascii_case(&typed)
    {
        return refuse(
            ctx,
            run,
            &format!(
                "use `{typed}`, which you typed to sign in, as the username or the email address"
            ),
        );
    }
    // The server checked these when the form came in; an account created since must not be
    // created twice, and an id must never name an existing account.
    if ctx.directory.find_user("id", &user.id).is_some() {
        return Flowing::Stop(deny(run, "the new account's id is taken"));
    }
    if ctx
        .directory
        .find_user("username", &user.username)
        .is_some()
    {
        return refuse(ctx, run, "that username is taken; choose another");
    }
    if ctx.directory.find_user("email", &user.email).is_some() {
        return refuse(
            ctx,
            run,
            "an account with this email address exists; sign in instead",
        );
    }
    let mut attributes = std::collections::BTreeMap::new();
    for name in &asks.attributes {
        match user
            .attributes
            .get(name)
            .and_then(Value::as_str)
            .map(str::trim)
        {
            Some(value) if !value.is_empty() => {
                attributes.insert(name.clone(), Value::from(value));
            }
            _ => return refuse(ctx, run, &format!("fill in {}", name.replace('_', " "))),
        }
    }
    attributes.insert("email".into(), Value::from(user.email.clone()));
    ctx.effects.push(Effect::CreateUser {
        id: user.id.clone(),
        username: user.username.clone(),
        attributes: attributes.clone(),
        roles: asks.roles.clone(),
        email_verified,
        disabled: asks.approval,
        signup: true,
    });
    ctx.effects.extend(crate::jit::roles_and_triggers(
        ctx.flow,
        &user.id,
        &asks.roles,
    ));
    run.note(
        &state,
        format!(
            "registered {} ({}){}",
            user.id,
            user.username,
            if asks.approval {
                ", awaiting approval"
            } else {
                ""
            }
        ),
    );
    if asks.approval {
        run.status = Status::Denied;
        run.reason = Some("awaiting approval".into());
        return Flowing::Stop(Output::AwaitingApproval { subject: user.id });
    }
    let created = UserView {
        id: user.id,
        username: user.username,
        email: user.email,
        roles: asks.roles,
        attributes,
        ..UserView::default()
    };
    identified(
        ctx,
        run,
        created,
        AuthOption::Authenticator(ir::REGISTER.into()),
    )
}
