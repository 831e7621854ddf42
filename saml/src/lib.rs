//! SAML 2.0 for idflow, both ways: as an identity provider it builds signed responses and its
//! metadata and reads service providers' requests and metadata; as a service provider (an
//! upstream SAML IdP used by a flow's `federated:` step) it builds requests and verifies
//! responses.
//!
//! XML signatures are xmlsec's, through samael (its `xmlsec` feature). What this crate adds is
//! what samael leaves to its caller or gets wrong for a strict deployment:
//!
//! - Signatures are RSA-SHA256 over SHA-256 digests with exclusive canonicalization, both ways:
//!   samael's own response template digests with SHA-1, and its verification accepts any
//!   algorithm unless told otherwise.
//! - Only the part of a document a signature covers is read (samael's reduce-to-signed), so a
//!   signature-wrapping attack has nothing unsigned to smuggle in.
//! - Every message is refused before parsing if it declares a DOCTYPE (no entity can expand),
//!   is not UTF-8 (a DOCTYPE in UTF-16 or UTF-7 would hide from that check, not from libxml2),
//!   is larger than [`binding::MAX_MESSAGE`] or inflates beyond it.
//! - Times, audiences, recipients and request ids are checked against what the caller expects,
//!   with the caller's clock, and every missing condition is an error rather than a pass.

pub mod binding;
pub mod credential;
pub mod error;
pub mod idp;
pub mod logout;
pub mod metadata;
pub mod request;
pub mod signature;
pub mod sp;
pub mod wsfed;
pub mod xml;

pub use credential::Credential;
pub use error::SamlError;

/// SAML's status and format URIs, in one place.
pub mod uri {
    /// The request succeeded.
    pub const SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
    /// The requester's fault (a bad request).
    pub const REQUESTER: &str = "urn:oasis:names:tc:SAML:2.0:status:Requester";
    /// The responder's fault.
    pub const RESPONDER: &str = "urn:oasis:names:tc:SAML:2.0:status:Responder";
    /// Second-level status: the user was not (or could not be) authenticated.
    pub const AUTHN_FAILED: &str = "urn:oasis:names:tc:SAML:2.0:status:AuthnFailed";
    /// Second-level status: `IsPassive` was asked and the user would have to interact.
    pub const NO_PASSIVE: &str = "urn:oasis:names:tc:SAML:2.0:status:NoPassive";
    /// Second-level status: the NameID format asked for cannot be given.
    pub const INVALID_NAME_ID_POLICY: &str =
        "urn:oasis:names:tc:SAML:2.0:status:InvalidNameIDPolicy";
    /// Second-level status: the request is not supported (e.g. an unregistered ACS URL).
    pub const REQUEST_UNSUPPORTED: &str = "urn:oasis:names:tc:SAML:2.0:status:RequestUnsupported";
    /// Second-level status: not every session participant could be logged out.
    pub const PARTIAL_LOGOUT: &str = "urn:oasis:names:tc:SAML:2.0:status:PartialLogout";
    /// Second-level status: the principal named is not known (here: not this session's).
    pub const UNKNOWN_PRINCIPAL: &str = "urn:oasis:names:tc:SAML:2.0:status:UnknownPrincipal";
    /// The HTTP-Redirect binding.
    pub const REDIRECT: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";
    /// The HTTP-POST binding.
    pub const POST: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";
    /// A persistent, opaque NameID: the same for one user at one SP, different across SPs.
    pub const PERSISTENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent";
    /// A transient NameID: new for every assertion.
    pub const TRANSIENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient";
    /// The user's email address as the NameID.
    pub const EMAIL: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";
    /// No format asked for: idflow answers with the username.
    pub const UNSPECIFIED: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified";
    /// Bearer subject confirmation.
    pub const BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";
    /// Attribute names that are URIs.
    pub const ATTRNAME_URI: &str = "urn:oasis:names:tc:SAML:2.0:attrname-format:uri";
    /// Attribute names that are plain words.
    pub const ATTRNAME_BASIC: &str = "urn:oasis:names:tc:SAML:2.0:attrname-format:basic";
    /// Password over a protected channel.
    pub const AC_PASSWORD: &str =
        "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport";
    /// Authentication with several factors (a REFEDS profile, widely understood).
    pub const AC_MFA: &str = "https://refeds.org/profile/mfa";
    /// Nothing is said about how the user authenticated.
    pub const AC_UNSPECIFIED: &str = "urn:oasis:names:tc:SAML:2.0:ac:classes:unspecified";
    /// RSA with SHA-256, the only signature algorithm idflow produces or accepts.
    pub const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
    /// SHA-256, the only digest idflow produces or accepts.
    pub const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";
    /// Exclusive XML canonicalization.
    pub const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
    /// The enveloped-signature transform.
    pub const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
}
