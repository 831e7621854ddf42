//! SCIM errors (RFC 7644 3.12): an HTTP status, a `scimType` where the RFC defines one, and a
//! detail for the client.

use serde_json::{Value, json};

/// A SCIM error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimError {
    /// The HTTP status.
    pub status: u16,
    /// The RFC's `scimType`, for 400 and 409 errors that have one.
    pub scim_type: Option<&'static str>,
    /// What went wrong, for the client.
    pub detail: String,
}

impl std::fmt::Display for ScimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.scim_type {
            Some(kind) => write!(f, "{} {kind}: {}", self.status, self.detail),
            None => write!(f, "{}: {}", self.status, self.detail),
        }
    }
}

impl std::error::Error for ScimError {}

impl ScimError {
    fn new(status: u16, scim_type: Option<&'static str>, detail: impl Into<String>) -> ScimError {
        ScimError {
            status,
            scim_type,
            detail: detail.into(),
        }
    }

    /// 400 `invalidFilter`: the filter does not parse or cannot be applied.
    pub fn invalid_filter(detail: impl Into<String>) -> ScimError {
        ScimError::new(400, Some("invalidFilter"), detail)
    }

    /// 400 `invalidPath`: a PATCH path does not parse or names nothing known.
    pub fn invalid_path(detail: impl Into<String>) -> ScimError {
        ScimError::new(400, Some("invalidPath"), detail)
    }

    /// 400 `noTarget`: a PATCH path matched nothing where something had to match.
    pub fn no_target(detail: impl Into<String>) -> ScimError {
        ScimError::new(400, Some("noTarget"), detail)
    }

    /// 400 `invalidValue`: a value of the wrong type, or missing where required.
    pub fn invalid_value(detail: impl Into<String>) -> ScimError {
        ScimError::new(400, Some("invalidValue"), detail)
    }

    /// 400 `invalidSyntax`: the request body is not what the operation takes.
    pub fn invalid_syntax(detail: impl Into<String>) -> ScimError {
        ScimError::new(400, Some("invalidSyntax"), detail)
    }

    /// 400 `mutability`: an attempt to change a read-only or immutable attribute.
    pub fn mutability(detail: impl Into<String>) -> ScimError {
        ScimError::new(400, Some("mutability"), detail)
    }

    /// 400 `tooMany`: more results or operations than the server will handle.
    pub fn too_many(detail: impl Into<String>) -> ScimError {
        ScimError::new(400, Some("tooMany"), detail)
    }

    /// 409 `uniqueness`: a unique attribute's value is taken.
    pub fn uniqueness(detail: impl Into<String>) -> ScimError {
        ScimError::new(409, Some("uniqueness"), detail)
    }

    /// 500: the server failed (the detail is for the log; the body says only that).
    pub fn new_internal(detail: impl Into<String>) -> ScimError {
        ScimError::new(500, None, detail)
    }

    /// 401: no or wrong credentials.
    pub fn unauthorized(detail: impl Into<String>) -> ScimError {
        ScimError::new(401, None, detail)
    }

    /// 403: credentials without the `scim` privilege or scope.
    pub fn forbidden(detail: impl Into<String>) -> ScimError {
        ScimError::new(403, None, detail)
    }

    /// 405: the resource does not take this method.
    pub fn method_not_allowed(detail: impl Into<String>) -> ScimError {
        ScimError::new(405, None, detail)
    }

    /// 429: too many failed attempts from this address or at this account.
    pub fn too_many_requests(detail: impl Into<String>) -> ScimError {
        ScimError::new(429, None, detail)
    }

    /// 404: no such resource.
    pub fn not_found(detail: impl Into<String>) -> ScimError {
        ScimError::new(404, None, detail)
    }

    /// 412: `If-Match` names another version.
    pub fn precondition_failed(detail: impl Into<String>) -> ScimError {
        ScimError::new(412, None, detail)
    }

    /// The error body.
    pub fn body(&self) -> Value {
        let mut body = json!({
            "schemas": [crate::urn::ERROR],
            "status": self.status.to_string(),
            "detail": self.detail,
        });
        if let Some(kind) = self.scim_type {
            body["scimType"] = kind.into();
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_has_the_error_schema_a_string_status_and_the_scim_type() {
        let body = ScimError::uniqueness("userName `ann` is taken").body();
        assert_eq!(body["schemas"][0], crate::urn::ERROR);
        assert_eq!(body["status"], "409");
        assert_eq!(body["scimType"], "uniqueness");
        assert!(ScimError::not_found("x").body().get("scimType").is_none());
    }
}
