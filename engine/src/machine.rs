//! The step function. `start` and `advance` take a run and an input and return the next run,
//! an output and effects; they read nothing but their arguments (and the read-only
//! [`Directory`]), write nothing, and know the time only as the `now` passed in.
//!
//! States that need no input (`decide`, `action`, the terminals) are passed through within one
//! step; a step ends at an authenticate state (a prompt or a redirect), a JIT confirmation, or a
//! terminal. Every transition is bounded: a state's `visits`, an authenticate state's attempts,
//! and a hard cap on transitions per step for IR that did not come from `flow check`.

mod register;

use std::collections::BTreeMap;

use idflow_dsl::ir::{self, ActionIr, AuthOption, StateKind};

use crate::directory::Directory;
use crate::flow::LoadedFlow;
use crate::jit::{self, JitOutcome};
use crate::model::{
    Carried, Effect, Input, Output, PromptOption, Request, StepRecord, UiHint, UserView, Value,
};
use crate::run::{Run, Status};
use crate::sandbox::{ContextView, FlowScope, Sandbox, to_value};

/// Transitions one step may take before the run is denied (a defence for hand-made IR; checked
/// flows cannot loop unboundedly).
pub const MAX_TRANSITIONS_PER_STEP: usize = 1000;

/// The result of a step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The run after the step.
    pub run: Run,
    /// What to do next.
    pub output: Output,
    /// What to apply to the store, in one transaction with the run.
    pub effects: Vec<Effect>,
}

/// Runs flows. Holds the script sandbox; build once and share.
#[derive(Default)]
pub struct Engine {
    sandbox: std::sync::Arc<Sandbox>,
}

/// Everything a step reads besides the run.
struct Ctx<'a> {
    flow: &'a LoadedFlow,
    sandbox: &'a Sandbox,
    directory: &'a dyn Directory,
    now: u64,
    effects: Vec<Effect>,
}

enum Flowing {
    /// Stop and answer with this output.
    Stop(Output),
    /// Take this transition out of the current state.
    Take(&'static str),
    /// Take a label computed by a script.
    TakeLabel(String),
}

impl Engine {
    /// An engine with a fresh sandbox.
    pub fn new() -> Self {
        Engine {
            sandbox: std::sync::Arc::new(Sandbox::new()),
        }
    }

    /// The sandbox, shared with a [`crate::Registry`] that loads flows for this engine.
    pub fn sandbox(&self) -> std::sync::Arc<Sandbox> {
        std::sync::Arc::clone(&self.sandbox)
    }

    /// Loads a compiled flow (compiles its scripts).
    pub fn load(&self, ir: idflow_dsl::FlowIr) -> Result<LoadedFlow, String> {
        LoadedFlow::load(&self.sandbox, ir)
    }

    /// Starts a login on `flow` and runs it to the first thing it needs.
    pub fn start(
        &self,
        flow: &LoadedFlow,
        request: Request,
        now: u64,
        directory: &dyn Directory,
    ) -> Step {
        self.start_carried(flow, request, None, now, directory)
    }

