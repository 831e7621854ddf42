//! Compile-time checking of Rhai scripts: syntax, names against the script API, and the labels
//! a `decide` script can return.
//!
//! The checker compiles with strict variables against a scope holding only the API's roots, so
//! an unknown root is a compile error; it then walks the AST for members of closed roots
//! (`user.has_rol(..)`) and global function calls that no package provides.

use std::collections::{BTreeSet, HashSet};
use std::sync::OnceLock;

use rhai::{
    ASTNode, Dynamic, Engine, Expr, OptimizationLevel, ParseErrorType, Position, Scope, Stmt,
};

use crate::diagnostic::{Code, did_you_mean};
use crate::script_api::{self, ApiRoot, ScriptContext};

/// Longest script accepted, in bytes.
pub const MAX_SCRIPT_BYTES: usize = 16 * 1024;

/// What a script that compiled is known to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScriptFacts {
    /// String literals the script can return (the labels of a `decide`).
    pub labels: BTreeSet<String>,
    /// Names read as `claims.NAME`.
    pub claims_read: BTreeSet<String>,
    /// Claims that must be `true` for the script to return `true`: the `claims.NAME` and
    /// `claims.NAME == true` conjuncts of a top-level `&&` chain. Used to prove that a JIT
    /// rule only links accounts when the IdP says the attribute is verified.
    pub claims_required_true: BTreeSet<String>,
}

/// A problem in a script, positioned inside the script (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptProblem {
    /// F040 or F041.
    pub code: Code,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
    /// Line and column inside the script, when Rhai knows them.
    pub position: Option<(usize, usize)>,
}

/// Builds the Rhai engine flow scripts run in, for the checker and (next) the engine alike, so a
/// script that checks is a script that runs. Only pure packages are loaded: arithmetic, logic,
/// strings, arrays, maps, math and iteration. There is no clock (`timestamp`), no `sleep`, no
/// `eval`, no modules, no I/O; the script API is the only window on the world. Limits bound
/// operations, call depth, nesting and the size of strings, arrays and maps.
pub fn sandbox_engine() -> Engine {
    use rhai::packages::{
        ArithmeticPackage, BasicArrayPackage, BasicIteratorPackage, BasicMapPackage,
        BasicMathPackage, BasicStringPackage, LogicPackage, MoreStringPackage, Package,
    };
    let mut engine = Engine::new_raw();
    for module in [
        ArithmeticPackage::new().as_shared_module(),
        LogicPackage::new().as_shared_module(),
        BasicStringPackage::new().as_shared_module(),
        MoreStringPackage::new().as_shared_module(),
        BasicArrayPackage::new().as_shared_module(),
        BasicMapPackage::new().as_shared_module(),
        BasicMathPackage::new().as_shared_module(),
        BasicIteratorPackage::new().as_shared_module(),
    ] {
        engine.register_global_module(module);
    }
    engine
        .set_max_operations(SCRIPT_MAX_OPERATIONS)
        .set_max_call_levels(16)
        .set_max_expr_depths(64, 32)
        .set_max_string_size(MAX_SCRIPT_BYTES)
        .set_max_array_size(1024)
        .set_max_map_size(1024)
        .disable_symbol("eval");
    engine
}

/// Operations one script run may take before it is stopped (and the login denied).
pub const SCRIPT_MAX_OPERATIONS: u64 = 100_000;

/// Checks scripts; build once (building a Rhai engine costs about 0.2 ms) and share.
pub struct ScriptChecker {
    engine: Engine,
    functions: HashSet<String>,
}

