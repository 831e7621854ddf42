//! Property tests (idflow's fuzzing, on the stable toolchain): no input makes the SCIM filter
//! parser, PATCH paths and operations, or the list query parameters panic, and what they accept
//! they print back to text that parses to the same thing.
//!
//! Inputs are random text, and text generated from a small grammar of SCIM (attribute paths
//! with URNs and sub-attributes, operators, JSON values, `and` / `or` / `not`, groups and value
//! paths), whole or with random edits, so that cases get past the first token. PATCH requests
//! are generated as JSON and applied to a fixed user and to random resources.
//!
//! `IDFLOW_FUZZ_CASES=N` runs N cases per property (a longer run); failures are not persisted
//! to `proptest-regressions/`: a failure found becomes a named `regression_` test here.

use std::sync::LazyLock;

use idflow_scim::{ScimError, filter, patch, query, urn};
use proptest::prelude::*;
use scim_v2::filter::PatchPath;
use serde_json::{Value, json};

/// Cases per property: `IDFLOW_FUZZ_CASES` when set, else `default` (which keeps this file to
/// a few seconds in a debug build). No failure file: a failure becomes a named test.
fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("IDFLOW_FUZZ_CASES")
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Attribute names, some of them the grammar's keywords (`and`, `not`, `pr`, `eq`).
const NAMES: &[&str] = &[
    "userName",
    "name",
    "emails",
    "id",
    "externalId",
    "active",
    "title",
    "meta",
    "members",
    "groups",
    "value",
    "type",
    "primary",
    "display",
    "nickName",
    "costCenter",
    "x",
    "and",
    "or",
    "not",
    "pr",
    "eq",
    "A-1_b",
    "USERNAME",
];

/// Names that are not RFC 7644 `ATTRNAME`s.
const BAD_NAMES: &[&str] = &["1abc", "", "-x", "a b", "é"];

/// Sub-attribute names.
const SUBS: &[&str] = &[
    "givenName",
    "familyName",
    "value",
    "type",
    "primary",
    "lastModified",
    "display",
];

/// Sub-attributes that are not names.
const BAD_SUBS: &[&str] = &["", "a.b", "1", "[x]"];

/// Schema URNs as attribute path prefixes: core, extension, wrong case, made up.
const URIS: &[&str] = &[
    urn::USER,
    urn::GROUP,
    urn::ENTERPRISE_USER,
    "urn:ietf:params:scim:schemas:core:2.0:user",
    "urn:x",
    "a:b",
    "x:",
];

/// Prefixes that are not URIs.
const BAD_URIS: &[&str] = &["urn:", ":", "a b:c", "1:"];

/// Comparison operators, in any case.
const OPERATORS: &[&str] = &[
    "eq", "ne", "co", "sw", "ew", "gt", "lt", "ge", "le", "EQ", "Sw",
];

/// Operators that are not.
const BAD_OPERATORS: &[&str] = &["xx", "", "=", "pr"];

/// Whitespace between tokens (the grammar takes any run of Unicode whitespace).
const SPACES: &[&str] = &[" ", " ", " ", " ", " ", "  ", "\t", "\n", "\u{a0}"];

/// Separators that are not whitespace.
const BAD_SPACES: &[&str] = &["", "\u{200b}"];

/// Logical operators, in any case.
const LOGIC: &[&str] = &["and", "or", "AND", "Or"];

/// Logical operators that are not.
const BAD_LOGIC: &[&str] = &["nand", "", "&&", "not"];

/// Mostly one of `valid`, sometimes one of `invalid`: enough well-formed input to reach the
/// code behind the first token, enough noise to reach its errors.
fn mostly(
    valid: &'static [&'static str],
    invalid: &'static [&'static str],
) -> impl Strategy<Value = &'static str> + Clone {
    prop_oneof![
        49 => prop::sample::select(valid),
        1 => prop::sample::select(invalid),
    ]
}

/// Tokens a random edit inserts.
const TOKENS: &[&str] = &[
    "(", ")", "[", "]", "\"", "\\", ".", ":", ",", " ", "not ", " and ", " or ", " pr", " eq ",
    "true", "null", "1e999", "-0", "\u{0}", "é", "\u{feff}", "emails", "urn:",
];

