//! Filters (RFC 7644 3.4.2.2) evaluated against a resource as JSON.
//!
//! The grammar is `scim_v2`'s; the matching rules are SCIM's:
//! - strings compare without regard to case, except attributes the schema makes case-exact
//!   (`id`, `externalId`);
//! - a multi-valued attribute matches when any of its values does, and a comparison on a
//!   complex multi-valued attribute without a sub-attribute compares its `value`s;
//! - `ne` matches when no value is equal (so also when the attribute is absent);
//! - `pr` matches a value that is not null, not an empty string and not an empty list;
//! - `gt`, `ge`, `lt`, `le` order strings (ISO 8601 times included) and numbers; booleans take
//!   only `eq` and `ne`.

use scim_v2::filter::{AttrExp, AttrPath, CompValue, CompareOp, Filter, ValFilter};
use serde_json::Value;

use crate::error::ScimError;
use crate::path::{get, values};

/// Parses a filter, or says where it went wrong (400 `invalidFilter`).
pub fn parse(text: &str) -> Result<Filter, ScimError> {
    text.parse::<Filter>()
        .map_err(|e| ScimError::invalid_filter(format!("the filter does not parse: {e}")))
}

/// Whether `resource` matches `filter`.
pub fn matches(filter: &Filter, resource: &Value) -> bool {
    match filter {
        Filter::Attr(exp) => attribute(exp, resource),
        Filter::ValuePath(value_path) => values(resource, &value_path.attr)
            .into_iter()
            .any(|element| element_matches(&value_path.filter, element)),
        Filter::Not(inner) => !matches(inner, resource),
        Filter::And(operands) => operands.as_slice().iter().all(|f| matches(f, resource)),
        Filter::Or(operands) => operands.as_slice().iter().any(|f| matches(f, resource)),
    }
}

/// Whether one element of a multi-valued attribute matches a value path's filter.
pub fn element_matches(filter: &ValFilter, element: &Value) -> bool {
    match filter {
        ValFilter::Attr(exp) => attribute(exp, element),
        ValFilter::Not(inner) => !element_matches(inner, element),
        ValFilter::And(operands) => operands
            .as_slice()
            .iter()
            .all(|f| element_matches(f, element)),
        ValFilter::Or(operands) => operands
            .as_slice()
            .iter()
            .any(|f| element_matches(f, element)),
    }
}

/// The values a comparison looks at: a complex value without a sub-attribute stands for its
/// `value`.
fn compared<'a>(context: &'a Value, path: &AttrPath) -> Vec<&'a Value> {
    values(context, path)
        .into_iter()
        .filter_map(|v| {
            if v.is_object() {
                get(v, "value")
            } else {
                Some(v)
            }
        })
        .collect()
}

fn present(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => items.iter().any(present),
        _ => true,
    }
}

fn attribute(exp: &AttrExp, context: &Value) -> bool {
    match exp {
        AttrExp::Present(path) => values(context, path).into_iter().any(present),
        AttrExp::Comparison(path, op, expected) => {
            let found = compared(context, path);
            let exact = case_exact(path);
            let equal = |v: &Value| compare(v, &CompareOp::Eq, expected, exact);
            match (op, expected) {
                (CompareOp::Eq, CompValue::Null) => !found.into_iter().any(present),
                (CompareOp::Ne, CompValue::Null) => found.into_iter().any(present),
                (CompareOp::Ne, _) => !found.into_iter().any(equal),
                _ => found.into_iter().any(|v| compare(v, op, expected, exact)),
            }
        }
    }
}

/// The attributes whose values compare with case (RFC 7643: `caseExact`).
fn case_exact(path: &AttrPath) -> bool {
    path.sub_attr.is_none()
        && ["id", "externalId"]
            .iter()
            .any(|name| name.eq_ignore_ascii_case(&path.name))
}

