//! The engine against real flows: the shipped ones, and small ones written here for the edge
//! cases (attempt exhaustion, script limits, version swaps).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use idflow_dsl::ir::AuthOption;
use idflow_dsl::{Names, SourceFile, Syntax, compile};
use idflow_engine::model::{Input, Output, Request, UserView};
use idflow_engine::run::{Run, Status};
use idflow_engine::{Engine, Fixtures, LoadedFlow, Registry};
use proptest::prelude::*;

fn load(engine: &Engine, yaml: &str) -> LoadedFlow {
    let (compiled, diagnostics) = compile(yaml, Syntax::Yaml, &Names::default());
    let compiled = compiled.unwrap_or_else(|| panic!("{diagnostics:#?}"));
    engine.load(compiled.ir).expect("loads")
}

fn user(id: &str) -> UserView {
    UserView {
        id: id.into(),
        username: id.into(),
        ..UserView::default()
    }
}

/// The input "OPTION passed for user ID".
fn passed(option: AuthOption, id: &str) -> Input {
    Input::Passed {
        option,
        user: user(id),
    }
}

fn password() -> AuthOption {
    AuthOption::Authenticator("password".into())
}

#[test]
fn an_exhausted_attempt_counter_denies() {
    let engine = Engine::new();
    let flow = load(
        &engine,
        "flow: f\nsteps:\n  - id: first\n    authenticate: [password]\n    attempts: 2\n",
    );
    let directory = Fixtures::default();
    let step = engine.start(&flow, Request::default(), 0, &directory);
    assert!(
        matches!(
            step.output,
            Output::Prompt {
                attempts_left: 2,
                ..
            }
        ),
        "{:?}",
        step.output
    );
    let step = engine.advance(
        &flow,
        step.run,
        Input::Failed {
            option: password(),
            user: None,
            reason: None,
        },
        1,
        &directory,
    );
    assert!(
        matches!(
            step.output,
            Output::Prompt {
                attempts_left: 1,
                ..
            }
        ),
        "{:?}",
        step.output
    );
    let step = engine.advance(
        &flow,
        step.run,
        Input::Failed {
            option: password(),
            user: None,
            reason: None,
        },
        2,
        &directory,
    );
    assert_eq!(
        step.output,
        Output::Denied {
            reason: "authentication failed".into()
        }
    );
    assert_eq!(step.run.status, Status::Denied);
    // A finished run stays finished whatever comes next.
    let step = engine.advance(&flow, step.run, passed(password(), "u1"), 3, &directory);
    assert!(matches!(step.output, Output::Denied { .. }));
}

#[test]
fn a_script_over_its_operation_limit_denies_and_says_why() {
    let engine = Engine::new();
    let flow = load(
        &engine,
        "flow: f\nsteps:\n  - id: first\n    authenticate: [password]\n  - id: second\n    when: 'let n = 0; while true { n += 1; } n > 0'\n    authenticate: [totp]\n",
    );
    let directory = Fixtures::default();
    let step = engine.start(&flow, Request::default(), 0, &directory);
    let step = engine.advance(&flow, step.run, passed(password(), "u1"), 1, &directory);
    assert_eq!(
        step.output,
        Output::Denied {
            reason: "script error".into()
        }
    );
    assert_eq!(step.run.path, ["first", "second.when", "deny.script_error"]);
    assert!(
        step.run
            .trace
            .iter()
            .any(|t| t.event.contains("script error")
                && t.event.to_lowercase().contains("operations")),
        "{:#?}",
        step.run.trace
    );
}