/// A JSON value as a filter writes it, and things that look like one.
fn comp_value() -> impl Strategy<Value = String> {
    prop_oneof![
        16 => "\\PC{0,12}".prop_map(|s| serde_json::to_string(&s).unwrap_or_default()),
        4 => "\"[^\"\\\\]{0,8}\"",
        4 => any::<i64>().prop_map(|n| n.to_string()),
        2 => any::<u64>().prop_map(|n| n.to_string()),
        2 => any::<f64>().prop_map(|n| format!("{n:e}")),
        2 => any::<f64>().prop_map(|n| n.to_string()),
        6 => prop::sample::select(&["true", "false", "null", "1E+2", "-0", "0.5e-3"][..])
            .prop_map(String::from),
        1 => prop::sample::select(&[
            r#""\x""#, r#""\ud800""#, r#""unterminated"#, "1e400", "01", "1.", ".5", "-",
            "TRUE", "nil", "bare"
        ][..])
        .prop_map(String::from),
    ]
}

/// An attribute path: an optional schema URN, a name, an optional sub-attribute.
fn attr_path() -> impl Strategy<Value = String> + Clone {
    (
        prop::option::weighted(0.2, mostly(URIS, BAD_URIS)),
        mostly(NAMES, BAD_NAMES),
        prop::option::weighted(0.3, mostly(SUBS, BAD_SUBS)),
    )
        .prop_map(|(uri, name, sub)| {
            let mut path = String::new();
            if let Some(uri) = uri {
                path.push_str(uri);
                path.push(':');
            }
            path.push_str(name);
            if let Some(sub) = sub {
                path.push('.');
                path.push_str(sub);
            }
            path
        })
}

/// One attribute expression: `path pr` or `path op value`.
fn attr_exp() -> BoxedStrategy<String> {
    (
        attr_path(),
        mostly(OPERATORS, BAD_OPERATORS),
        comp_value(),
        mostly(SPACES, BAD_SPACES),
        any::<bool>(),
    )
        .prop_map(|(path, op, value, space, present)| {
            if present {
                format!("{path}{space}pr")
            } else {
                format!("{path}{space}{op}{space}{value}")
            }
        })
        .boxed()
}

/// `atom`s combined with `and`, `or`, `not (...)` and groups, mostly well-formed and sometimes
/// off by one token.
fn logic(atom: BoxedStrategy<String>) -> BoxedStrategy<String> {
    atom.prop_recursive(6, 64, 4, |inner| {
        prop_oneof![
            16 => (
                inner.clone(),
                mostly(LOGIC, BAD_LOGIC),
                mostly(SPACES, BAD_SPACES),
                inner.clone()
            )
                .prop_map(|(a, logic, space, b)| format!("{a}{space}{logic}{space}{b}")),
            5 => inner.clone().prop_map(|a| format!("not ({a})")),
            5 => inner.clone().prop_map(|a| format!("({a})")),
            1 => inner.clone().prop_map(|a| format!("NOT({a})")),
            1 => inner.clone().prop_map(|a| format!("(({a})")),
            1 => inner.clone().prop_map(|a| format!("not {a}")),
        ]
    })
    .boxed()
}

/// The filter inside a value path's brackets (no value paths of its own).
fn val_filter_text() -> BoxedStrategy<String> {
    logic(attr_exp())
}

/// Filter text from the grammar: attribute expressions and value paths under `logic`.
fn filter_text() -> BoxedStrategy<String> {
    let value_path = (attr_path(), val_filter_text()).prop_map(|(path, f)| format!("{path}[{f}]"));
    logic(prop_oneof![3 => attr_exp(), 1 => value_path].boxed())
}

/// A PATCH path: an attribute path, a value path (with or without a sub-attribute), a bare
/// extension URN, or anything else.
fn patch_path() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => attr_path(),
        2 => (attr_path(), val_filter_text()).prop_map(|(path, f)| format!("{path}[{f}]")),
        2 => (attr_path(), val_filter_text(), mostly(SUBS, BAD_SUBS))
            .prop_map(|(path, f, sub)| format!("{path}[{f}].{sub}")),
        1 => prop::sample::select(URIS).prop_map(String::from),
        1 => Just(format!("{}:Manager", urn::ENTERPRISE_USER)),
        1 => (attr_path(), filter_text()).prop_map(|(path, f)| format!("{path}[{f}]")),
        1 => "\\PC{0,40}",
    ]
}

/// `text` with one random edit: a slice deleted, a token inserted, or a slice repeated.
fn mutate(text: &str, op: u8, at: usize, len: usize, token: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let at = at % (chars.len() + 1);
    let end = (at + len).min(chars.len());
    let mut out: Vec<char> = chars[..at].to_vec();
    match op % 3 {
        0 => out.extend(&chars[end..]),
        1 => {
            out.extend(token.chars());
            out.extend(&chars[at..]);
        }
        _ => {
            out.extend(&chars[at..end]);
            out.extend(&chars[at..]);
        }
    }
    out.into_iter().collect()
}