fn compare(actual: &Value, op: &CompareOp, expected: &CompValue, exact: bool) -> bool {
    use std::cmp::Ordering;
    let ordered = |ordering: Ordering| match op {
        CompareOp::Eq => ordering == Ordering::Equal,
        CompareOp::Ne => ordering != Ordering::Equal,
        CompareOp::Gt => ordering == Ordering::Greater,
        CompareOp::Ge => ordering != Ordering::Less,
        CompareOp::Lt => ordering == Ordering::Less,
        CompareOp::Le => ordering != Ordering::Greater,
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
    };
    match (actual, expected) {
        (Value::String(actual), CompValue::Str(expected)) => {
            let (actual, expected) = if exact {
                (actual.clone(), expected.clone())
            } else {
                (actual.to_lowercase(), expected.to_lowercase())
            };
            match op {
                CompareOp::Co => actual.contains(&expected),
                CompareOp::Sw => actual.starts_with(&expected),
                CompareOp::Ew => actual.ends_with(&expected),
                _ => ordered(actual.cmp(&expected)),
            }
        }
        (Value::Number(actual), CompValue::Number(expected)) => {
            match (actual.as_f64(), expected.as_f64()) {
                (Some(a), Some(e)) => a.partial_cmp(&e).is_some_and(ordered),
                _ => false,
            }
        }
        (Value::Bool(actual), CompValue::True | CompValue::False) => {
            let expected = matches!(expected, CompValue::True);
            match op {
                CompareOp::Eq => *actual == expected,
                CompareOp::Ne => *actual != expected,
                _ => false,
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ann() -> Value {
        json!({
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
            "meta": {"lastModified": "2026-03-01T10:00:00Z", "resourceType": "User"},
            crate::urn::ENTERPRISE_USER: {"employeeNumber": "701", "costCenter": 4130}
        })
    }

    fn holds(filter: &str) -> bool {
        matches(
            &parse(filter).unwrap_or_else(|e| panic!("{filter}: {e}")),
            &ann(),
        )
    }

    #[test]
    fn every_operator_on_strings_ignores_case_except_for_case_exact_attributes() {
        for (filter, expected) in [
            (r#"userName eq "ann.lee""#, true),
            (r#"userName ne "ann.lee""#, false),
            (r#"userName ne "bob""#, true),
            (r#"userName co "N.L""#, true),
            (r#"userName sw "ANN""#, true),
            (r#"userName ew "lee""#, true),
            (r#"userName ew "ann""#, false),
            (r#"userName gt "Ann""#, true),
            (r#"userName ge "ann.lee""#, true),
            (r#"userName lt "b""#, true),
            (r#"userName le "ann.lea""#, false),
            (r#"id eq "u-1""#, false),
            (r#"id eq "U-1""#, true),
            (r#"externalId sw "e""#, false),
            (r#"USERNAME EQ "ann.lee""#, true),
        ] {
            assert_eq!(holds(filter), expected, "{filter}");
        }
    }

    #[test]
    fn presence_numbers_booleans_dates_and_null() {
        for (filter, expected) in [
            ("userName pr", true),
            ("title pr", false),
            ("nickName pr", false),
            ("emails pr", true),
            ("active eq true", true),
            ("active ne true", false),
            ("active gt true", false),
            (r#"meta.lastModified gt "2026-01-01T00:00:00Z""#, true),
            (r#"meta.lastModified lt "2026-01-01T00:00:00Z""#, false),
            ("nickName eq null", true),
            ("userName eq null", false),
            ("nickName ne null", false),
            (
                &format!("{}:costCenter ge 4130", crate::urn::ENTERPRISE_USER),
                true,
            ),
            (
                &format!("{}:costCenter gt 4.13e3", crate::urn::ENTERPRISE_USER),
                false,
            ),
            (
                &format!(r#"{}:employeeNumber eq "701""#, crate::urn::ENTERPRISE_USER),
                true,
            ),
        ] {
            assert_eq!(holds(filter), expected, "{filter}");
        }
    }

    #[test]
    fn multi_valued_attributes_match_when_any_value_does_and_value_paths_scope_to_one_element() {
        for (filter, expected) in [
            (r#"emails eq "ANN@HOME.example""#, true),
            (r#"emails.type eq "home""#, true),
            (r#"emails ne "ann@home.example""#, false),
            (r#"emails[type eq "work" and value co "@work."]"#, true),
            (r#"emails[type eq "home" and primary eq true]"#, false),
            (r#"emails[type eq "home" or primary eq true]"#, true),
            (r#"emails[not (type eq "work")]"#, true),
            (r#"emails[type eq "other"]"#, false),
        ] {
            assert_eq!(holds(filter), expected, "{filter}");
        }
    }

    #[test]
    fn logic_groups_and_precedence() {
        for (filter, expected) in [
            (
                r#"userName eq "x" or name.givenName eq "ann" and active eq true"#,
                true,
            ),
            (
                r#"(userName eq "x" or name.givenName eq "ann") and active eq false"#,
                false,
            ),
            (
                r#"userName eq "x" or name.givenName eq "bob" and active eq true"#,
                false,
            ),
            (r#"not (userName eq "x")"#, true),
            (r#"not (userName eq "ann.lee") or title pr"#, false),
            (
                r#"name.givenName eq "ann" and name.familyName eq "lee" and active eq true"#,
                true,
            ),
        ] {
            assert_eq!(holds(filter), expected, "{filter}");
        }
    }

    #[test]
    fn a_filter_that_does_not_parse_is_an_invalid_filter_error() {
        for bad in [
            r#"userName eq"#,
            r#"userName xx "a""#,
            r#"(userName eq "a""#,
            "and",
            r#"emails[type eq "a"[value eq "b"]]"#,
        ] {
            let error = parse(bad).expect_err(bad);
            assert_eq!(
                (error.status, error.scim_type),
                (400, Some("invalidFilter")),
                "{bad}"
            );
        }
    }
}