/// The size limits of the script engine hold where flows run: a `when` that grows an array,
/// a map or a string past its limit denies the login, and the trace names the limit that
/// stopped it. Each loop ends on its own, so without the limit the step would run (and this
/// test fail) rather than hang. (Call depth cannot be reached here: `flow check` refuses
/// scripts that define functions; `Sandbox`'s tests cover it.)
#[test]
fn a_script_over_a_size_limit_denies_and_names_the_limit() {
    let engine = Engine::new();
    let directory = Fixtures::default();
    for (script, limit) in [
        (
            "let a = []; for i in 0..2000 { a.push(i); } a.len() > 0",
            "Size of array/BLOB too large",
        ),
        (
            "let m = #{}; for i in 0..2000 { let one = #{}; one[\"k\" + i] = i; m += one; } m.len() > 0",
            "Size of object map too large",
        ),
        (
            "let s = \"x\"; while s.len() < 100000 { s += s; } s.len() > 0",
            "Length of string too large",
        ),
    ] {
        let flow = load(
            &engine,
            &format!(
                "flow: f\nsteps:\n  - id: first\n    authenticate: [password]\n  - id: second\n    when: '{script}'\n    authenticate: [totp]\n"
            ),
        );
        let step = engine.start(&flow, Request::default(), 0, &directory);
        let step = engine.advance(&flow, step.run, passed(password(), "u1"), 1, &directory);
        assert_eq!(
            step.output,
            Output::Denied {
                reason: "script error".into()
            },
            "{script}"
        );
        assert_eq!(step.run.path, ["first", "second.when", "deny.script_error"]);
        assert!(
            step.run
                .trace
                .iter()
                .any(|t| t.event.contains("script error") && t.event.contains(limit)),
            "{script}: {:#?}",
            step.run.trace
        );
    }
}

#[test]
fn a_second_factor_for_another_user_denies() {
    let engine = Engine::new();
    let flow = load(
        &engine,
        "flow: f\nsteps:\n  - id: a\n    authenticate: [password]\n  - id: b\n    authenticate: [totp]\n",
    );
    let directory = Fixtures::default();
    let step = engine.start(&flow, Request::default(), 0, &directory);
    let step = engine.advance(&flow, step.run, passed(password(), "alice"), 1, &directory);
    let totp = AuthOption::Authenticator("totp".into());
    let step = engine.advance(&flow, step.run, passed(totp, "mallory"), 2, &directory);
    assert_eq!(
        step.output,
        Output::Denied {
            reason: "a step verified a different user".into()
        }
    );
}

#[test]
fn an_option_the_state_does_not_offer_is_refused_without_progress() {
    let engine = Engine::new();
    let flow = load(
        &engine,
        "flow: f\nsteps:\n  - id: a\n    authenticate: [password]\n  - id: b\n    authenticate: [totp]\n",
    );
    let directory = Fixtures::default();
    let step = engine.start(&flow, Request::default(), 0, &directory);
    let totp = AuthOption::Authenticator("totp".into());
    let step = engine.advance(&flow, step.run, passed(totp, "u1"), 1, &directory);
    assert!(
        matches!(&step.output, Output::Prompt { state, error: Some(_), .. } if state == "a"),
        "{:?}",
        step.output
    );
    assert!(step.run.user.is_none());
}

#[test]
fn a_run_started_on_version_1_completes_after_a_swap_to_version_2() {
    let engine = Engine::new();
    let registry = Registry::new(engine.sandbox());
    let file = |text: &str| SourceFile {
        name: "f.yaml".into(),
        text: text.into(),
        syntax: Syntax::Yaml,
    };
    let v1 = "flow: f\napplies_to: [app]\nsteps:\n  - id: a\n    authenticate: [password]\n  - id: b\n    authenticate: [totp]\n";
    let v2 = "flow: f\napplies_to: [app]\nsteps:\n  - id: a\n    authenticate: [passkey]\n";
    registry
        .reload(&[file(v1)], &Names::default())
        .expect("v1 loads");
    let directory = Fixtures::default();
    let flow = registry.snapshot().flow_for("app").expect("flow");
    let step = engine.start(&flow, Request::default(), 0, &directory);
    let step = engine.advance(&flow, step.run, passed(password(), "u1"), 1, &directory);
    let stored = step.run.encode();

    let summary = registry
        .reload(&[file(v2)], &Names::default())
        .expect("v2 loads");
    assert_eq!(summary.changed.len(), 1);
    let snapshot = registry.snapshot();
    assert_ne!(
        snapshot.flow_for("app").expect("flow").version,
        flow.version,
        "new runs get version 2"
    );

    let run = Run::decode(&stored).expect("decodes");
    let old = snapshot
        .version(&run.version)
        .expect("version 1 stays resolvable");
    let totp = AuthOption::Authenticator("totp".into());
    let step = engine.advance(&old, run, passed(totp, "u1"), 2, &directory);
    assert!(
        matches!(step.output, Output::Complete { .. }),
        "{:?}",
        step.output
    );

    registry.retire_versions(&HashSet::new());
    assert!(
        registry.snapshot().version(&flow.version).is_none(),
        "retired once no run uses it"
    );
}

