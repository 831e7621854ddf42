//! The script runtime: the dsl's sandbox engine with the script API of
//! `idflow_dsl::script_api` registered, so that exactly the names `flow check` accepts exist at
//! run time. Scripts are compiled once, when a flow is loaded; evaluation builds a fresh scope.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use rhai::{AST, Array, Dynamic, Engine, Map, Scope};

use crate::model::{Request, StepRecord, UserView, Value};

/// What `context` shows a script: what has happened in this login so far.
#[derive(Debug, Clone, Default)]
pub struct ContextView {
    /// Completed steps.
    pub steps: Vec<StepRecord>,
    /// What the user typed at `identifier_first`.
    pub identifier: String,
    /// Failed attempts in this login.
    pub failed_attempts: i64,
}

/// The values a flow script sees.
pub struct FlowScope<'a> {
    /// The user identified so far (empty before identification).
    pub user: &'a UserView,
    /// The request.
    pub request: &'a Request,
    /// The login so far.
    pub context: ContextView,
    /// Upstream claims.
    pub claims: &'a BTreeMap<String, Value>,
}

/// The values a JIT script sees.
pub struct JitScope<'a> {
    /// Upstream claims.
    pub claims: &'a BTreeMap<String, Value>,
    /// The request.
    pub request: &'a Request,
    /// The identity provider's name.
    pub idp: &'a str,
}

/// The Rhai engine with the script API; build once and share (it is `Send + Sync`).
pub struct Sandbox {
    engine: Engine,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

fn strings(items: &[String]) -> Array {
    items.iter().map(|s| Dynamic::from(s.clone())).collect()
}

fn to_map(values: &BTreeMap<String, Value>) -> Map {
    values
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().into(),
                rhai::serde::to_dynamic(v).unwrap_or(Dynamic::UNIT),
            )
        })
        .collect()
}

/// `ip_in`: whether `ip` lies in `cidr`; anything unparsable is simply not inside.
fn ip_in(ip: &str, cidr: &str) -> bool {
    match (ip.parse::<IpAddr>(), cidr.parse::<IpNet>()) {
        (Ok(ip), Ok(net)) => net.contains(&ip),
        _ => false,
    }
}

impl Sandbox {
    /// Builds the engine and registers the script API.
    pub fn new() -> Self {
        let mut engine = idflow_dsl::script::sandbox_engine();
        engine.set_fail_on_invalid_map_property(false);

        engine
            .register_type_with_name::<UserView>("User")
            .register_get("id", |u: &mut UserView| u.id.clone())
            .register_get("username", |u: &mut UserView| u.username.clone())
            .register_get("email", |u: &mut UserView| u.email.clone())
            .register_get("email_verified", |u: &mut UserView| u.email_verified)
            .register_get("roles", |u: &mut UserView| strings(&u.roles))
            .register_get("groups", |u: &mut UserView| strings(&u.groups))
            .register_get("attributes", |u: &mut UserView| to_map(&u.attributes))
            .register_get("factors", |u: &mut UserView| strings(&u.factors))
            .register_get("failed_attempts", |u: &mut UserView| u.failed_attempts)
            .register_get("disabled", |u: &mut UserView| u.disabled)
            .register_get("identified", |u: &mut UserView| !u.id.is_empty())
            .register_fn("has_role", |u: &mut UserView, role: &str| {
                u.roles.iter().any(|r| r == role)
            })
            .register_fn("has_any_role", |u: &mut UserView, roles: Array| {
                roles
                    .iter()
                    .any(|r| r.clone().into_string().is_ok_and(|r| u.roles.contains(&r)))
            })
            .register_fn("in_group", |u: &mut UserView, group: &str| {
                u.groups.iter().any(|g| g == group)
            })
            .register_fn("has_factor", |u: &mut UserView, factor: &str| {
                u.factors.iter().any(|f| f == factor)
            })
            .register_fn("attr", |u: &mut UserView, name: &str| {
                match u.attributes.get(name) {
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => String::new(),
                }
            });

        engine
            .register_type_with_name::<Request>("Request")
            .register_get("ip", |r: &mut Request| r.ip.clone())
            .register_get("user_agent", |r: &mut Request| r.user_agent.clone())
            .register_get("application", |r: &mut Request| r.application.clone())
            .register_get("protocol", |r: &mut Request| r.protocol.clone())
            .register_get("acr_values", |r: &mut Request| strings(&r.acr_values))
            .register_get("scopes", |r: &mut Request| strings(&r.scopes))
            .register_get("risk", |r: &mut Request| r.risk)
            .register_get("hour", |r: &mut Request| r.hour)
            .register_get("weekday", |r: &mut Request| r.weekday)
            .register_get("signup", |r: &mut Request| r.signup)
            .register_fn("ip_in", |r: &mut Request, cidr: &str| ip_in(&r.ip, cidr))
            .register_fn("acr_requested", |r: &mut Request, acr: &str| {
                r.acr_values.iter().any(|a| a == acr)
            });

        engine
            .register_type_with_name::<ContextView>("Context")
            .register_get("steps", |c: &mut ContextView| {
                c.steps
                    .iter()
                    .map(|s| rhai::serde::to_dynamic(s).unwrap_or(Dynamic::UNIT))
                    .collect::<Array>()
            })
            .register_get("identifier", |c: &mut ContextView| c.identifier.clone())
            .register_get("identifier_domain", |c: &mut ContextView| {
                identifier_domain(&c.identifier)
            })
            .register_get("failed_attempts", |c: &mut ContextView| c.failed_attempts)
            .register_fn("passed", |c: &mut ContextView, authenticator: &str| {
                c.steps.iter().any(|s| s.authenticator == authenticator)
            })
            .register_fn("passed_idp", |c: &mut ContextView, idp: &str| {
                c.steps.iter().any(|s| s.idp.as_deref() == Some(idp))
            });

        Sandbox { engine }
    }

