//! The `idflow flow` command line as a CI pipeline uses it: exit codes, output formats, and
//! bad input (missing files, mixed directories, invalid UTF-8, huge and deeply nested files).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn idflow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_idflow"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .expect("idflow runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A fresh directory under the target dir, removed first if it exists.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

/// The first diagnostic reported for the file whose name ends in `file`.
fn diagnostic_for<'a>(diagnostics: &'a [serde_json::Value], file: &str) -> &'a serde_json::Value {
    diagnostics
        .iter()
        .find(|d| d["file"].as_str().is_some_and(|f| f.ends_with(file)))
        .unwrap_or_else(|| panic!("nothing reported for {file}"))
}

fn position(d: &serde_json::Value) -> (Option<&str>, Option<u64>, Option<u64>) {
    (d["code"].as_str(), d["line"].as_u64(), d["column"].as_u64())
}

const GOOD: &str = "flow: good\nsteps:\n  - id: first\n    authenticate: [password]\n";
const BAD: &str = "flow: bad\nsteps:\n  - id: first\n    authenticate: [pasword]\n";

#[test]
fn clean_flows_exit_zero_and_say_so() {
    let out = idflow(&[
        "flow",
        "check",
        "flows",
        "--config",
        "examples/quickstart/idflow.toml",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("0 errors"), "{}", stdout(&out));
}

#[test]
fn a_missing_path_is_a_usage_error() {
    let out = idflow(&["flow", "check", "no/such/dir"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no/such/dir"), "{}", stderr(&out));
    let out = idflow(&["flow", "compile", "no-such.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn a_bad_config_is_a_usage_error_naming_the_line() {
    let dir = scratch("bad-config");
    std::fs::write(
        dir.join("idflow.toml"),
        "[applications]\npayroll = 3\n[identity_providers.x\n",
    )
    .expect("write");
    let config = dir.join("idflow.toml");
    let out = idflow(&[
        "flow",
        "check",
        "flows",
        "--config",
        config.to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("line"), "{}", stderr(&out));
}

#[test]
fn a_directory_of_mixed_files_reports_every_bad_one_and_exits_one() {
    let dir = scratch("mixed");
    std::fs::write(dir.join("a-good.yaml"), GOOD).expect("write");
    std::fs::write(dir.join("b-bad.yaml"), BAD).expect("write");
    std::fs::write(
        dir.join("c-bad.flow"),
        "flow c { step s { authenticate totpp } }",
    )
    .expect("write");
    std::fs::write(dir.join("notes.txt"), "not a flow").expect("write");
    let out = idflow(&[
        "flow",
        "check",
        dir.to_str().expect("utf8"),
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json output");
    assert_eq!(report["files"], 3);
    assert_eq!(report["errors"], 2);
    let diagnostics = report["diagnostics"].as_array().expect("array");
    let b = diagnostic_for(diagnostics, "b-bad.yaml");
    assert_eq!(position(b), (Some("F010"), Some(4), Some(20)));
    assert_eq!(b["hint"], "did you mean `password`?");
    let c = diagnostic_for(diagnostics, "c-bad.flow");
    assert_eq!(position(c), (Some("F010"), Some(1), Some(32)));
}

/// Writes `BAD` to a fresh directory and runs `idflow flow check` on it with `extra` flags.
fn check_bad_file(case: &str, extra: &[&str]) -> Output {
    let file = scratch(case).join("bad.yaml");
    std::fs::write(&file, BAD).expect("write");
    let mut args = vec!["flow", "check", file.to_str().expect("utf8")];
    args.extend_from_slice(extra);
    idflow(&args)
}

#[test]
fn human_output_shows_file_line_col_source_and_caret() {
    let out = check_bad_file("human", &[]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("error[F010]: unknown authenticator `pasword`"),
        "{text}"
    );
    assert!(text.contains("bad.yaml:4:20"), "{text}");
    assert!(
        text.contains("4 |     authenticate: [pasword]\n  |                    ^^^^^^^"),
        "{text}"
    );
    assert!(text.contains("1 error, 0 warnings in 1 file"), "{text}");
}

#[test]
fn github_format_prints_workflow_annotations() {
    let out = check_bad_file("github", &["--format", "github"]);
    assert_eq!(out.status.code(), Some(1));
    let line = stdout(&out);
    assert!(line.starts_with("::error file="), "{line}");
    assert!(
        line.contains(
            ",line=4,col=20,endLine=4,endColumn=27,title=F010::unknown authenticator `pasword`"
        ),
        "{line}"
    );
}

#[test]
fn invalid_utf8_huge_and_deeply_nested_files_are_diagnostics_not_crashes() {
    let dir = scratch("hostile");
    std::fs::write(dir.join("latin1.yaml"), b"flow: caf\xe9\nsteps: []\n").expect("write");
    let huge = format!(
        "flow: huge\ndescription: \"{}\"\nsteps: []\n",
        "x".repeat(10 * 1024 * 1024)
    );
    std::fs::write(dir.join("huge.yaml"), huge).expect("write");
    let nested = format!(
        "flow: deep\nsteps: {}{}\n",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    std::fs::write(dir.join("nested.yaml"), nested).expect("write");
    let mut block = String::from("flow: deep2\nstates:\n");
    for depth in 0..2000 {
        block.push_str(&format!("{}k{depth}:\n", "  ".repeat(depth + 1)));
    }
    std::fs::write(dir.join("nested-block.yaml"), block).expect("write");
    let nested_script = format!(
        "flow: s\nsteps:\n  - id: z\n    authenticate: [password]\n  - id: a\n    when: '{}true{}'\n    authenticate: [password]\n",
        "(".repeat(3000),
        ")".repeat(3000)
    );
    std::fs::write(dir.join("nested-script.yaml"), nested_script).expect("write");
    let dsl_deep = format!(
        "flow d {{ step z {{ authenticate password }} step a when `{}1{}` {{ authenticate password }} }}",
        "[".repeat(3000),
        "]".repeat(3000)
    );
    std::fs::write(dir.join("nested.flow"), dsl_deep).expect("write");

    let out = idflow(&[
        "flow",
        "check",
        dir.to_str().expect("utf8"),
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json output");
    let diagnostics = report["diagnostics"].as_array().expect("array");
    let code_of = |file: &str| {
        diagnostics
            .iter()
            .filter(|d| d["file"].as_str().is_some_and(|f| f.ends_with(file)))
            .map(|d| d["code"].as_str().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(code_of("latin1.yaml"), ["F003"]);
    assert_eq!(code_of("huge.yaml"), ["F003"]);
    assert!(!code_of("/nested.yaml").is_empty());
    assert!(!code_of("nested-block.yaml").is_empty());
    assert_eq!(code_of("nested-script.yaml"), ["F040"]);
    assert_eq!(code_of("nested.flow"), ["F040"]);
    let utf8 = diagnostics
        .iter()
        .find(|d| {
            d["file"]
                .as_str()
                .is_some_and(|f| f.ends_with("latin1.yaml"))
        })
        .expect("reported");
    assert!(
        utf8["message"]
            .as_str()
            .is_some_and(|m| m.contains("UTF-8")),
        "{utf8}"
    );
}

#[test]
fn compile_emits_canonical_ir_and_version() {
    let out = idflow(&["flow", "compile", "flows/mfa-for-admins.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let ir: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(
        ir["states"]["admin-passkey.when"]["transitions"]["error"], "deny.script_error",
        "scripts must fail closed"
    );
    let out = idflow(&["flow", "compile", "flows/risk-adaptive.flow"]);
    let ir: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(
        ir["states"]["claims-mfa"]["transitions"]["error"], "deny.script_error",
        "actions that run scripts must fail closed too"
    );
    let version = idflow(&[
        "flow",
        "compile",
        "flows/mfa-for-admins.flow",
        "--emit",
        "version",
    ]);
    let version = stdout(&version);
    assert!(
        version.starts_with("sha256:") && version.trim().len() == 23,
        "{version}"
    );
}

#[test]
fn fmt_converts_between_forms_and_check_detects_noncanonical_files() {
    let dir = scratch("fmt");
    let messy = dir.join("messy.yaml");
    std::fs::write(
        &messy,
        "flow: good\nsteps: [ { id: first, authenticate: [password] } ]\n",
    )
    .expect("write");
    let out = idflow(&["flow", "fmt", messy.to_str().expect("utf8"), "--check"]);
    assert_eq!(out.status.code(), Some(1));
    let out = idflow(&["flow", "fmt", messy.to_str().expect("utf8"), "--to", "dsl"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "flow good {\n  step first {\n    authenticate password\n  }\n}\n"
    );
    let out = idflow(&["flow", "fmt", "flows/mfa-for-admins.flow", "--check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn graph_draws_the_state_machine() {
    let out = idflow(&[
        "flow",
        "graph",
        "flows/mfa-for-admins.yaml",
        "--format",
        "mermaid",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.starts_with("stateDiagram-v2\n"), "{text}");
    assert!(
        text.contains("    s3: admin-passkey.when — decide\n"),
        "{text}"
    );
    assert!(
        text.contains("    s0: admin-enroll — enroll passkey, 3 attempts\n"),
        "{text}"
    );
    assert!(
        text.contains("s3 --> s5: error"),
        "the fail-closed edge is drawn: {text}"
    );
    let out = idflow(&[
        "flow",
        "graph",
        "flows/mfa-for-admins.yaml",
        "--format",
        "dot",
    ]);
    assert!(
        stdout(&out).contains("\"first\" -> \"admin-passkey.when\" [label=\"success\"];"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_closed_output_pipe_is_not_a_crash() {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_idflow"))
        .args(["flow", "schema"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("idflow runs");
    drop(child.stdout.take());
    let status = child.wait().expect("exits");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn api_and_schema_print() {
    let out = idflow(&["flow", "api"]);
    assert!(
        stdout(&out).contains("`user.has_role(role: string) -> bool`"),
        "{}",
        stdout(&out)
    );
    let out = idflow(&["flow", "schema"]);
    let schema: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("schema is JSON");
    assert_eq!(schema["title"], "idflow flow");
}

#[test]
fn flow_test_passes_the_shipped_scenarios_with_full_coverage() {
    let out = idflow(&[
        "flow",
        "test",
        "flows",
        "--config",
        "examples/quickstart/idflow.toml",
        "--coverage",
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(text.contains(", 0 failed"), "{text}");
    let coverage_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("coverage "))
        .collect();
    assert!(
        coverage_lines.len() >= 6,
        "every shipped flow has scenarios: {coverage_lines:?}"
    );
}

#[test]
fn flow_test_fails_on_a_wrong_expectation_and_reports_junit() {
    let dir = scratch("scenario-fail");
    std::fs::write(dir.join("f.yaml"), GOOD).expect("write");
    std::fs::write(
        dir.join("f.test.yaml"),
        "flow: good\nscenarios:\n  - name: expects the wrong path\n    user: { id: u1 }\n    steps: [ { pass: password } ]\n    expect: { outcome: complete, path: [first, nowhere] }\n",
    )
    .expect("write");
    let path = dir.to_str().expect("utf8");
    let out = idflow(&["flow", "test", path]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("FAIL good: expects the wrong path"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("path is [first, success], expected [first, nowhere]"),
        "{}",
        stdout(&out)
    );
    let out = idflow(&["flow", "test", path, "--format", "junit"]);
    let xml = stdout(&out);
    assert!(
        xml.contains("<testsuite name=\"idflow flow test\" tests=\"1\" failures=\"1\""),
        "{xml}"
    );
}

#[test]
fn graph_overlays_a_coverage_report() {
    let dir = scratch("coverage");
    std::fs::write(dir.join("f.yaml"), GOOD).expect("write");
    std::fs::write(
        dir.join("f.test.yaml"),
        "flow: good\nscenarios:\n  - name: passes\n    user: { id: u1 }\n    steps: [ { pass: password } ]\n    expect: { outcome: complete }\n",
    )
    .expect("write");
    let path = dir.to_str().expect("utf8");
    let out = idflow(&["flow", "test", path, "--coverage", "--format", "json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the failure transition is not covered"
    );
    let report = dir.join("report.json");
    std::fs::write(&report, stdout(&out)).expect("write");
    let flow = dir.join("f.yaml");
    let out = idflow(&[
        "flow",
        "graph",
        flow.to_str().expect("utf8"),
        "--format",
        "dot",
        "--coverage",
        report.to_str().expect("utf8"),
    ]);
    let dot = stdout(&out);
    assert!(
        dot.contains("\"first\" -> \"deny\" [label=\"failure\", style=dashed, color=red"),
        "{dot}"
    );
    assert!(
        dot.contains("\"first\" -> \"success\" [label=\"success\"];"),
        "{dot}"
    );
}

#[test]
fn explain_prints_the_trace_and_diff_the_changes() {
    let out = idflow(&[
        "flow",
        "explain",
        "flows/mfa-for-admins.yaml",
        "--scenario",
        "an admin must add a second factor",
        "--config",
        "examples/quickstart/idflow.toml",
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(
        text.contains(
            "admin-enroll.when: `user.has_role(\"admin\") && !user.has_factor(\"passkey\")` = true"
        ),
        "{text}"
    );
    assert!(
        text.contains("path: first -> admin-passkey.when -> admin-enroll.when -> admin-enroll -> step-up.when -> on_success -> success"),
        "{text}"
    );

    let dir = scratch("diff");
    std::fs::write(dir.join("old.yaml"), GOOD).expect("write");
    std::fs::write(dir.join("new.yaml"), "flow: good\nsteps:\n  - id: first\n    authenticate: [password]\n    attempts: 5\n  - id: second\n    authenticate: [totp]\n").expect("write");
    let out = idflow(&[
        "flow",
        "diff",
        dir.join("old.yaml").to_str().expect("utf8"),
        dir.join("new.yaml").to_str().expect("utf8"),
    ]);
    let text = stdout(&out);
    assert!(
        text.contains("~ first --success--> success -> second"),
        "{text}"
    );
    assert!(text.contains("+ state second"), "{text}");
    assert!(
        text.contains("\"attempts\":3") && text.contains("\"attempts\":5"),
        "{text}"
    );
}

#[test]
fn flow_test_takes_files_and_refuses_to_pass_on_nothing() {
    let out = idflow(&["flow", "test", "flows/password.yaml"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("ok   password:") && !text.contains("mfa-for-admins"),
        "{text}"
    );
    let out = idflow(&["flow", "test", "flows/mfa-for-admins.test.yaml"]);
    assert!(
        stdout(&out).contains("ok   mfa-for-admins:"),
        "{}",
        stdout(&out)
    );
    let out = idflow(&["flow", "test", "examples"]);
    assert_eq!(out.status.code(), Some(1), "no scenarios is not a pass");
    assert!(
        stdout(&out).contains("no scenarios ran"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn migrate_names_the_store_it_works_on_and_refuses_a_bad_store_section() {
    let dir = scratch("migrate");
    let embedded = idflow(&["migrate", "--config", "examples/quickstart/idflow.toml"]);
    assert!(embedded.status.success(), "{}", stderr(&embedded));
    assert_eq!(
        stdout(&embedded),
        "the embedded store needs no migrations\n"
    );
    for (section, why) in [
        ("[store]\nkind = \"postgres\"\n", "needs url or url_env"),
        (
            "[store]\nkind = \"postgres\"\nurl = \"mysql://x\"\n",
            "not a postgres:// or postgresql:// URL",
        ),
        (
            "[store]\nkind = \"postgres\"\nurl_env = \"IDFLOW_TEST_NO_SUCH_VARIABLE\"\n",
            "is not set",
        ),
        (
            "[store]\nurl = \"postgres://x\"\n",
            "only for `kind = \"postgres\"`",
        ),
    ] {
        let config = dir.join("idflow.toml");
        std::fs::write(&config, section).expect("write");
        let refused = idflow(&["migrate", "--config", &config.to_string_lossy()]);
        assert_eq!(refused.status.code(), Some(2), "{section}");
        assert!(
            stderr(&refused).contains(why),
            "{section}: {}",
            stderr(&refused)
        );
        assert!(
            !stderr(&refused).contains("mysql://x"),
            "a URL may hold a password"
        );
    }
}