#[test]
fn a_run_resumes_on_another_node_that_loads_its_version_from_stored_ir() {
    let engine = Engine::new();
    let v1 = "flow: f\napplies_to: [app]\nsteps:\n  - id: a\n    authenticate: [password]\n  - id: b\n    authenticate: [totp]\n";
    let flow = load(&engine, v1);
    let directory = Fixtures::default();
    let step = engine.start(&flow, Request::default(), 0, &directory);
    let step = engine.advance(&flow, step.run, passed(password(), "u1"), 1, &directory);
    let stored_run = step.run.encode();
    let stored_ir = serde_json::to_string(&flow.ir).expect("IR serializes");

    // Node B runs version 2 and has never seen version 1.
    let node_b = Engine::new();
    let registry = Registry::new(node_b.sandbox());
    let v2 = SourceFile {
        name: "f.yaml".into(),
        text: "flow: f\napplies_to: [app]\nsteps:\n  - id: a\n    authenticate: [passkey]\n".into(),
        syntax: Syntax::Yaml,
    };
    registry.reload(&[v2], &Names::default()).expect("v2 loads");
    let run = Run::decode(&stored_run).expect("decodes");
    assert!(registry.snapshot().version(&run.version).is_none());
    let ir = serde_json::from_str(&stored_ir).expect("IR deserializes");
    let old = registry
        .load_version(&run.version, ir)
        .expect("version 1 loads from its IR");
    let totp = AuthOption::Authenticator("totp".into());
    let step = node_b.advance(&old, run, passed(totp, "u1"), 2, &directory);
    assert!(
        matches!(step.output, Output::Complete { .. }),
        "{:?}",
        step.output
    );
    let tampered: idflow_dsl::FlowIr =
        serde_json::from_str(&stored_ir.replace("totp", "passkey")).expect("IR");
    assert!(
        registry
            .load_version("sha256:0000000000000000", tampered)
            .is_err(),
        "IR must match its version"
    );
}