/// Random edits for [`mutate`]: none half of the time, so both the grammar's own text and
/// its near misses are tried.
fn edits() -> impl Strategy<Value = Vec<(u8, usize, usize, &'static str)>> {
    let edit = (
        any::<u8>(),
        any::<usize>(),
        0usize..12,
        prop::sample::select(TOKENS),
    );
    prop_oneof![Just(Vec::new()), prop::collection::vec(edit, 1..4),]
}

/// `text` with `edits` applied in order.
fn edited(mut text: String, edits: &[(u8, usize, usize, &'static str)]) -> String {
    for &(op, at, len, token) in edits {
        text = mutate(&text, op, at, len, token);
    }
    text
}

/// Any JSON value, with SCIM's names as keys so that paths find something.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,10}".prop_map(Value::String),
        prop::sample::select(NAMES).prop_map(|n| Value::String(n.to_string())),
    ];
    leaf.prop_recursive(4, 48, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        prop::sample::select(NAMES).prop_map(String::from),
                        prop::sample::select(SUBS).prop_map(String::from),
                        prop::sample::select(URIS).prop_map(String::from),
                    ],
                    inner
                ),
                0..5
            )
            .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

/// A user as the server renders one.
static ANN: LazyLock<Value> = LazyLock::new(|| {
    json!({
        "schemas": [urn::USER, urn::ENTERPRISE_USER],
        "id": "U-1",
        "externalId": "E-7",
        "userName": "Ann.Lee",
        "name": {"givenName": "Ann", "familyName": "Lee"},
        "active": true,
        "title": "",
        "emails": [
            {"value": "ann@work.example", "type": "work", "primary": true},
            {"value": "ann@home.example", "type": "home"}
        ],
        "groups": [{"value": "admins", "display": "Admins"}],
        "meta": {"lastModified": "2026-03-01T10:00:00Z", "resourceType": "User"},
        urn::ENTERPRISE_USER: {"employeeNumber": "701", "costCenter": 4130,
            "manager": {"value": "U-2"}}
    })
});

/// Attributes PATCH may not change, as the server declares them.
const READ_ONLY: &[&str] = &["id", "meta", "groups"];

/// The members of `resource` whose names are `name` regardless of case.
fn members_named<'a>(resource: &'a Value, name: &str) -> Vec<(&'a String, &'a Value)> {
    resource
        .as_object()
        .map(|object| {
            object
                .iter()
                .filter(|(key, _)| key.eq_ignore_ascii_case(name))
                .collect()
        })
        .unwrap_or_default()
}

/// Everything the crate does with filter text, and the properties that must hold: an error is
/// 400 `invalidFilter`; what parses prints to text that parses to the same filter, and matches
/// without panicking.
fn check_filter(text: &str, resources: &[&Value]) -> Result<(), TestCaseError> {
    match filter::parse(text) {
        Ok(parsed) => {
            for resource in resources {
                let _ = filter::matches(&parsed, resource);
            }
            let printed = parsed.to_string();
            let again = filter::parse(&printed);
            prop_assert_eq!(
                again.as_ref().ok(),
                Some(&parsed),
                "`{}` printed as `{}`, which parses to {:?}",
                text,
                printed,
                again
            );
        }
        Err(error) => {
            prop_assert_eq!(
                (error.status, error.scim_type),
                (400, Some("invalidFilter"))
            );
        }
    }
    Ok(())
}

/// A PATCH path (what `patch` parses it with): what parses prints back to itself.
fn check_patch_path(text: &str) -> Result<(), TestCaseError> {
    if let Ok(parsed) = text.parse::<PatchPath>() {
        let printed = parsed.to_string();
        let again = printed.parse::<PatchPath>();
        prop_assert_eq!(
            again.as_ref().ok(),
            Some(&parsed),
            "`{}` printed as `{}`, which parses to {:?}",
            text,
            printed,
            again
        );
    }
    Ok(())
}