    /// Compiles a script; flows are checked before they load, so an error here means the IR
    /// did not come from `flow check`.
    pub fn compile(&self, script: &str) -> Result<AST, String> {
        self.engine.compile(script).map_err(|e| e.to_string())
    }

    /// Evaluates a flow script (`when`, `decide`, `set_claim`).
    pub fn eval_flow(&self, ast: &AST, values: FlowScope) -> Result<Dynamic, String> {
        let mut scope = Scope::new();
        scope.push_constant("user", values.user.clone());
        scope.push_constant("request", values.request.clone());
        scope.push_constant("context", values.context);
        scope.push_constant("claims", to_map(values.claims));
        scope.push_constant("risk", values.request.risk);
        self.engine
            .eval_ast_with_scope::<Dynamic>(&mut scope, ast)
            .map_err(|e| e.to_string())
    }

    /// Evaluates a JIT script (`when`, `create` expressions).
    pub fn eval_jit(&self, ast: &AST, values: JitScope) -> Result<Dynamic, String> {
        let mut scope = Scope::new();
        scope.push_constant("claims", to_map(values.claims));
        scope.push_constant("request", values.request.clone());
        scope.push_constant("idp", values.idp.to_string());
        self.engine
            .eval_ast_with_scope::<Dynamic>(&mut scope, ast)
            .map_err(|e| e.to_string())
    }
}

