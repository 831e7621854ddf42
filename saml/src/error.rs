//! Why a SAML message was refused: one variant per check, so the server can audit exactly
//! what failed and tests can assert it.

/// A refused or unbuildable SAML message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SamlError {
    /// Not well-formed, not the expected element, or an encoding error.
    #[error("malformed SAML message: {0}")]
    Malformed(String),
    /// The message declares a DOCTYPE or entities (refused before parsing them).
    #[error("the message declares a DOCTYPE; entities are not accepted")]
    Doctype,
    /// Larger than the limit, before or after inflating.
    #[error("the message is larger than {0} bytes")]
    TooLarge(usize),
    /// No signature where one is required, or one that does not verify with a trusted key, or
    /// an algorithm other than RSA-SHA256 over SHA-256 digests.
    #[error("the signature is missing, invalid or not RSA-SHA256: {0}")]
    Signature(String),
    /// The issuer is not the expected party.
    #[error("issued by `{found}`, expected `{expected}`")]
    Issuer {
        /// Who it says issued it.
        found: String,
        /// Who should have.
        expected: String,
    },
    /// The audience restriction does not name us.
    #[error("the assertion is not meant for this service provider: {0}")]
    Audience(String),
    /// The destination or recipient is not where the message arrived.
    #[error("the message is addressed to `{found}`, not `{expected}`")]
    Recipient {
        /// The address in the message.
        found: String,
        /// Where it arrived.
        expected: String,
    },
    /// Not an answer to the request we sent.
    #[error("the message answers another request: {0}")]
    InResponseTo(String),
    /// Outside its validity window, allowing for the configured skew.
    #[error("the assertion is outside its validity window: {0}")]
    Expired(String),
    /// The IdP answered with a failure status.
    #[error("the identity provider answered {0}")]
    Status(String),
    /// Something a strict profile requires is absent.
    #[error("the message lacks {0}")]
    Missing(&'static str),
    /// Key, certificate or signing failure on our side.
    #[error("SAML credential: {0}")]
    Credential(String),
}