/// An attribute list (`attributes`, `excludedAttributes`, `sortBy`): errors are 400
/// `invalidValue`; what parses prints back to itself, projects and sorts without panicking,
/// and a projection never loses `id` or `schemas`.
fn check_attributes(text: &str, resources: &[&Value]) -> Result<(), TestCaseError> {
    match query::parse_attributes(text) {
        Ok(paths) => {
            let printed: Vec<String> = paths.iter().map(ToString::to_string).collect();
            let again = query::parse_attributes(&printed.join(","));
            prop_assert_eq!(again.as_ref().ok(), Some(&paths), "`{}`", text);
            for resource in resources {
                for (kept, excluded) in [(&paths[..], &[][..]), (&[][..], &paths[..])] {
                    let shown = query::project(resource, kept, excluded);
                    for always in ["id", "schemas"] {
                        prop_assert_eq!(
                            shown.get(always),
                            resource.get(always),
                            "`{}` lost {}",
                            text,
                            always
                        );
                    }
                }
            }
            if let Some(by) = paths.first() {
                let mut list: Vec<Value> = resources.iter().map(|r| (*r).clone()).collect();
                query::sort(&mut list, by, false);
                query::sort(&mut list, by, true);
            }
        }
        Err(error) => {
            prop_assert_eq!((error.status, error.scim_type), (400, Some("invalidValue")));
        }
    }
    if let Err(error) = query::parse_attribute(text) {
        prop_assert_eq!(error.status, 400);
    }
    Ok(())
}

/// Parses a PATCH request and applies it: a failure changes nothing, a success never touches a
/// read-only attribute.
fn check_patch(body: &Value, resource: &Value) -> Result<(), TestCaseError> {
    let operations = match patch::parse_request(body) {
        Ok(operations) => operations,
        Err(error) => {
            prop_assert_eq!(error.status, 400);
            return Ok(());
        }
    };
    let mut patched = resource.clone();
    match patch::apply(&mut patched, &operations, READ_ONLY) {
        Ok(()) => {
            for name in READ_ONLY {
                prop_assert_eq!(
                    members_named(&patched, name),
                    members_named(resource, name),
                    "{} changed by {}",
                    name,
                    body
                );
            }
        }
        Err(ScimError { status, .. }) => {
            prop_assert_eq!(status, 400);
            prop_assert_eq!(&patched, resource, "a failed PATCH changed the resource");
        }
    }
    Ok(())
}

fn patch_body() -> impl Strategy<Value = Value> {
    let operation = (
        mostly(
            &["add", "replace", "remove", "Add", "REPLACE"],
            &["move", "", "ADD "],
        ),
        prop::option::weighted(0.9, patch_path()),
        prop::option::weighted(0.9, json_value()),
        prop_oneof![3 => Just(Vec::new()), 1 => edits()],
    )
        .prop_map(|(op, path, value, edits)| {
            let mut operation = json!({ "op": op });
            if let Some(path) = path {
                operation["path"] = Value::String(edited(path, &edits));
            }
            if let Some(value) = value {
                operation["value"] = value;
            }
            operation
        });
    (
        prop::bool::weighted(0.95),
        prop::collection::vec(operation, 1..3),
        any::<bool>(),
    )
        .prop_map(|(declared, operations, capitalized)| {
            let schemas = if declared {
                json!([urn::PATCH_OP])
            } else {
                json!([urn::USER])
            };
            let key = if capitalized {
                "Operations"
            } else {
                "operations"
            };
            json!({ "schemas": schemas, key: operations })
        })
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn random_text_never_panics(text in "\\PC{0,200}") {
        let resources = [&*ANN];
        check_filter(&text, &resources)?;
        check_patch_path(&text)?;
        check_attributes(&text, &resources)?;
    }

    #[test]
    fn random_bytes_as_text_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let text = String::from_utf8_lossy(&bytes);
        let resources = [&*ANN];
        check_filter(&text, &resources)?;
        check_patch_path(&text)?;
        check_attributes(&text, &resources)?;
    }

    #[test]
    fn grammar_filters_never_panic_and_print_back_to_themselves(
        text in filter_text(),
        edits in edits(),
        resource in json_value(),
    ) {
        let text = edited(text, &edits);
        check_filter(&text, &[&*ANN, &resource])?;
        check_patch_path(&text)?;
    }

    #[test]
    fn grammar_patch_paths_never_panic_and_print_back_to_themselves(
        path in patch_path(),
        edits in edits(),
    ) {
        check_patch_path(&edited(path, &edits))?;
    }

    #[test]
    fn attribute_lists_never_panic_and_print_back_to_themselves(
        paths in prop::collection::vec(attr_path(), 0..6),
        separator in prop::sample::select(&[",", ", ", " , ", ",,", ";"][..]),
        edits in edits(),
        resources in prop::collection::vec(json_value(), 0..4),
    ) {
        let text = edited(paths.join(separator), &edits);
        let mut all: Vec<&Value> = resources.iter().collect();
        all.push(&ANN);
        check_attributes(&text, &all)?;
    }

    #[test]
    fn patch_requests_never_panic_and_are_all_or_nothing(
        body in patch_body(),
        resource in json_value(),
    ) {
        check_patch(&body, &ANN)?;
        check_patch(&body, &resource)?;
    }

    #[test]
    fn pages_stay_inside_the_results(
        total in prop_oneof![0usize..2000, any::<usize>()],
        start in any::<i64>(),
        count in prop::option::of(any::<i64>()),
    ) {
        let range = query::page(total, start, count);
        prop_assert!(range.start <= range.end && range.end <= total, "{:?} of {}", range, total);
        prop_assert!(range.len() <= query::MAX_PAGE);
    }
}