    /// Starts a login for a browser that already has a session: the session's user is known
    /// from the start and the steps it passed satisfy the states they match ([`Carried`]).
    /// With `carried` absent this is [`Engine::start`].
    pub fn start_carried(
        &self,
        flow: &LoadedFlow,
        request: Request,
        carried: Option<Carried>,
        now: u64,
        directory: &dyn Directory,
    ) -> Step {
        let mut run = Run::new(&flow.ir.flow, &flow.version, &flow.ir.start, request);
        if let Some(carried) = carried {
            run.note(
                &flow.ir.start,
                format!(
                    "session of {} carries {}",
                    carried.user.id,
                    carried
                        .steps
                        .iter()
                        .map(|s| s.idp.as_deref().unwrap_or(&s.authenticator))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            run.carried_user = Some(carried.user.id.clone());
            run.identifier = if carried.identifier.is_empty() {
                carried.user.username.clone()
            } else {
                carried.identifier
            };
            run.user = Some(carried.user);
            run.carried = carried.steps;
            run.carried_fresh_since = carried.fresh_since;
        }
        let mut ctx = Ctx {
            flow,
            sandbox: &self.sandbox,
            directory,
            now,
            effects: Vec::new(),
        };
        let start = flow.ir.start.clone();
        let output = enter(&mut ctx, &mut run, &start);
        Step {
            run,
            output,
            effects: ctx.effects,
        }
    }

    /// Advances `run` with `input`. The run must be on `flow`'s version (the registry resolves
    /// a run's version; a mismatch denies rather than run a run on the wrong machine).
    pub fn advance(
        &self,
        flow: &LoadedFlow,
        mut run: Run,
        input: Input,
        now: u64,
        directory: &dyn Directory,
    ) -> Step {
        let mut ctx = Ctx {
            flow,
            sandbox: &self.sandbox,
            directory,
            now,
            effects: Vec::new(),
        };
        let output = if run.version != flow.version || run.flow != flow.ir.flow {
            let reason = format!(
                "run is on {} {}, not {} {}",
                run.flow, run.version, flow.ir.flow, flow.version
            );
            deny(&mut run, &reason)
        } else {
            match run.status {
                Status::Completed | Status::Denied => finished(&run),
                Status::Active => match input {
                    Input::Cancel => {
                        let state = run.state.clone();
                        run.note(&state, "cancelled by the user");
                        deny(&mut run, "cancelled")
                    }
                    input => {
                        let flowing = on_input(&mut ctx, &mut run, input);
                        follow(&mut ctx, &mut run, flowing)
                    }
                },
            }
        };
        Step {
            run,
            output,
            effects: ctx.effects,
        }
    }
}

fn finished(run: &Run) -> Output {
    match run.status {
        Status::Denied => Output::Denied {
            reason: run.reason.clone().unwrap_or_default(),
        },
        _ => Output::Denied {
            reason: "the login has already finished".into(),
        },
    }
}

fn deny(run: &mut Run, reason: &str) -> Output {
    let state = run.state.clone();
    if run
        .trace
        .last()
        .is_none_or(|t| !t.event.starts_with("denied"))
    {
        run.note(&state, format!("denied: {reason}"));
    }
    run.status = Status::Denied;
    run.reason = Some(reason.to_string());
    Output::Denied {
        reason: reason.to_string(),
    }
}

/// Applies a `Flowing` decision: either answers, or takes transitions until something does.
fn follow(ctx: &mut Ctx, run: &mut Run, mut flowing: Flowing) -> Output {
    for _ in 0..MAX_TRANSITIONS_PER_STEP {
        let label = match flowing {
            Flowing::Stop(output) => return output,
            Flowing::Take(label) => label.to_string(),
            Flowing::TakeLabel(label) => label,
        };
        let from = run.state.clone();
        let Some(state) = ctx.flow.ir.states.get(&from) else {
            return deny(run, &format!("state `{from}` does not exist"));
        };
        let target = match state.transitions.get(&label) {
            Some(target) => target.clone(),
            None => match state.transitions.get(ir::LABEL_ERROR) {
                Some(error) => {
                    run.note(
                        &from,
                        format!("label `{label}` has no transition: failing closed"),
                    );
                    run.taken.push((from.clone(), ir::LABEL_ERROR.to_string()));
                    let error = error.clone();
                    flowing = step_into(ctx, run, &error);
                    continue;
                }
                None => return deny(run, &format!("state `{from}` has no `{label}` transition")),
            },
        };
        run.taken.push((from, label));
        flowing = step_into(ctx, run, &target);
    }
    deny(run, "too many transitions in one step")
}

fn enter(ctx: &mut Ctx, run: &mut Run, state: &str) -> Output {
    let flowing = step_into(ctx, run, state);
    follow(ctx, run, flowing)
}

/// Enters `id` and does what the state does on entry.
fn step_into(ctx: &mut Ctx, run: &mut Run, id: &str) -> Flowing {
    run.state = id.to_string();
    run.path.push(id.to_string());
    run.attempts = 0;
    let visits = run.visits.entry(id.to_string()).or_insert(0);
    *visits += 1;
    let visits = *visits;
    let Some(state) = ctx.flow.ir.states.get(id) else {
        return Flowing::Stop(deny(run, &format!("state `{id}` does not exist")));
    };
    if let Some(max) = state.max_visits
        && visits > max
    {
        run.note(
            id,
            format!("entered {visits} times; `visits` allows {max}: denied"),
        );
        // Exhausted retries are a failed login: leave through `on_failure` like any other.
        run.reason = Some("too many retries".into());
        let failure = [ir::ON_FAILURE, ir::DENY]
            .into_iter()
            .find(|s| ctx.flow.ir.states.contains_key(*s));
        return match failure {
            Some(failure) => step_into(ctx, run, failure),
            None => Flowing::Stop(deny(run, "too many retries")),
        };
    }
    match &state.kind {
        StateKind::Authenticate { enroll: true, .. } if !vouched_for(run) => {
            if run.carried.is_empty() {
                return Flowing::Stop(deny(
                    run,
                    "enrolling needs a credential verified first (or recently, for a session)",
                ));
            }
            // The session is too old to vouch for a new factor: start over without what it
            // carried, so the person proves who they are again before enrolling.
            run.note(
                id,
                "the session is too old to vouch for enrolling: asking for the credentials again",
            );
            run.carried.clear();
            run.steps.retain(|step| !step.carried);
            // What the first pass did is undone: counts of visits, claims, effects.
            run.visits.clear();
            run.claims.clear();
            ctx.effects.clear();
            let start = ctx.flow.ir.start.clone();
            step_into(ctx, run, &start)
        }
        StateKind::Authenticate {
            options,
            enroll: false,
            ..
        } => match carried_pass(run, options) {
            Some(option) => satisfied_by_session(ctx, run, option),
            None => Flowing::Stop(prompt(ctx, run, None)),
        },
        StateKind::Authenticate { .. } => Flowing::Stop(prompt(ctx, run, None)),
        StateKind::Register { .. } => register::enter(ctx, run, id),
        StateKind::Decide { script } => decide(ctx, run, id, script),
        StateKind::Action { actions } => act(ctx, run, id, actions),
        StateKind::Success => Flowing::Stop(complete(ctx, run)),
        StateKind::Deny { reason } => {
            run.note(id, format!("denied: {reason}"));
            // A reason set on the way here (e.g. "too many retries") says more than the state's.
            let reason = run.reason.clone().unwrap_or_else(|| reason.clone());
            Flowing::Stop(deny(run, &reason))
        }
    }
}

/// Whether a step that verifies the user (not identification, not an enrollment) passed in
/// this login, or was carried from a session recently enough to let the user enroll a new
/// factor (an old session alone must not plant one).
fn vouched_for(run: &Run) -> bool {
    run.user.is_some()
        && run.steps.iter().any(|step| {
            step.authenticator != "identifier_first"
                && !step.enrolled
                && (!step.carried || step.at >= run.carried_fresh_since)
        })
}

/// The first option of an authenticate state that a step carried from the session passed.
fn carried_pass(run: &Run, options: &[AuthOption]) -> Option<AuthOption> {
    let same_user = matches!((&run.user, &run.carried_user), (Some(user), Some(carried)) if user.id == *carried);
    if !same_user {
        return None;
    }
    let identify = AuthOption::Authenticator("identifier_first".into());
    options
        .iter()
        .find(|option| {
            // The session already knows who this is: identification needs no step of its own.
            **option == identify || run.carried.iter().any(|step| passes(step, option))
        })
        .cloned()
}

fn passes(step: &StepRecord, option: &AuthOption) -> bool {
    if step.enrolled {
        return false;
    }
    match option {
        AuthOption::Authenticator(name) => step.idp.is_none() && &step.authenticator == name,
        AuthOption::Federated(idp) => step.idp.as_deref() == Some(idp.as_str()),
    }
}

/// Passes the current state with a step the session carried, keeping when it really ran (so
/// `auth_time` and `max_age` see the original time).
fn satisfied_by_session(ctx: &mut Ctx, run: &mut Run, option: AuthOption) -> Flowing {
    let state = run.state.clone();
    if option == AuthOption::Authenticator("identifier_first".into()) {
        run.note(
            &state,
            format!("identified as `{}` by the session", run.identifier),
        );
        run.steps.push(StepRecord {
            state,
            authenticator: "identifier_first".into(),
            idp: None,
            // When the session last verified someone: identifying by the session is not a
            // sign-in of its own, and must not make the login look fresh.
            at: run.carried.iter().map(|s| s.at).max().unwrap_or(0),
            carried: true,
            enrolled: false,
        });
        return Flowing::Take(ir::LABEL_SUCCESS);
    }
    let Some(carried) = run.carried.iter().find(|s| passes(s, &option)).cloned() else {
        return Flowing::Stop(prompt(ctx, run, None));
    };
    let Some(user) = run.user.clone() else {
        return Flowing::Stop(prompt(ctx, run, None));
    };
    run.note(
        &state,
        format!(
            "{option} satisfied by the session (passed at {})",
            carried.at
        ),
    );
    let flowing = identified(ctx, run, user, option);
    if let Some(step) = run.steps.last_mut()
        && step.state == state
    {
        step.at = carried.at;
        step.carried = true;
    }
    flowing
}

fn scope<'a>(run: &'a Run, empty: &'a UserView) -> FlowScope<'a> {
    FlowScope {
        user: run.user.as_ref().unwrap_or(empty),
        request: &run.request,
        context: ContextView {
            steps: run.steps.clone(),
            identifier: run.identifier.clone(),
            failed_attempts: i64::from(run.failed_attempts),
        },
        claims: &run.upstream_claims,
    }
}

fn decide(ctx: &mut Ctx, run: &mut Run, id: &str, script: &str) -> Flowing {
    let Some(ast) = ctx.flow.script(script) else {
        run.note(id, "script not compiled: failing closed");
        return Flowing::Take(ir::LABEL_ERROR);
    };
    let empty = UserView::default();
    let result = ctx.sandbox.eval_flow(ast, scope(run, &empty));
    match result {
        Ok(value) => {
            let label = if let Ok(b) = value.as_bool() {
                b.to_string()
            } else if value.is_string() {
                value.into_string().unwrap_or_default()
            } else {
                run.note(
                    id,
                    format!(
                        "script returned {} (not a label): failing closed",
                        value.type_name()
                    ),
                );
                return Flowing::Take(ir::LABEL_ERROR);
            };
            run.note(id, format!("`{script}` = {label}"));
            Flowing::TakeLabel(label)
        }
        Err(error) => {
            run.note(id, format!("script error: {error}: failing closed"));
            Flowing::Take(ir::LABEL_ERROR)
        }
    }
}

fn act(ctx: &mut Ctx, run: &mut Run, id: &str, actions: &[ActionIr]) -> Flowing {
    for action in actions {
        match action {
            ActionIr::Provision { target } => match run.user.as_ref() {
                Some(user) => {
                    ctx.effects.push(Effect::Provision {
                        target: target.clone(),
                        event: "flow.provision".into(),
                        user: user.id.clone(),
                    });
                    run.note(id, format!("provision to {target}"));
                }
                None => run.note(
                    id,
                    format!("provision to {target} skipped: no user identified"),
                ),
            },
            ActionIr::LockUser { after, seconds } => {
                lock_if_due(ctx, run, *after, *seconds);
            }
            ActionIr::SetClaim { claim, script } => {
                let Some(ast) = ctx.flow.script(script) else {
                    return Flowing::Take(ir::LABEL_ERROR);
                };
                let empty = UserView::default();
                match ctx.sandbox.eval_flow(ast, scope(run, &empty)) {
                    Ok(value) => {
                        let value = to_value(&value);
                        run.note(id, format!("claim {claim} = {value}"));
                        run.claims.insert(claim.clone(), value.clone());
                        ctx.effects.push(Effect::SetClaim {
                            claim: claim.clone(),
                            value,
                        });
                    }
                    Err(error) => {
                        run.note(
                            id,
                            format!("script error in set_claim {claim}: {error}: failing closed"),
                        );
                        return Flowing::Take(ir::LABEL_ERROR);
                    }
                }
            }
            ActionIr::Jit { idp } => {
                run.note(id, format!("JIT rules for {idp} apply at federated login"));
            }
        }
    }
    Flowing::Take(ir::LABEL_NEXT)
}

/// The options, attempts and whether it enrolls, of the current state when it asks for input.
fn options(ctx: &Ctx, run: &Run) -> Option<(Vec<AuthOption>, u32, bool)> {
    match &ctx.flow.ir.states.get(&run.state)?.kind {
        StateKind::Authenticate {
            options,
            attempts,
            enroll,
        } => Some((options.clone(), *attempts, *enroll)),
        _ => None,
    }
}

/// How a login page presents an option.
pub fn ui_hint(option: &AuthOption) -> UiHint {
    let (label, fields): (String, &[&str]) = match option {
        AuthOption::Federated(idp) => (format!("Sign in with {idp}"), &[]),
        AuthOption::Authenticator(name) => match name.as_str() {
            "identifier_first" => ("Username or email".into(), &["identifier"]),
            "password" => ("Password".into(), &["username", "password"]),
            "totp" => ("Authenticator app code".into(), &["code"]),
            "passkey" => ("Passkey".into(), &[]),
            "email_otp" => ("Code sent by email".into(), &["code"]),
            "recovery_code" => ("Recovery code".into(), &["code"]),
            other => (other.to_string(), &[]),
        },
    };
    UiHint {
        label,
        fields: fields.iter().map(|f| f.to_string()).collect(),
    }
}

fn prompt(ctx: &Ctx, run: &mut Run, error: Option<String>) -> Output {
    let Some((options, attempts, enroll)) = options(ctx, run) else {
        return deny(run, "not at an authenticate state");
    };
    // A state whose only option is a provider sends the browser there at once, but not after
    // the provider's answer failed: the person sees why, and chooses to try again.
    if let ([AuthOption::Federated(idp)], None) = (options.as_slice(), &error) {
        run.note(&run.state.clone(), format!("redirect to {idp}"));
        return Output::Redirect { idp: idp.clone() };
    }
    Output::Prompt {
        state: run.state.clone(),
        options: options
            .iter()
            .map(|o| PromptOption {
                option: o.clone(),
                hint: ui_hint(o),
            })
            .collect(),
        attempts_left: attempts.saturating_sub(run.attempts),
        error,
        enroll,
    }
}

/// Handles input at an authenticate state (or a pending JIT confirmation).
fn on_input(ctx: &mut Ctx, run: &mut Run, input: Input) -> Flowing {
    let state = run.state.clone();
    if let Some(pending) = run.pending_jit.clone() {
        return match input {
            Input::Answer {
                consent,
                username,
                password_set,
            } => {
                run.pending_jit = None;
                let answers = jit::Answers {
                    consent,
                    username,
                    password_set,
                };
                match jit::confirm(
                    ctx.flow,
                    ctx.sandbox,
                    ctx.directory,
                    run,
                    &pending,
                    &answers,
                ) {
                    Ok((user, effects)) => {
                        ctx.effects.extend(effects);
                        identified(ctx, run, user, AuthOption::Federated(pending.idp.clone()))
                    }
                    Err(error) => Flowing::Stop(jit_denied(run, &state, error)),
                }
            }
            _ => Flowing::Stop(Output::Confirm {
                idp: pending.idp,
                ask: pending.ask,
            }),
        };
    }
    if let Some(asks) = register::asks(ctx, run) {
        return register::on_input(ctx, run, asks, input);
    }
    let Some((offered, attempts, enrolling)) = options(ctx, run) else {
        return Flowing::Stop(deny(run, "no input is expected here"));
    };
    let not_offered = |run: &mut Run, option: &AuthOption| {
        run.note(&state, format!("{option} is not offered here"));
        Flowing::Stop(prompt(
            ctx,
            run,
            Some(format!("{option} is not offered here")),
        ))
    };
    match input {
        Input::Choose(option) => {
            if !offered.contains(&option) {
                return not_offered(run, &option);
            }
            match option {
                AuthOption::Federated(idp) => {
                    run.note(&state, format!("redirect to {idp}"));
                    Flowing::Stop(Output::Redirect { idp })
                }
                _ => Flowing::Stop(prompt(ctx, run, None)),
            }
        }
        Input::Identify { identifier, user } => {
            let option = AuthOption::Authenticator("identifier_first".into());
            if !offered.contains(&option) {
                return not_offered(run, &option);
            }
            run.identifier = identifier.trim().to_string();
            run.note(
                &state,
                format!(
                    "identified as `{}`{}",
                    run.identifier,
                    if user.is_some() {
                        ""
                    } else {
                        " (no such user)"
                    }
                ),
            );
            // A new identification starts the identity over: nothing verified for an earlier
            // identifier may count for this one (failure counters stay, per user).
            run.steps.clear();
            run.claims.clear();
            run.upstream_claims.clear();
            run.attempted_user = None;
            run.user = user;
            run.steps.push(StepRecord {
                state: state.clone(),
                authenticator: "identifier_first".into(),
                idp: None,
                at: ctx.now,
                carried: false,
                enrolled: false,
            });
            Flowing::Take(ir::LABEL_SUCCESS)
        }
        Input::Passed { option, user } => {
            if !offered.contains(&option) {
                return not_offered(run, &option);
            }
            // Upstream logins report as `Federated` (so links and JIT apply) and identification
            // as `Identify`; neither may be claimed as a plain pass.
            if matches!(&option, AuthOption::Federated(_))
                || option == AuthOption::Authenticator("identifier_first".into())
            {
                run.note(&state, format!("{option} cannot be reported as passed"));
                return Flowing::Stop(prompt(
                    ctx,
                    run,
                    Some(format!("{option} is not verified this way")),
                ));
            }
            identified(ctx, run, user, option)
        }
        Input::Failed {
            option,
            user,
            reason,
        } => {
            if !offered.contains(&option) {
                return not_offered(run, &option);
            }
            if run.user.is_none() && user.is_some() {
                run.attempted_user = user;
            }
            run.attempts += 1;
            run.failed_attempts += 1;
            // Lockout protects local credentials; an upstream failure is not a guess at them,
            // and neither is a mistyped first code while setting up a new factor.
            if !enrolling && !matches!(option, AuthOption::Federated(_)) && count_failure(ctx, run)
            {
                return Flowing::Stop(deny(run, "account locked"));
            }
            run.note(
                &state,
                format!("{option} failed (attempt {} of {attempts})", run.attempts),
            );
            if run.attempts >= attempts {
                run.note(&state, "attempts used up");
                Flowing::Take(ir::LABEL_FAILURE)
            } else {
                let error = reason.unwrap_or_else(|| "that did not work; try again".into());
                Flowing::Stop(prompt(ctx, run, Some(error)))
            }
        }
        Input::Federated {
            idp,
            subject,
            claims,
        } => {
            let option = AuthOption::Federated(idp.clone());
            if !offered.contains(&option) {
                return not_offered(run, &option);
            }
            run.upstream_claims = claims;
            if let Some(user) = ctx.directory.linked_user(&idp, &subject) {
                run.note(
                    &state,
                    format!("{idp} account {subject} is linked to {}", user.id),
                );
                return identified(ctx, run, user, option);
            }
            match jit::resolve(ctx.flow, ctx.sandbox, ctx.directory, run, &idp, &subject) {
                Ok(JitOutcome::User(user, effects)) => {
                    ctx.effects.extend(effects);
                    identified(ctx, run, user, option)
                }
                Ok(JitOutcome::Confirm(pending)) => {
                    let output = Output::Confirm {
                        idp: pending.idp.clone(),
                        ask: pending.ask.clone(),
                    };
                    run.pending_jit = Some(pending);
                    Flowing::Stop(output)
                }
                Ok(JitOutcome::NoRule) => {
                    run.note(
                        &state,
                        format!("no JIT rule admits {idp} account {subject}"),
                    );
                    Flowing::Stop(deny(run, "no account for this upstream identity"))
                }
                Err(error) => Flowing::Stop(jit_denied(run, &state, error)),
            }
        }
        Input::Answer { .. } => Flowing::Stop(prompt(ctx, run, Some("nothing was asked".into()))),
        Input::Registered { .. } => {
            Flowing::Stop(prompt(ctx, run, Some("there is no sign-up here".into())))
        }
        Input::Cancel => Flowing::Stop(deny(run, "cancelled")),
    }
}

/// Denies a login that JIT could not place: a script error fails closed, a refusal says why.
fn jit_denied(run: &mut Run, state: &str, error: jit::JitError) -> Output {
    match error {
        jit::JitError::Script(why) => {
            run.note(state, format!("JIT script error: {why}: failing closed"));
            deny(run, "script error")
        }
        jit::JitError::Refused(why) => {
            run.note(state, format!("JIT: {why}"));
            deny(run, &why)
        }
    }
}

/// A step passed for `user`: record it and leave by `success`. A different user than the one
/// identified earlier denies: every factor of one login must belong to one user.
fn identified(ctx: &mut Ctx, run: &mut Run, user: UserView, option: AuthOption) -> Flowing {
    let state = run.state.clone();
    if user.id.is_empty() {
        return Flowing::Stop(deny(run, "a step verified a user without an id"));
    }
    if let Some(known) = run.user.as_ref()
        && known.id != user.id
    {
        run.note(
            &state,
            format!(
                "{option} verified {} but this login is for {}",
                user.id, known.id
            ),
        );
        return Flowing::Stop(deny(run, "a step verified a different user"));
    }
    // What the user typed at identifier_first binds the login, even when it named no account
    // (names compare without case, as the store looks them up):
    // otherwise typing an unknown name would skip the routing meant for the real one.
    let typed = run.identifier.as_str();
    if !typed.is_empty()
        && !user.username.eq_ignore_ascii_case(typed)
        && !user.email.eq_ignore_ascii_case(typed)
    {
        run.note(
            &state,
            format!(
                "{option} verified {} but the identifier was `{typed}`",
                user.id
            ),
        );
        return Flowing::Stop(deny(run, "a step verified a different user"));
    }
    if user.disabled {
        return Flowing::Stop(deny(run, "account disabled"));
    }
    if user.locked || run.locked {
        return Flowing::Stop(deny(run, "account locked"));
    }
    let (authenticator, idp) = match &option {
        AuthOption::Authenticator(name) => (name.clone(), None),
        AuthOption::Federated(idp) => ("federated".to_string(), Some(idp.clone())),
    };
    run.note(&state, format!("{option} passed for {}", user.id));
    let enrolled = matches!(
        ctx.flow.ir.states.get(&state).map(|s| &s.kind),
        Some(StateKind::Authenticate { enroll: true, .. })
    );
    run.steps.push(StepRecord {
        state,
        authenticator,
        idp,
        at: ctx.now,
        carried: false,
        enrolled,
    });
    run.user = Some(user);
    Flowing::Take(ir::LABEL_SUCCESS)
}

/// Counts a failed credential attempt against the user it was for and, when the flow's
/// `lock_user` threshold is reached, locks that user at once — at the attempt, so abandoning a
/// login after a few tries does not escape the lock. Returns whether the user is now locked.
fn count_failure(ctx: &mut Ctx, run: &mut Run) -> bool {
    let Some(user) = run.user.as_ref().or(run.attempted_user.as_ref()) else {
        return false;
    };
    let id = user.id.clone();
    run.baseline_failures
        .entry(id.clone())
        .or_insert(user.failed_attempts);
    *run.failures_by_user.entry(id.clone()).or_insert(0) += 1;
    let policy = ctx
        .flow
        .ir
        .states
        .get(ir::ON_FAILURE)
        .and_then(|s| match &s.kind {
            StateKind::Action { actions } => actions.iter().find_map(|a| match a {
                ActionIr::LockUser { after, seconds } => Some((*after, *seconds)),
                _ => None,
            }),
            _ => None,
        });
    ctx.effects.push(Effect::FailedAttempt {
        user: id,
        lock_after: policy.map(|(after, _)| after),
        lock_seconds: policy.map(|(_, seconds)| seconds),
    });
    match policy {
        Some((after, seconds)) => lock_if_due(ctx, run, after, seconds),
        None => false,
    }
}

/// Locks the run's user when their failures (stored before this login, plus this login's
/// credential failures for that same user) reach `after`. Returns whether the user is locked.
fn lock_if_due(ctx: &mut Ctx, run: &mut Run, after: u32, seconds: u64) -> bool {
    if run.locked {
        return true;
    }
    let Some(user) = run.user.as_ref().or(run.attempted_user.as_ref()) else {
        return false;
    };
    let id = user.id.clone();
    let baseline = run
        .baseline_failures
        .get(&id)
        .copied()
        .unwrap_or(user.failed_attempts);
    let failures = baseline + i64::from(run.failures_by_user.get(&id).copied().unwrap_or(0));
    if failures < i64::from(after) {
        return false;
    }
    let state = run.state.clone();
    ctx.effects.push(Effect::LockUser {
        user: id.clone(),
        seconds,
    });
    run.locked = true;
    run.note(
        &state,
        format!("lock {id} for {seconds}s after {failures} failed attempts"),
    );
    true
}

/// RFC 8176 method for an authenticator.
fn amr_of(step: &StepRecord) -> Option<&'static str> {
    match step.authenticator.as_str() {
        "password" => Some("pwd"),
        "totp" | "email_otp" | "recovery_code" => Some("otp"),
        "passkey" => Some("hwk"),
        // RFC 8176 registers no value for federation; what the upstream did is its own amr.
        "federated" => None,
        _ => None,
    }
}

fn complete(ctx: &mut Ctx, run: &mut Run) -> Output {
    let Some(user) = run.user.clone().filter(|u| !u.id.is_empty()) else {
        run.note(
            &run.state.clone(),
            "reached success without identifying a user: denied",
        );
        return deny(run, "no user was identified");
    };
    let mut amr: Vec<String> = Vec::new();
    for method in run.steps.iter().filter_map(amr_of) {
        if !amr.iter().any(|m| m == method) {
            amr.push(method.to_string());
        }
    }
    // Enrolling proves possession of a new factor, not who the user is.
    let credential = run
        .steps
        .iter()
        .any(|s| s.authenticator != "identifier_first" && !s.enrolled);
    if !credential {
        return deny(run, "no credential was verified");
    }
    if user.disabled {
        return deny(run, "account disabled");
    }
    // Multi-factor means two different kinds of factor, not one factor twice.
    let factors = amr.len() + usize::from(run.steps.iter().any(|s| s.authenticator == "federated"));
    if factors >= 2 {
        amr.push("mfa".into());
    }
    let acr = match run.claims.get("acr") {
        Some(Value::String(acr)) => acr.clone(),
        _ if factors >= 2 => "urn:idflow:acr:mfa".into(),
        _ => "urn:idflow:acr:1fa".into(),
    };
    for trigger in &ctx.flow.ir.provisioning {
        if trigger.on.iter().any(|e| e == "login.succeeded") {
            ctx.effects.push(Effect::Provision {
                target: trigger.to.clone(),
                event: "login.succeeded".into(),
                user: user.id.clone(),
            });
        }
    }
    let failed_here = run.failures_by_user.get(&user.id).copied().unwrap_or(0) > 0;
    if user.failed_attempts > 0 || failed_here {
        ctx.effects.push(Effect::ResetFailures {
            user: user.id.clone(),
        });
    }
    run.status = Status::Completed;
    run.note(
        &run.state.clone(),
        format!("complete for {} (acr {acr})", user.id),
    );
    let claims: BTreeMap<String, Value> = run.claims.clone();
    Output::Complete {
        subject: user.id,
        claims,
        amr,
        acr,
    }
}