/// The part of an identifier after `@`, lowercased, or "".
pub fn identifier_domain(identifier: &str) -> String {
    identifier
        .rsplit_once('@')
        .map(|(_, domain)| domain.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// A script result as JSON (for claims and attributes).
pub fn to_value(value: &Dynamic) -> Value {
    rhai::serde::from_dynamic::<Value>(value).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use idflow_dsl::script_api::{API, ScriptContext};

    fn user() -> UserView {
        UserView {
            id: "u1".into(),
            username: "alice".into(),
            email: "alice@acme.example".into(),
            email_verified: true,
            self_registered: false,
            roles: vec!["admin".into()],
            groups: vec!["staff".into()],
            attributes: BTreeMap::from([("dept".into(), Value::String("hr".into()))]),
            factors: vec!["totp".into()],
            failed_attempts: 2,
            disabled: false,
            locked: false,
        }
    }

    fn eval(sandbox: &Sandbox, script: &str) -> Result<Dynamic, String> {
        let ast = sandbox.compile(script)?;
        let request = Request {
            ip: "10.1.2.3".into(),
            risk: 60,
            acr_values: vec!["mfa".into()],
            ..Request::default()
        };
        let claims = BTreeMap::from([("email_verified".into(), Value::Bool(true))]);
        let context = ContextView {
            identifier: "Alice@ACME.example".into(),
            steps: vec![StepRecord {
                state: "first".into(),
                authenticator: "password".into(),
                idp: None,
                at: 1,
                carried: false,
                enrolled: false,
            }],
            failed_attempts: 1,
        };
        sandbox.eval_flow(
            &ast,
            FlowScope {
                user: &user(),
                request: &request,
                context,
                claims: &claims,
            },
        )
    }

    /// Every property and method the checker accepts exists at run time: the API table and
    /// the registrations cannot drift apart.
    #[test]
    fn every_declared_api_name_is_registered() {
        let sandbox = Sandbox::new();
        for root in API
            .iter()
            .filter(|r| r.contexts.contains(&ScriptContext::Flow) && !r.open)
        {
            for (property, _, _) in root.properties {
                let script = format!("{}.{property}", root.name);
                if let Err(e) = eval(&sandbox, &script) {
                    panic!("{script}: {e}");
                }
            }
            for (method, signature, _) in root.methods {
                let argument = if signature.contains("array") {
                    "[\"admin\"]"
                } else {
                    "\"x\""
                };
                let script = format!("{}.{method}({argument})", root.name);
                if let Err(e) = eval(&sandbox, &script) {
                    panic!("{script}: {e}");
                }
            }
        }
    }

    #[test]
    fn the_api_answers_correctly() {
        let sandbox = Sandbox::new();
        let truthy = [
            "user.has_role(\"admin\") && !user.has_role(\"root\")",
            "user.has_any_role([\"x\", \"admin\"])",
            "user.in_group(\"staff\") && user.has_factor(\"totp\")",
            "user.attr(\"dept\") == \"hr\" && user.identified && user.failed_attempts == 2",
            "request.ip_in(\"10.0.0.0/8\") && !request.ip_in(\"192.168.0.0/16\") && !request.ip_in(\"bogus\")",
            "request.acr_requested(\"mfa\") && risk == 60 && request.risk > 50",
            "context.identifier_domain == \"acme.example\" && context.passed(\"password\")",
            "!context.passed_idp(\"google\") && context.failed_attempts == 1 && context.steps.len() == 1",
            "claims.email_verified && claims.missing == ()",
        ];
        for script in truthy {
            let value = eval(&sandbox, script).unwrap_or_else(|e| panic!("{script}: {e}"));
            assert!(value.as_bool().unwrap_or(false), "{script} was {value:?}");
        }
    }

    /// Each limit of the engine that flows run in stops a script past it with that limit's own
    /// error (the message of Rhai's `ErrorTooManyOperations`, `ErrorStackOverflow` or
    /// `ErrorDataTooLarge`, which is what the run's trace records), while a script just inside
    /// it runs. Every loop ends on its own, so that without a limit this test fails rather
    /// than hangs. `idflow_dsl::script`'s tests match the error variants themselves.
    #[test]
    fn limits_stop_runaway_scripts() {
        let sandbox = Sandbox::new();
        let stopped = |script: &str, message: &str| {
            let error = eval(&sandbox, script).expect_err(script);
            assert!(error.starts_with(message), "{script}: {error}");
        };
        let runs = |script: &str| {
            if let Err(error) = eval(&sandbox, script) {
                panic!("{script}: {error}");
            }
        };
        runs("let x = 0; for i in 0..1000 { x += 1; } x");
        stopped(
            "let x = 0; for i in 0..1000000 { x += 1; } x",
            "Too many operations",
        );

        let depth = |calls: u32| {
            format!("fn down(n) {{ if n <= 1 {{ n }} else {{ 1 + down(n - 1) }} }} down({calls})")
        };
        runs(&depth(16));
        stopped(&depth(17), "Stack overflow");

        let array = |items: u32| format!("let a = []; for i in 0..{items} {{ a.push(i); }} a");
        runs(&array(1024));
        stopped(&array(1025), "Size of array/BLOB too large");

        let map = |entries: u32| {
            format!(
                "let m = #{{}}; for i in 0..{entries} {{ let one = #{{}}; one[\"k\" + i] = i; m += one; }} m"
            )
        };
        runs(&map(1024));
        stopped(&map(1025), "Size of object map too large");

        let string = |extra: &str| {
            format!(
                "let s = \"\"; for i in 0..1024 {{ s += \"0123456789abcdef\"; }} s += \"{extra}\"; s"
            )
        };
        runs(&string(""));
        stopped(&string("x"), "Length of string too large");
        stopped(
            "let s = \"x\"; while s.len() < 100000 { s += s; } s",
            "Length of string too large",
        );
    }
}