impl ScriptChecker {
    /// The process-wide checker.
    pub fn shared() -> &'static ScriptChecker {
        static CHECKER: OnceLock<ScriptChecker> = OnceLock::new();
        CHECKER.get_or_init(ScriptChecker::new)
    }

    fn new() -> Self {
        let mut engine = sandbox_engine();
        engine
            .set_strict_variables(true)
            .set_optimization_level(OptimizationLevel::None);
        let functions: HashSet<String> = engine
            .gen_fn_signatures(true)
            .iter()
            .filter_map(|signature| signature.split('(').next())
            .map(|name| name.rsplit(' ').next().unwrap_or(name).to_string())
            .filter(|name| !name.starts_with("get$") && !name.starts_with("set$"))
            .collect();
        ScriptChecker { engine, functions }
    }

    /// Compiles `script` for `context` and checks every name it uses.
    pub fn check(
        &self,
        script: &str,
        context: ScriptContext,
    ) -> Result<ScriptFacts, Vec<ScriptProblem>> {
        if script.len() > MAX_SCRIPT_BYTES {
            return Err(vec![ScriptProblem {
                code: Code::ScriptSyntax,
                message: format!(
                    "script is {} bytes; the limit is {MAX_SCRIPT_BYTES}",
                    script.len()
                ),
                hint: None,
                position: None,
            }]);
        }
        if script.trim().is_empty() {
            return Err(vec![ScriptProblem {
                code: Code::ScriptSyntax,
                message: "script is empty".into(),
                hint: None,
                position: None,
            }]);
        }
        let mut scope = Scope::new();
        for root in script_api::roots(context) {
            scope.push_dynamic(root.name, Dynamic::UNIT);
        }
        // Strict variables stop at the first unknown name; declare each one found and compile
        // again, so one run reports all of them.
        let mut unknown = Vec::new();
        let ast = loop {
            match self.engine.compile_with_scope(&scope, script) {
                Ok(ast) => break ast,
                Err(error) => {
                    let problem = parse_problem(&error.0, error.1, context);
                    match &*error.0 {
                        ParseErrorType::VariableUndefined(name) if unknown.len() < 16 => {
                            scope.push_dynamic(name.clone(), Dynamic::UNIT);
                            unknown.push(problem);
                        }
                        _ => {
                            unknown.push(problem);
                            return Err(unknown);
                        }
                    }
                }
            }
        };
        let mut facts = ScriptFacts::default();
        if let [Stmt::Expr(expr)] = ast.statements() {
            required_true_claims(expr, &mut facts.claims_required_true);
        }
        let mut problems = unknown;
        ast.walk(&mut |path: &[ASTNode]| {
            let Some(ASTNode::Expr(expr)) = path.last() else {
                return true;
            };
            match expr {
                Expr::Dot(binary, _, _) => {
                    if let Expr::Variable(variable, _, _) = &binary.lhs {
                        let root = variable.1.as_str();
                        if let Some((member, is_method, pos)) = first_member(&binary.rhs) {
                            if root == "claims" && !is_method {
                                facts.claims_read.insert(member.to_string());
                            }
                            if let Some(problem) =
                                check_member(root, member, is_method, pos, context)
                            {
                                problems.push(problem);
                            }
                        }
                    }
                }
                Expr::MethodCall(call, pos) => {
                    let name = call.name.as_str();
                    let on_root = path.len() >= 2
                        && matches!(path[path.len() - 2], ASTNode::Expr(Expr::Dot(parent, _, _)) if matches!(parent.lhs, Expr::Variable(..)));
                    let api_method = script_api::API
                        .iter()
                        .any(|root| root.methods.iter().any(|(m, _, _)| *m == name));
                    if !on_root && !api_method && !self.functions.contains(name) {
                        problems.push(ScriptProblem {
                            code: Code::ScriptUnknownName,
                            message: format!("unknown method `{name}`"),
                            hint: did_you_mean(name, self.functions.iter().map(String::as_str))
                                .map(|s| format!("did you mean `{s}`?")),
                            position: position(*pos),
                        });
                    }
                }
                Expr::FnCall(call, pos) => {
                    let name = call.name.as_str();
                    let is_named = name
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_alphabetic() || c == '_');
                    if call.op_token.is_none() && is_named && !self.functions.contains(name) {
                        problems.push(ScriptProblem {
                            code: Code::ScriptUnknownName,
                            message: format!("unknown function `{name}`"),
                            hint: did_you_mean(name, self.functions.iter().map(String::as_str))
                                .map(|s| format!("did you mean `{s}`?")),
                            position: position(*pos),
                        });
                    }
                }
                Expr::StringConstant(value, _) => {
                    let parent = path.len().checked_sub(2).and_then(|i| path.get(i));
                    if matches!(
                        parent,
                        Some(ASTNode::Stmt(Stmt::Expr(_) | Stmt::Return(..))) | None
                    ) {
                        facts.labels.insert(value.to_string());
                    }
                }
                _ => {}
            }
            true
        });
        if problems.is_empty() {
            Ok(facts)
        } else {
            Err(problems)
        }
    }
}

