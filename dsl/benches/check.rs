//! How long `flow check` takes on 1,000 generated flow files (half YAML, half `.flow`, in both
//! the step and the state form, with scripts): parse, lower, script compile, graph checks and
//! the cross-file checks. Goal: under 1 s on the 2-core reference machine.
//!
//! Run: `cargo bench -p idflow-dsl --bench check`

use criterion::{Criterion, criterion_group, criterion_main};
use idflow_dsl::{Names, SourceFile, Syntax, check_project};

/// A YAML step-form flow with a guarded second step.
fn yaml_flow(i: usize) -> String {
    format!(
        "flow: flow-{i}\ndescription: Generated flow {i}.\napplies_to: [app-{i}]\nsteps:\n  - id: first\n    authenticate: [password, passkey]\n  - id: second\n    when: user.has_role(\"admin\") || request.risk > {risk}\n    authenticate: [totp, passkey]\n    attempts: 3\non_failure:\n  - lock_user: {{ after: 5, for: 15m }}\nrequire:\n  - passes_one_of: [password, passkey]\n",
        risk = i % 100
    )
}

/// A `.flow` state-form flow with a routing decision and a bounded retry loop.
fn dsl_flow(i: usize) -> String {
    format!(
        "flow flow-{i} \"Generated flow {i}.\" {{\n  applies_to app-{i}\n  state start {{\n    authenticate identifier_first\n    next route\n  }}\n  state route {{\n    decide `if context.identifier_domain == \"d{i}.example\" {{ \"otp\" }} else {{ \"local\" }}`\n    next otp -> mail, local -> pwd\n  }}\n  state mail {{\n    authenticate email_otp\n    next success\n  }}\n  state pwd {{\n    authenticate password\n    visits 3\n    next success\n    fail start\n  }}\n}}\n"
    )
}

fn files() -> Vec<SourceFile> {
    (0..1000)
        .map(|i| {
            if i % 2 == 0 {
                SourceFile {
                    name: format!("flow-{i}.yaml"),
                    text: yaml_flow(i),
                    syntax: Syntax::Yaml,
                }
            } else {
                SourceFile {
                    name: format!("flow-{i}.flow"),
                    text: dsl_flow(i),
                    syntax: Syntax::Flow,
                }
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let files = files();
    let names = Names::default();
    let reports = check_project(&files, &names);
    let errors: usize = reports.iter().map(|r| r.diagnostics.len()).sum();
    assert_eq!(
        errors,
        0,
        "generated flows must check clean: {:?}",
        reports.iter().find(|r| !r.diagnostics.is_empty())
    );
    let mut group = c.benchmark_group("flow check");
    group.sample_size(10);
    group.bench_function("1000 files", |b| b.iter(|| check_project(&files, &names)));
    group.bench_function("1 yaml file", |b| {
        b.iter(|| check_project(&files[..1], &names))
    });
    group.bench_function("1 dsl file", |b| {
        b.iter(|| check_project(&files[1..2], &names))
    });
    let checker = idflow_dsl::script::ScriptChecker::shared();
    let condition = "user.has_role(\"admin\") || request.risk > 50";
    group.bench_function("1 when condition (compile + name check)", |b| {
        b.iter(|| checker.check(condition, idflow_dsl::script_api::ScriptContext::Flow))
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