#[test]
fn identification_alone_is_not_a_login_and_one_factor_twice_is_not_mfa() {
    let engine = Engine::new();
    let directory = Fixtures::default();
    // `flow check` rejects such a flow (F061); the engine must hold even for IR that skipped it.
    let checked = load(
        &engine,
        "flow: f\nsteps:\n  - id: who\n    authenticate: [password]\n",
    );
    let mut ir = checked.ir.clone();
    if let Some(state) = ir.states.get_mut("who") {
        state.kind = idflow_dsl::ir::StateKind::Authenticate {
            options: vec![AuthOption::Authenticator("identifier_first".into())],
            attempts: 3,
            enroll: false,
        };
    }
    let flow = engine.load(ir).expect("loads");
    let step = engine.start(&flow, Request::default(), 0, &directory);
    let step = engine.advance(
        &flow,
        step.run,
        Input::Identify {
            identifier: "u1".into(),
            user: Some(user("u1")),
        },
        1,
        &directory,
    );
    assert_eq!(
        step.output,
        Output::Denied {
            reason: "no credential was verified".into()
        }
    );

    let flow = load(
        &engine,
        "flow: f\nsteps:\n  - id: a\n    authenticate: [password]\n  - id: b\n    authenticate: [password]\n",
    );
    let step = engine.start(&flow, Request::default(), 0, &directory);
    let step = engine.advance(&flow, step.run, passed(password(), "u1"), 1, &directory);
    let step = engine.advance(&flow, step.run, passed(password(), "u1"), 2, &directory);
    match step.output {
        Output::Complete { amr, acr, .. } => {
            assert_eq!(amr, ["pwd"]);
            assert_eq!(acr, "urn:idflow:acr:1fa");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn jit_never_revives_a_disabled_account_nor_takes_a_username() {
    let engine = Engine::new();
    let flow = load(
        &engine,
        "flow: f\nsteps:\n  - id: a\n    authenticate: [{ federated: google }]\njit:\n  - idp: google\n    create:\n      username: claims.email\n",
    );
    let federated = |email: &str| Input::Federated {
        idp: "google".into(),
        subject: "g1".into(),
        claims: BTreeMap::from([("email".into(), serde_json::json!(email))]),
    };
    let revived = UserView {
        disabled: true,
        ..user(&idflow_engine::jit::user_id("google", "g1"))
    };
    let directory = Fixtures {
        users: vec![revived],
        ..Fixtures::default()
    };
    let step = engine.start(&flow, Request::default(), 0, &directory);
    let step = engine.advance(&flow, step.run, federated("new@x.example"), 1, &directory);
    assert_eq!(
        step.output,
        Output::Denied {
            reason: "the account for this upstream identity is disabled".into()
        },
        "{:#?}",
        step.run.trace
    );
    assert!(step.effects.is_empty());

    let taken = UserView {
        username: "root@x.example".into(),
        ..user("u-root")
    };
    let directory = Fixtures {
        users: vec![taken],
        ..Fixtures::default()
    };
    let step = engine.start(&flow, Request::default(), 0, &directory);
    let step = engine.advance(&flow, step.run, federated("root@x.example"), 1, &directory);
    assert!(
        matches!(step.output, Output::Denied { .. }),
        "{:?}",
        step.output
    );
    assert!(step.effects.is_empty(), "{:?}", step.effects);
}

#[test]
fn a_reload_with_an_error_keeps_the_live_flows() {
    let engine = Engine::new();
    let registry = Registry::new(engine.sandbox());
    let file = |text: &str| SourceFile {
        name: "f.yaml".into(),
        text: text.into(),
        syntax: Syntax::Yaml,
    };
    registry
        .reload(
            &[file(
                "flow: f\ndefault: true\nsteps:\n  - id: a\n    authenticate: [password]\n",
            )],
            &Names::default(),
        )
        .expect("loads");
    let before = registry.snapshot();
    let result = registry.reload(
        &[file(
            "flow: f\nsteps:\n  - id: a\n    authenticate: [pasword]\n",
        )],
        &Names::default(),
    );
    assert!(matches!(
        result,
        Err(idflow_engine::registry::ReloadError::Check(_))
    ));
    let after = registry.snapshot();
    assert!(
        Arc::ptr_eq(&before, &after),
        "the old snapshot is still the live one"
    );
}

#[test]
fn runs_refuse_unknown_encodings() {
    let run = Run::new("f", "sha256:1", "a", Request::default());
    let mut text = run.encode();
    assert_eq!(Run::decode(&text).expect("decodes"), run);
    text = text.replace("\"format\":1", "\"format\":99");
    assert!(Run::decode(&text).is_err());
    assert!(Run::decode("not json").is_err());
}

/// The shipped flows, loaded once for every test of this file.
fn shipped() -> &'static (Engine, Vec<LoadedFlow>) {
    static SHIPPED: std::sync::OnceLock<(Engine, Vec<LoadedFlow>)> = std::sync::OnceLock::new();
    SHIPPED.get_or_init(load_shipped)
}

fn load_shipped() -> (Engine, Vec<LoadedFlow>) {
    let engine = Engine::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../flows");
    let config =
        std::fs::read_to_string(dir.join("../examples/quickstart/idflow.toml")).expect("config");
    let names = quickstart_names(&config);
    let mut flows = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("flows")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.to_string_lossy().to_string();
        if !name.ends_with(".yaml") || name.ends_with(".test.yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let (compiled, diagnostics) = compile(&text, Syntax::Yaml, &names);
        let compiled = compiled.unwrap_or_else(|| panic!("{name}: {diagnostics:#?}"));
        flows.push(engine.load(compiled.ir).expect("loads"));
    }
    assert!(flows.len() >= 6);
    (engine, flows)
}

/// The names of the quickstart configuration (parsed minimally: this crate has no TOML parser).
fn quickstart_names(config: &str) -> Names {
    let section = |prefix: &str| {
        Some(
            config
                .lines()
                .filter_map(|l| {
                    l.strip_prefix(prefix)
                        .and_then(|rest| rest.strip_suffix(']'))
                })
                .map(String::from)
                .collect(),
        )
    };
    let idps: Option<std::collections::BTreeSet<String>> = section("[identity_providers.");
    Names {
        applications: section("[applications."),
        identity_providers: idps.map(|set| {
            set.into_iter()
                .map(|idp| {
                    let verified = if idp == "acme-saml" {
                        ["email".to_string()].into()
                    } else {
                        Default::default()
                    };
                    (idp, verified)
                })
                .collect()
        }),
        provisioning_targets: section("[provisioning_targets."),
    }
}

fn arbitrary_input() -> impl Strategy<Value = Input> {
    let options = prop::sample::select(vec![
        AuthOption::Authenticator("identifier_first".into()),
        AuthOption::Authenticator("password".into()),
        AuthOption::Authenticator("totp".into()),
        AuthOption::Authenticator("passkey".into()),
        AuthOption::Authenticator("email_otp".into()),
        AuthOption::Authenticator("recovery_code".into()),
        AuthOption::Federated("google".into()),
        AuthOption::Federated("acme-saml".into()),
    ]);
    let users = prop::sample::select(vec![
        user("alice"),
        UserView {
            roles: vec!["admin".into()],
            factors: vec!["totp".into()],
            ..user("admin")
        },
        UserView {
            disabled: true,
            ..user("disabled")
        },
    ]);
    prop_oneof![
        options.clone().prop_map(Input::Choose),
        (options.clone(), users.clone()).prop_map(|(option, user)| Input::Passed { option, user }),
        options.clone().prop_map(|option| Input::Failed {
            option,
            user: None,
            reason: None,
        }),
        prop::sample::select(vec!["a@acme.example", "b@other.example", ""]).prop_map(|i| {
            Input::Identify {
                identifier: i.into(),
                user: Some(user("alice")),
            }
        }),
        (
            prop::sample::select(vec!["google", "acme-saml"]),
            any::<bool>()
        )
            .prop_map(|(idp, verified)| Input::Federated {
                idp: idp.into(),
                subject: "s1".into(),
                claims: BTreeMap::from([
                    ("email".into(), serde_json::json!("new@acme.example")),
                    ("email_verified".into(), serde_json::json!(verified)),
                ]),
            }),
        any::<bool>().prop_map(|consent| Input::Answer {
            consent,
            username: Some("n".into()),
            password_set: true
        }),
        Just(Input::Cancel),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any sequence of inputs on any shipped flow keeps the run in a well-formed state: the
    /// output is one of the five kinds, a finished run stays finished, and nothing panics.
    #[test]
    fn any_inputs_on_any_shipped_flow_end_well(
        flow in any::<prop::sample::Index>(),
        risk in 0i64..100,
        inputs in prop::collection::vec(arbitrary_input(), 0..12),
    ) {
        let (engine, flows) = shipped();
        let flow = &flows[flow.index(flows.len())];
        let directory = Fixtures::default();
        let request = Request { risk, ip: "10.0.0.1".into(), ..Request::default() };
        let mut step = engine.start(flow, request, 0, &directory);
        for (i, input) in inputs.into_iter().enumerate() {
            let was_finished = step.run.status != Status::Active;
            // Every step resumes from the stored form, as on another node.
            let run = Run::decode(&step.run.encode()).expect("a run survives its encoding");
            step = engine.advance(flow, run, input, i as u64 + 1, &directory);
            if let Output::Complete { subject, .. } = &step.output {
                prop_assert!(
                    step.run.steps.iter().any(|s| s.authenticator != "identifier_first"),
                    "completed for {subject} without a credential: {:?}", step.run.trace
                );
                prop_assert!(!subject.is_empty());
            }
            if was_finished {
                prop_assert!(step.run.status != Status::Active);
            }
            match (&step.output, step.run.status) {
                (Output::Complete { .. }, Status::Completed) | (Output::Denied { .. }, Status::Denied) => {}
                (Output::Prompt { .. } | Output::Redirect { .. } | Output::Confirm { .. }, Status::Active) => {}
                (Output::Denied { .. }, Status::Completed) => {}
                (output, status) => prop_assert!(false, "{output:?} with status {status:?}"),
            }
            prop_assert!(step.run.path.len() < 200, "path grows without bound");
        }
    }
}

#[test]
fn an_enroll_state_without_a_verified_credential_denies() {
    // `flow check` refuses such a flow (F062); the engine holds the line for hand-made IR too:
    // identifying someone, or a session too old, does not let anyone set up a factor for them.
    let engine = Engine::new();
    let checked = load(
        &engine,
        "flow: f\nstart: who\nstates:\n  who: { authenticate: [identifier_first], next: login }\n  login: { authenticate: [password], next: setup }\n  setup: { enroll: [totp], next: success }\n",
    );
    let mut ir = checked.ir.clone();
    if let Some(who) = ir.states.get_mut("who") {
        who.transitions.insert("success".into(), "setup".into());
    }
    let bypass = engine.load(ir).expect("loads");
    let directory = Fixtures::default();
    let step = engine.start(&bypass, Request::default(), 0, &directory);
    let step = engine.advance(
        &bypass,
        step.run,
        Input::Identify {
            identifier: "alice".into(),
            user: Some(user("alice")),
        },
        1,
        &directory,
    );
    let refused = Output::Denied {
        reason: "enrolling needs a credential verified first (or recently, for a session)".into(),
    };
    assert_eq!(step.output, refused);

    // A session's password passes the password state, but is too old to vouch for enrolling.
    let session = |fresh_since| idflow_engine::Carried {
        user: user("alice"),
        identifier: String::new(),
        fresh_since,
        steps: vec![idflow_engine::model::StepRecord {
            state: "login".into(),
            authenticator: "password".into(),
            idp: None,
            at: 50,
            carried: false,
            enrolled: false,
        }],
    };
    let stale = engine.start_carried(
        &checked,
        Request::default(),
        Some(session(60)),
        100,
        &directory,
    );
    assert!(
        matches!(&stale.output, Output::Prompt { state, enroll: false, .. } if state == "login"),
        "an old session must sign in again before enrolling: {:?}",
        stale.output
    );
    let again = engine.advance(
        &checked,
        stale.run,
        passed(password(), "alice"),
        101,
        &directory,
    );
    assert!(
        matches!(&again.output, Output::Prompt { state, enroll: true, .. } if state == "setup"),
        "{:?}",
        again.output
    );
    let recent = engine.start_carried(
        &checked,
        Request::default(),
        Some(session(40)),
        100,
        &directory,
    );
    assert!(
        matches!(&recent.output, Output::Prompt { state, enroll: true, .. } if state == "setup"),
        "{:?}",
        recent.output
    );
    // Being identified by the session is not a sign-in: it keeps the session's time.
    assert!(
        recent.run.steps.iter().all(|s| s.at == 50 && s.carried),
        "{:?}",
        recent.run.steps
    );
}

#[test]
fn steps_a_session_carried_count_only_for_the_session_user() {
    let engine = Engine::new();
    let flow = load(
        &engine,
        "flow: f\nstart: who\nstates:\n  who: { authenticate: [identifier_first], next: login }\n  login: { authenticate: [password], next: success }\n",
    );
    let carried = idflow_engine::Carried {
        user: user("alice"),
        identifier: String::new(),
        fresh_since: 0,
        steps: vec![idflow_engine::model::StepRecord {
            state: "login".into(),
            authenticator: "password".into(),
            idp: None,
            at: 7,
            carried: false,
            enrolled: false,
        }],
    };
    let directory = Fixtures::default();
    // The session's own user: identification and the password are satisfied, at their time.
    let step = engine.start_carried(
        &flow,
        Request::default(),
        Some(carried.clone()),
        100,
        &directory,
    );
    assert!(
        matches!(&step.output, Output::Complete { subject, .. } if subject == "alice"),
        "{:?}",
        step.output
    );
    assert_eq!(step.run.steps.last().map(|s| s.at), Some(7));
    // A flow that asks who is signing in before the password: someone typing another name in
    // the same browser must not inherit alice's password.
    let flow = load(
        &engine,
        "flow: g\nstart: login\nstates:\n  login: { authenticate: [password], next: who }\n  who: { authenticate: [identifier_first], next: again }\n  again: { authenticate: [password], next: success }\n",
    );
    let step = engine.start_carried(&flow, Request::default(), Some(carried), 100, &directory);
    assert!(
        matches!(step.output, Output::Complete { .. }),
        "{:?}",
        step.output
    );
    let flow = load(
        &engine,
        "flow: h\nstart: who\nstates:\n  who: { authenticate: [identifier_first, password], next: login }\n  login: { authenticate: [password], next: success }\n",
    );
    let mut run = Run::new("h", &flow.version, "who", Request::default());
    run.carried = vec![idflow_engine::model::StepRecord {
        state: "login".into(),
        authenticator: "password".into(),
        idp: None,
        at: 7,
        carried: false,
        enrolled: false,
    }];
    run.carried_user = Some("alice".into());
    let step = engine.advance(
        &flow,
        run,
        Input::Identify {
            identifier: "bob".into(),
            user: Some(user("bob")),
        },
        100,
        &directory,
    );
    assert!(
        matches!(&step.output, Output::Prompt { state, .. } if state == "login"),
        "bob must type his own password: {:?}",
        step.output
    );
}

fn newcomer(id: &str, email: &str) -> Input {
    Input::Registered {
        user: UserView {
            id: id.into(),
            username: id.into(),
            email: email.into(),
            ..UserView::default()
        },
        email_verified: false,
    }
}

#[test]
fn a_sign_up_that_needs_approval_creates_a_disabled_account_and_signs_nobody_in() {
    let engine = Engine::new();
    let flow = load(
        &engine,
        "flow: f\nsteps:\n  - id: join\n    register: { approval: true, roles: [member] }\n",
    );
    let directory = Fixtures::default();
    let step = engine.start(&flow, Request::default(), 0, &directory);
    assert!(
        matches!(&step.output, Output::Register { state, verify_email: false, .. } if state == "join"),
        "{:?}",
        step.output
    );
    let step = engine.advance(
        &flow,
        step.run,
        newcomer("n1", "n1@example.com"),
        1,
        &directory,
    );
    assert_eq!(
        step.output,
        Output::AwaitingApproval {
            subject: "n1".into()
        }
    );
    assert_eq!(step.run.status, Status::Denied);
    let created = step.effects.iter().find_map(|effect| match effect {
        idflow_engine::model::Effect::CreateUser {
            id,
            disabled,
            signup,
            roles,
            ..
        } => Some((id.clone(), *disabled, *signup, roles.clone())),
        _ => None,
    });
    assert_eq!(
        created,
        Some(("n1".into(), true, true, vec!["member".to_string()]))
    );
    // The finished run answers nothing more: a later input does not sign anyone in.
    let after = engine.advance(
        &flow,
        step.run,
        newcomer("n2", "n2@example.com"),
        2,
        &directory,
    );
    assert!(
        matches!(after.output, Output::Denied { .. }),
        "{:?}",
        after.output
    );
    assert!(after.effects.is_empty());
}

#[test]
fn a_sign_up_without_approval_identifies_the_new_user_for_the_steps_after_it() {
    let engine = Engine::new();
    let flow = load(
        &engine,
        "flow: f\nsteps:\n  - id: join\n    register: { attributes: [name] }\n  - id: second\n    enroll: [totp]\n",
    );
    let directory = Fixtures::default();
    let step = engine.start(&flow, Request::default(), 0, &directory);
    // An attribute the flow does not ask for is not stored; one it asks for must be there.
    let mut input = newcomer("n1", "n1@example.com");
    if let Input::Registered { user, .. } = &mut input {
        user.attributes.insert("role".into(), "admin".into());
    }
    let step = engine.advance(&flow, step.run, input.clone(), 1, &directory);
    assert!(
        matches!(&step.output, Output::Register { error: Some(e), .. } if e.contains("name")),
        "{:?}",
        step.output
    );
    assert!(step.effects.is_empty());
    if let Input::Registered { user, .. } = &mut input {
        user.attributes.insert("name".into(), "Nia".into());
    }
    let step = engine.advance(&flow, step.run, input, 2, &directory);
    // The new account may enroll a factor at once: creating it proved who this is.
    assert!(
        matches!(&step.output, Output::Prompt { state, enroll: true, .. } if state == "second"),
        "{:?}",
        step.output
    );
    let attributes = step.effects.iter().find_map(|effect| match effect {
        idflow_engine::model::Effect::CreateUser { attributes, .. } => Some(attributes.clone()),
        _ => None,
    });
    let attributes = attributes.expect("created");
    assert_eq!(attributes.get("name"), Some(&"Nia".into()));
    assert_eq!(attributes.get("email"), Some(&"n1@example.com".into()));
    assert!(!attributes.contains_key("role"));
    assert_eq!(step.run.user.as_ref().map(|u| u.id.as_str()), Some("n1"));
}