/// Collects the claims that `expr` requires to be true (conjuncts of a top-level `&&`).
fn required_true_claims(expr: &Expr, out: &mut BTreeSet<String>) {
    match expr {
        Expr::And(conjuncts, _) => {
            for conjunct in conjuncts.iter() {
                required_true_claims(conjunct, out);
            }
        }
        Expr::FnCall(call, _) if call.name.as_str() == "==" && call.args.len() == 2 => {
            let (a, b) = (&call.args[0], &call.args[1]);
            let claim = match (a, b) {
                (claim, Expr::BoolConstant(true, _)) | (Expr::BoolConstant(true, _), claim) => {
                    claim_name(claim)
                }
                _ => None,
            };
            out.extend(claim);
        }
        other => out.extend(claim_name(other)),
    }
}

/// `claims.NAME` or `claims["NAME"]` gives `NAME`.
fn claim_name(expr: &Expr) -> Option<String> {
    let (Expr::Dot(binary, _, _) | Expr::Index(binary, _, _)) = expr else {
        return None;
    };
    let Expr::Variable(variable, _, _) = &binary.lhs else {
        return None;
    };
    if variable.1.as_str() != "claims" {
        return None;
    }
    match &binary.rhs {
        Expr::Property(property, _) => Some(property.2.to_string()),
        Expr::StringConstant(name, _) => Some(name.to_string()),
        _ => None,
    }
}

/// The first property or method applied to a root: `user.roles.len()` gives `roles`.
fn first_member(rhs: &Expr) -> Option<(&str, bool, Position)> {
    match rhs {
        Expr::Property(property, pos) => Some((property.2.as_str(), false, *pos)),
        Expr::MethodCall(call, pos) => Some((call.name.as_str(), true, *pos)),
        Expr::Dot(inner, _, _) | Expr::Index(inner, _, _) => first_member(&inner.lhs),
        _ => None,
    }
}

fn check_member(
    root: &str,
    member: &str,
    is_method: bool,
    pos: Position,
    context: ScriptContext,
) -> Option<ScriptProblem> {
    let api: &ApiRoot = script_api::roots(context).find(|r| r.name == root)?;
    if api.open {
        return None;
    }
    let known = if is_method {
        api.methods.iter().any(|(name, _, _)| *name == member)
    } else {
        api.properties.iter().any(|(name, _, _)| *name == member)
    };
    if known {
        return None;
    }
    let kind = if is_method { "method" } else { "property" };
    let candidates: Vec<&str> = if is_method {
        api.methods.iter().map(|(n, _, _)| *n).collect()
    } else {
        api.properties.iter().map(|(n, _, _)| *n).collect()
    };
    let hint = match did_you_mean(member, candidates.iter().copied()) {
        Some(s) => format!("did you mean `{root}.{s}`?"),
        None if candidates.is_empty() => format!(
            "`{root}` has no {}; `idflow flow api` lists the script API",
            if is_method { "methods" } else { "properties" }
        ),
        None => format!("`{root}` has: {}", candidates.join(", ")),
    };
    Some(ScriptProblem {
        code: Code::ScriptUnknownName,
        message: format!("`{root}` has no {kind} `{member}`"),
        hint: Some(hint),
        position: position(pos),
    })
}

fn parse_problem(error: &ParseErrorType, pos: Position, context: ScriptContext) -> ScriptProblem {
    match error {
        ParseErrorType::VariableUndefined(name) => {
            let roots: Vec<&str> = script_api::roots(context).map(|r| r.name).collect();
            let hint = match did_you_mean(name, roots.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("scripts here can use: {}", roots.join(", ")),
            };
            ScriptProblem {
                code: Code::ScriptUnknownName,
                message: format!("unknown variable `{name}`"),
                hint: Some(hint),
                position: position(pos),
            }
        }
        other => ScriptProblem {
            code: Code::ScriptSyntax,
            message: format!("script does not compile: {other}"),
            hint: None,
            position: position(pos),
        },
    }
}

