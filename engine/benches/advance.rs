//! Costs of running flows: one `advance` through an authenticate state and through a decide
//! state, one `when` condition, and swapping in a registry of 1,000 flows.
//!
//! Run: `cargo bench -p idflow-engine --bench advance`

use std::collections::BTreeMap;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use idflow_dsl::ir::AuthOption;
use idflow_dsl::{Names, SourceFile, Syntax, compile};
use idflow_engine::model::{Input, Request, UserView};
use idflow_engine::sandbox::{ContextView, FlowScope};
use idflow_engine::{Engine, Fixtures, LoadedFlow, Registry};

fn load(engine: &Engine, yaml: &str) -> LoadedFlow {
    let (compiled, diagnostics) = compile(yaml, Syntax::Yaml, &Names::default());
    engine
        .load(compiled.unwrap_or_else(|| panic!("{diagnostics:?}")).ir)
        .expect("loads")
}

const PLAIN: &str = "flow: plain\nstates:\n  a: { authenticate: [password], next: b }\n  b: { authenticate: [totp], next: success }\n";
const DECIDING: &str = "flow: deciding\nstates:\n  a: { authenticate: [password], next: d }\n  d: { decide: 'if user.has_role(\"admin\") || request.risk > 50 { \"strong\" } else { \"weak\" }', next: { strong: b, weak: c } }\n  b: { authenticate: [totp], next: success }\n  c: { authenticate: [passkey], next: success }\n";

fn bench(c: &mut Criterion) {
    let engine = Engine::new();
    let directory = Fixtures::default();
    let user = UserView {
        id: "u1".into(),
        username: "alice".into(),
        roles: vec!["admin".into()],
        ..UserView::default()
    };
    let request = Request {
        risk: 60,
        ..Request::default()
    };
    let password = AuthOption::Authenticator("password".into());
    let mut group = c.benchmark_group("engine");

    for (name, yaml) in [
        ("advance: authenticate -> prompt", PLAIN),
        ("advance: authenticate -> decide -> prompt", DECIDING),
    ] {
        let flow = load(&engine, yaml);
        let start = engine.start(&flow, request.clone(), 0, &directory).run;
        group.bench_function(name, |b| {
            b.iter_batched(
                || start.clone(),
                |run| {
                    engine.advance(
                        &flow,
                        run,
                        Input::Passed {
                            option: password.clone(),
                            user: user.clone(),
                        },
                        1,
                        &directory,
                    )
                },
                BatchSize::SmallInput,
            )
        });
    }

    let sandbox = engine.sandbox();
    let condition = sandbox
        .compile("user.has_role(\"admin\") || request.risk > 50")
        .expect("compiles");
    let claims = BTreeMap::new();
    group.bench_function("when condition (evaluate)", |b| {
        b.iter(|| {
            sandbox.eval_flow(
                &condition,
                FlowScope {
                    user: &user,
                    request: &request,
                    context: ContextView::default(),
                    claims: &claims,
                },
            )
        })
    });

    let files: Vec<SourceFile> = (0..1000)
        .map(|i| SourceFile {
            name: format!("f{i}.yaml"),
            text: format!("flow: f{i}\napplies_to: [app{i}]\nsteps:\n  - id: a\n    authenticate: [password]\n  - id: b\n    when: request.risk > {}\n    authenticate: [totp]\n", i % 100),
            syntax: Syntax::Yaml,
        })
        .collect();
    let registry = Registry::new(engine.sandbox());
    registry
        .reload(&files, &Names::default())
        .expect("1000 flows load");
    group.sample_size(10);
    group.bench_function("registry: check, load and swap 1,000 flows", |b| {
        b.iter(|| {
            let fresh = Registry::new(engine.sandbox());
            fresh.reload(&files, &Names::default()).expect("loads")
        })
    });
    let live = registry.snapshot();
    group.bench_function("registry: atomic swap of a 1,000-flow snapshot", |b| {
        b.iter_batched(
            || live.with_versions(live.versions.clone()),
            |snapshot| registry.install(snapshot),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, bench);
}
use group::benches;
criterion_main!(benches);
