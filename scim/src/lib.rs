//! SCIM 2.0 (RFC 7643, RFC 7644) as idflow serves and sends it, without HTTP or a store:
//!
//! - [`filter`]: the filter grammar (parsed by `scim_v2`) evaluated against a resource as JSON,
//!   with SCIM's matching rules (case-insensitive attribute names, case-exact only where the
//!   schema says, multi-valued attributes matching when any value does, value paths).
//! - [`patch`]: PATCH operations (add, replace, remove; attribute, sub-attribute, value-filter
//!   and extension-URN paths) applied to a resource.
//! - [`query`]: `attributes` / `excludedAttributes`, sorting and pagination of list responses.
//! - [`schema`]: the discovery documents (schemas, resource types, service provider config).
//! - [`error`]: SCIM error bodies with their `scimType`.
//!
//! Resources are `serde_json::Value` documents: the server owns the mapping between them and
//! its records, so this crate never sees a store.

pub mod error;
pub mod filter;
pub mod patch;
pub mod path;
pub mod query;
pub mod schema;

pub use error::ScimError;

/// Schema URNs of the resources idflow serves.
pub mod urn {
    /// The core User schema.
    pub const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
    /// The core Group schema.
    pub const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
    /// The Enterprise User extension.
    pub const ENTERPRISE_USER: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
    /// A list response.
    pub const LIST_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
    /// A PATCH request.
    pub const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
    /// An error.
    pub const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
    /// A search request (`POST /.search`).
    pub const SEARCH_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
}