fn position(pos: Position) -> Option<(usize, usize)> {
    Some((pos.line()?, pos.position().unwrap_or(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(script: &str) -> Result<ScriptFacts, Vec<ScriptProblem>> {
        ScriptChecker::shared().check(script, ScriptContext::Flow)
    }

    #[test]
    fn accepts_the_design_examples() {
        check(r#"user.has_role("admin") || request.risk > 50"#).expect("valid");
        let facts =
            check(r#"if context.identifier_domain == "acme.example" { "sso" } else { "local" }"#)
                .expect("valid");
        assert_eq!(
            facts.labels,
            ["local", "sso"].iter().map(|s| s.to_string()).collect()
        );
    }

    #[test]
    fn rejects_unknown_roots_members_and_functions() {
        let problems = check("usr.has_role(\"admin\")").unwrap_err();
        assert_eq!(problems[0].code, Code::ScriptUnknownName);
        assert_eq!(problems[0].hint.as_deref(), Some("did you mean `user`?"));
        let problems = check("user.has_rol(\"admin\")").unwrap_err();
        assert!(problems[0].message.contains("has_rol"), "{problems:?}");
        let problems = check("request.rsk > 3").unwrap_err();
        assert_eq!(problems[0].position, Some((1, 9)));
        let problems = check("now() > 3").unwrap_err();
        assert!(problems[0].message.contains("now"), "{problems:?}");
    }

    #[test]
    fn the_sandbox_has_no_clock_sleep_or_eval_and_checks_methods() {
        for script in [
            "timestamp() > 1",
            "sleep(1); true",
            "eval(\"1\") == 1",
            "user.roles.frobnicate()",
        ] {
            let problems = check(script).expect_err(script);
            assert!(
                problems
                    .iter()
                    .any(|p| matches!(p.code, Code::ScriptUnknownName | Code::ScriptSyntax)),
                "{script}: {problems:?}"
            );
        }
        check("user.roles.contains(\"admin\") && \"x\".len() == 1 && request.acr_values.len() > 0")
            .expect("standard methods and API members pass");
    }

    #[test]
    fn claims_are_open_and_recorded() {
        let facts = ScriptChecker::shared()
            .check(
                "claims.email_verified && claims.email.ends_with(\"@a.example\")",
                ScriptContext::Jit,
            )
            .expect("valid");
        assert!(facts.claims_read.contains("email_verified"));
        assert!(facts.labels.is_empty());
    }

    #[test]
    fn knows_which_claims_a_condition_requires_to_be_true() {
        let required = |script: &str| {
            ScriptChecker::shared()
                .check(script, ScriptContext::Jit)
                .expect("valid")
                .claims_required_true
        };
        let verified: BTreeSet<String> = ["email_verified".to_string()].into();
        assert_eq!(
            required("claims.email_verified && claims.email.ends_with(\"@a\")"),
            verified
        );
        assert_eq!(required("claims.email_verified == true"), verified);
        assert_eq!(required("claims[\"email_verified\"]"), verified);
        assert!(required("claims.email_verified == false").is_empty());
        assert!(required("!claims.email_verified").is_empty());
        assert!(required("claims.email_verified || true").is_empty());
    }

    #[test]
    fn reports_every_unknown_variable_at_once() {
        let problems = check("usr.has_role(\"a\") || rsk > 3 || now() > 1").unwrap_err();
        let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        assert!(messages.iter().any(|m| m.contains("`usr`")), "{messages:?}");
        assert!(messages.iter().any(|m| m.contains("`rsk`")), "{messages:?}");
        assert!(messages.iter().any(|m| m.contains("`now`")), "{messages:?}");
    }

    /// Runs `script` in the engine flow scripts run in.
    fn run(script: &str) -> Result<Dynamic, Box<rhai::EvalAltResult>> {
        sandbox_engine().eval::<Dynamic>(script)
    }

    /// The error that stopped a script, unwrapped from the function calls it happened in.
    fn root(error: &rhai::EvalAltResult) -> &rhai::EvalAltResult {
        error.unwrap_inner()
    }

    /// `ErrorDataTooLarge` names the kind of value that grew too large.
    fn too_large(script: &str) -> String {
        let error = run(script).expect_err(script);
        match root(&error) {
            rhai::EvalAltResult::ErrorDataTooLarge(what, _) => what.clone(),
            other => panic!("{script}: stopped by {other:?}, not by a size limit"),
        }
    }

    // Each limit is tested at its edge: a script just inside runs, one just past is stopped
    // by that limit's own error. Without the limit the script past the edge would run (or, for
    // the call depth, Rhai's default of 8 levels in debug builds would stop the one inside).

    #[test]
    fn the_call_depth_limit_stops_recursion_past_16_levels() {
        let depth = |calls: u32| {
            format!("fn down(n) {{ if n <= 1 {{ n }} else {{ 1 + down(n - 1) }} }} down({calls})")
        };
        let inside = run(&depth(16)).expect("16 nested calls run");
        assert_eq!(inside.as_int().ok(), Some(16));
        let error = run(&depth(17)).expect_err("17 nested calls are stopped");
        assert!(
            matches!(root(&error), rhai::EvalAltResult::ErrorStackOverflow(_)),
            "{error:?}"
        );
    }

    #[test]
    fn the_array_size_limit_stops_an_array_past_1024_items() {
        let grow = |items: u32| format!("let a = []; for i in 0..{items} {{ a.push(i); }} a.len()");
        assert_eq!(
            run(&grow(1024)).expect("1024 items").as_int().ok(),
            Some(1024)
        );
        assert_eq!(too_large(&grow(1025)), "Size of array/BLOB");
    }

    #[test]
    fn the_map_size_limit_stops_a_map_past_1024_entries() {
        // Merged in one entry at a time: Rhai checks a map after an operator (`+=`) or a
        // function changed it.
        let grow = |entries: u32| {
            format!(
                "let m = #{{}}; for i in 0..{entries} {{ let one = #{{}}; one[\"k\" + i] = i; m += one; }} m.len()"
            )
        };
        assert_eq!(
            run(&grow(1024)).expect("1024 entries").as_int().ok(),
            Some(1024)
        );
        assert_eq!(too_large(&grow(1025)), "Size of object map");
    }

    /// A gap the map size limit leaves (docs/security-tests.md lists it): Rhai 1.27 checks the
    /// value an index or property assignment stores (`m[key] = value`), not the map it lands
    /// in, so a map that only ever grows that way passes 1024 entries unchecked. What ends it
    /// is the operations limit. When this test fails because the map limit stopped the first
    /// script, Rhai closed the gap: update the doc.
    #[test]
    fn index_assignment_grows_a_map_past_its_limit_until_the_operations_limit_stops_it() {
        let grown = run("let m = #{}; for i in 0..2000 { m[\"k\" + i] = i; } 2000")
            .expect("not stopped by the map size limit");
        assert_eq!(grown.as_int().ok(), Some(2000));
        let error =
            run("let m = #{}; let i = 0; loop { m[\"k\" + i] = i; i += 1; }").expect_err("stopped");
        assert!(
            matches!(root(&error), rhai::EvalAltResult::ErrorTooManyOperations(_)),
            "{error:?}"
        );
    }

    #[test]
    fn the_string_size_limit_stops_a_string_past_16_kib() {
        // 1024 appends of 16 bytes reach MAX_SCRIPT_BYTES exactly; one byte more is too long.
        let grow = |extra: &str| {
            format!(
                "let s = \"\"; for i in 0..1024 {{ s += \"0123456789abcdef\"; }} s += \"{extra}\"; s.len()"
            )
        };
        let inside = run(&grow("")).expect("16 KiB");
        assert_eq!(inside.as_int().ok(), Some(MAX_SCRIPT_BYTES as i64));
        assert_eq!(too_large(&grow("x")), "Length of string");
        // Doubling, the quick way to exhaust memory, is stopped by the same limit long before
        // the operations limit (the loop ends at 128 KiB, so that without the limit this test
        // fails rather than runs out of memory).
        assert_eq!(
            too_large("let s = \"x\"; while s.len() < 100000 { s += s; } s.len()"),
            "Length of string"
        );
    }

    #[test]
    fn the_operations_limit_stops_a_long_loop() {
        let short = run("let n = 0; for i in 0..1000 { n += 1; } n").expect("a short loop runs");
        assert_eq!(short.as_int().ok(), Some(1000));
        // A loop that ends (so that without the limit this test fails rather than hangs), but
        // takes ten times SCRIPT_MAX_OPERATIONS.
        let error = run("let n = 0; for i in 0..1000000 { n += 1; } n").expect_err("stopped");
        assert!(
            matches!(root(&error), rhai::EvalAltResult::ErrorTooManyOperations(_)),
            "{error:?}"
        );
    }

    #[test]
    fn reports_syntax_errors_with_position() {
        let problems = check("user.has_role(\"admin\" ||").unwrap_err();
        assert_eq!(problems[0].code, Code::ScriptSyntax);
        assert!(problems[0].position.is_some());
    }
}