/// Filter text nested `depth` times by `open` ... `close` around `inner`.
fn nested(open: &str, inner: &str, close: &str, depth: usize) -> String {
    format!("{}{inner}{}", open.repeat(depth), close.repeat(depth))
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    for depth in [65, 1_000, 10_000, 100_000] {
        for (open, inner, close) in [
            ("(", "userName pr", ")"),
            ("not (", "userName pr", ")"),
            ("emails[", "value pr", "]"),
            ("emails[not (", "value pr", ")]"),
            ("(", "", ""),
            ("not (", "", ""),
            ("[", "", ""),
        ] {
            let text = nested(open, inner, close, depth);
            let error = filter::parse(&text).expect_err("too deep to parse");
            assert_eq!(
                error.scim_type,
                Some("invalidFilter"),
                "{open}{inner}{close}"
            );
            assert!(text.parse::<PatchPath>().is_err(), "{open}{inner}{close}");
            assert!(query::parse_attributes(&text).is_err());
            let mut resource = ANN.clone();
            let operations = [patch::Operation {
                op: patch::Op::Remove,
                path: Some(format!("emails[{text}]")),
                value: None,
            }];
            let error = patch::apply(&mut resource, &operations, READ_ONLY).expect_err("too deep");
            assert_eq!(error.scim_type, Some("invalidPath"));
        }
    }
}

#[test]
fn nesting_up_to_the_limit_parses_and_evaluates() {
    let limit = scim_v2::filter::MAX_FILTER_DEPTH;
    let grouped = nested("(", r#"userName eq "ann.lee""#, ")", limit);
    let parsed = filter::parse(&grouped).expect("64 groups parse");
    assert!(filter::matches(&parsed, &ANN));
    // Each `not` is a level of the tree as well as a bracket: 63 of them, and the comparison.
    let negated = nested("not (", r#"userName eq "x""#, ")", limit - 1);
    let parsed = filter::parse(&negated).expect("63 nots parse");
    assert!(filter::matches(&parsed, &ANN));
    assert_eq!(filter::parse(&parsed.to_string()).ok(), Some(parsed));
}

#[test]
fn long_flat_chains_are_bounded_by_the_term_limit() {
    let terms = |n: usize| vec![r#"userName eq "x""#; n].join(" or ");
    let limit = scim_v2::filter::MAX_FILTER_TERMS;
    let parsed = filter::parse(&terms(limit)).expect("the limit parses");
    assert!(!filter::matches(&parsed, &ANN));
    assert!(filter::parse(&terms(limit + 1)).is_err());
    assert!(filter::parse(&terms(100_000)).is_err());
}

/// Found by `attribute_lists_never_panic_and_print_back_to_themselves`: a sub-attribute of an
/// attribute already kept whole (`id`, always returned) replaced it with its projection, and
/// likewise `emails.value,emails.type` kept only the types. Paths naming one attribute are now
/// taken together.
#[test]
fn regression_a_sub_attribute_path_does_not_replace_what_another_path_kept() {
    let paths =
        query::parse_attributes("a:b:primary.givenName,userName.givenName,id.familyName,nickName")
            .expect("parses");
    let resource = json!({"id": [null]});
    assert_eq!(query::project(&resource, &paths, &[]), resource);
    let both = query::parse_attributes("emails.value,emails.type").expect("parses");
    let shown = query::project(&ANN, &both, &[]);
    assert_eq!(
        shown["emails"],
        json!([
            {"value": "ann@work.example", "type": "work"},
            {"value": "ann@home.example", "type": "home"}
        ])
    );
}
