//! The script API: every name a Rhai `when`, `decide`, `set_claim` or JIT expression may use.
//!
//! This is the one place the API is declared. `flow check` rejects names not listed here,
//! `idflow flow api` prints it, and the engine (next issue) is to register exactly these, with a
//! test that walks this table.

/// A root variable of the script API.
#[derive(Debug, Clone, Copy)]
pub struct ApiRoot {
    /// The variable's name.
    pub name: &'static str,
    /// What it is.
    pub doc: &'static str,
    /// Scripts of which contexts see it.
    pub contexts: &'static [ScriptContext],
    /// Properties: (name, type, doc).
    pub properties: &'static [(&'static str, &'static str, &'static str)],
    /// Methods: (name, signature, doc).
    pub methods: &'static [(&'static str, &'static str, &'static str)],
    /// True when any property name is allowed (a map of claims, attributes).
    pub open: bool,
}

/// Where a script runs, which decides the roots it sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptContext {
    /// `when`, `decide` and `set_claim` in a flow.
    Flow,
    /// `when` and `create` expressions of a JIT rule.
    Jit,
}

use ScriptContext::{Flow, Jit};

/// The whole API.
pub const API: &[ApiRoot] = &[
    ApiRoot {
        name: "user",
        doc: "The user identified so far in this login; before identification every check is false and every property empty.",
        contexts: &[Flow],
        properties: &[
            (
                "id",
                "string",
                "the user's id, or \"\" before identification",
            ),
            ("username", "string", "the username"),
            ("email", "string", "the primary email address"),
            (
                "email_verified",
                "bool",
                "the address was proven (an emailed code at sign-up)",
            ),
            ("roles", "array of strings", "role names"),
            ("groups", "array of strings", "group names"),
            ("attributes", "map", "user attributes"),
            (
                "factors",
                "array of strings",
                "enrolled factors, e.g. [\"totp\", \"passkey\"]",
            ),
            (
                "failed_attempts",
                "int",
                "consecutive failed logins before this one",
            ),
            ("disabled", "bool", "whether the account is disabled"),
            (
                "identified",
                "bool",
                "whether a user has been identified yet",
            ),
        ],
        methods: &[
            (
                "has_role",
                "has_role(role: string) -> bool",
                "holds the role",
            ),
            (
                "has_any_role",
                "has_any_role(roles: array) -> bool",
                "holds at least one of the roles",
            ),
            (
                "in_group",
                "in_group(group: string) -> bool",
                "is a member of the group",
            ),
            (
                "has_factor",
                "has_factor(factor: string) -> bool",
                "has enrolled the factor",
            ),
            (
                "attr",
                "attr(name: string) -> string",
                "an attribute's value, or \"\"",
            ),
        ],
        open: false,
    },
    ApiRoot {
        name: "request",
        doc: "The request that started this login.",
        contexts: &[Flow, Jit],
        properties: &[
            ("ip", "string", "client IP address"),
            ("user_agent", "string", "the User-Agent header"),
            ("application", "string", "the application id"),
            ("protocol", "string", "oidc, saml or wsfed"),
            (
                "acr_values",
                "array of strings",
                "requested authentication context classes",
            ),
            ("scopes", "array of strings", "requested scopes"),
            ("risk", "int", "risk score 0-100 computed by the server"),
            ("hour", "int", "hour of day 0-23 (server time zone)"),
            ("weekday", "int", "day of week, 1 = Monday"),
            (
                "signup",
                "bool",
                "the person asked to create an account (OpenID Connect prompt=create, or the login page's \"Create an account\" link)",
            ),
        ],
        methods: &[
            (
                "ip_in",
                "ip_in(cidr: string) -> bool",
                "the client IP is inside the CIDR range",
            ),
            (
                "acr_requested",
                "acr_requested(acr: string) -> bool",
                "the application asked for this acr",
            ),
        ],
        open: false,
    },
    ApiRoot {
        name: "context",
        doc: "What has happened in this login so far.",
        contexts: &[Flow],
        properties: &[
            (
                "steps",
                "array of maps",
                "completed steps: #{ state, authenticator, idp, at }",
            ),
            (
                "identifier",
                "string",
                "what the user typed at identifier_first, or \"\"",
            ),
            (
                "identifier_domain",
                "string",
                "the part of the identifier after @, lowercased, or \"\"",
            ),
            ("failed_attempts", "int", "failed attempts in this login"),
        ],
        methods: &[
            (
                "passed",
                "passed(authenticator: string) -> bool",
                "a step passed with this authenticator",
            ),
            (
                "passed_idp",
                "passed_idp(idp: string) -> bool",
                "a step passed at this identity provider",
            ),
        ],
        open: false,
    },
    ApiRoot {
        name: "claims",
        doc: "Claims from the upstream identity provider (after a federated step), by name.",
        contexts: &[Flow, Jit],
        properties: &[],
        methods: &[],
        open: true,
    },
    ApiRoot {
        name: "idp",
        doc: "The name of the identity provider a JIT rule is evaluated for (a string: `idp == \"google\"`).",
        contexts: &[Jit],
        properties: &[],
        methods: &[],
        open: false,
    },
    ApiRoot {
        name: "risk",
        doc: "Shorthand for request.risk (an int, 0-100).",
        contexts: &[Flow],
        properties: &[],
        methods: &[],
        open: false,
    },
];

/// The roots visible in `context`.
pub fn roots(context: ScriptContext) -> impl Iterator<Item = &'static ApiRoot> {
    API.iter()
        .filter(move |root| root.contexts.contains(&context))
}

/// Renders the API as Markdown, for `idflow flow api`.
pub fn render_markdown() -> String {
    let mut out =
        String::from("# idflow script API\n\nRhai scripts in flows see these variables.\n");
    for root in API {
        let contexts: Vec<&str> = root
            .contexts
            .iter()
            .map(|c| match c {
                Flow => "flow scripts",
                Jit => "JIT rules",
            })
            .collect();
        out.push_str(&format!(
            "\n## `{}`\n\n{} (in {})\n",
            root.name,
            root.doc,
            contexts.join(", ")
        ));
        if root.open {
            out.push_str("\nAny property name may be read; a missing one is `()`.\n");
        }
        for (name, ty, doc) in root.properties {
            out.push_str(&format!("\n- `{}.{}`: {} — {}", root.name, name, ty, doc));
        }
        for (_, signature, doc) in root.methods {
            out.push_str(&format!("\n- `{}.{}` — {}", root.name, signature, doc));
        }
        if !root.properties.is_empty() || !root.methods.is_empty() {
            out.push('\n');
        }
    }
    out
}
