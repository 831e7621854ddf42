//! The key and certificate that sign what idflow sends as a SAML party: an RSA key and a
//! self-signed certificate (SAML trusts the certificate in metadata, not a CA), kept in two PEM
//! files so an operator can bring their own or copy them to another node.

use std::path::Path;

use base64::Engine as _;
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::{X509, X509Name};
use samael::crypto::CryptoProvider;

use crate::error::SamlError;

/// A signing key with its certificate.
pub struct Credential {
    key: PKey<Private>,
    /// The key as PKCS#8 DER, the form xmlsec loads.
    key_der: Vec<u8>,
    certificate: Vec<u8>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Credential")
            .field("certificate_bytes", &self.certificate.len())
            .finish_non_exhaustive()
    }
}

fn fail(error: impl std::fmt::Display) -> SamlError {
    SamlError::Credential(error.to_string())
}

impl Credential {
    /// A new 2048-bit RSA key with a self-signed certificate for `common_name`, valid ten years.
    pub fn generate(common_name: &str) -> Result<Credential, SamlError> {
        let key = PKey::from_rsa(Rsa::generate(2048).map_err(fail)?).map_err(fail)?;
        let mut name = X509Name::builder().map_err(fail)?;
        name.append_entry_by_nid(Nid::COMMONNAME, common_name)
            .map_err(fail)?;
        let name = name.build();
        let mut builder = X509::builder().map_err(fail)?;
        let mut serial = BigNum::new().map_err(fail)?;
        serial
            .rand(127, MsbOption::MAYBE_ZERO, false)
            .map_err(fail)?;
        let serial = serial.to_asn1_integer().map_err(fail)?;
        builder.set_serial_number(&serial).map_err(fail)?;
        builder.set_version(2).map_err(fail)?;
        builder.set_subject_name(&name).map_err(fail)?;
        builder.set_issuer_name(&name).map_err(fail)?;
        builder.set_pubkey(&key).map_err(fail)?;
        let (from, until) = (
            Asn1Time::days_from_now(0).map_err(fail)?,
            Asn1Time::days_from_now(3650).map_err(fail)?,
        );
        builder.set_not_before(&from).map_err(fail)?;
        builder.set_not_after(&until).map_err(fail)?;
        builder.sign(&key, MessageDigest::sha256()).map_err(fail)?;
        let certificate = builder.build().to_der().map_err(fail)?;
        Credential::from_parts(key, certificate)
    }

    fn from_parts(key: PKey<Private>, certificate: Vec<u8>) -> Result<Credential, SamlError> {
        if key.rsa().is_err() {
            return Err(fail("the SAML signing key must be an RSA key"));
        }
        let key_der = key.private_key_to_pkcs8().map_err(fail)?;
        Ok(Credential {
            key,
            key_der,
            certificate,
        })
    }

    /// The credential from a PEM private key and PEM certificate, which must belong together.
    pub fn from_pem(key_pem: &[u8], certificate_pem: &[u8]) -> Result<Credential, SamlError> {
        let key = PKey::private_key_from_pem(key_pem).map_err(fail)?;
        let certificate = X509::from_pem(certificate_pem).map_err(fail)?;
        let public = certificate.public_key().map_err(fail)?;
        if !public.public_eq(&key) {
            return Err(fail("the certificate is not for this key"));
        }
        Credential::from_parts(key, certificate.to_der().map_err(fail)?)
    }

    /// Reads the key and certificate files, or creates both (the key readable by its owner
    /// only) when neither exists.
    pub fn load_or_create(
        key_path: &Path,
        certificate_path: &Path,
        common_name: &str,
    ) -> Result<Credential, SamlError> {
        let read =
            |path: &Path| std::fs::read(path).map_err(|e| fail(format!("{}: {e}", path.display())));
        match (key_path.exists(), certificate_path.exists()) {
            (true, true) => Credential::from_pem(&read(key_path)?, &read(certificate_path)?),
            (false, false) => {
                let credential = Credential::generate(common_name)?;
                let key_pem = credential.key.private_key_to_pem_pkcs8().map_err(fail)?;
                let certificate_pem = X509::from_der(&credential.certificate)
                    .and_then(|c| c.to_pem())
                    .map_err(fail)?;
                write_new(key_path, &key_pem, 0o600)?;
                write_new(certificate_path, &certificate_pem, 0o644)?;
                Ok(credential)
            }
            _ => Err(fail(format!(
                "{} and {} must both exist or neither",
                key_path.display(),
                certificate_path.display()
            ))),
        }
    }

    /// The certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate
    }

    /// The certificate as metadata and KeyInfo carry it (base64 of the DER).
    pub fn certificate_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.certificate)
    }

    /// Fills the first empty `ds:Signature` template in `xml`, in document order. One per call:
    /// a caller signing both an assertion and its response signs the assertion alone first
    /// (see [`crate::idp`]).
    pub fn sign_xml(&self, xml: &str) -> Result<String, SamlError> {
        samael::crypto::XmlSec::sign_xml(xml, &self.key_der)
            .map_err(|e| SamlError::Credential(format!("signing: {e}")))
    }

    /// An RSA-SHA256 signature of `data`.
    pub fn sign_rsa_sha256(&self, data: &[u8]) -> Result<Vec<u8>, SamlError> {
        crate::binding::rsa_sha256(&self.key, data)
    }
}

/// Creates `path` with `pem` and flushes it, then its directory, to the disk. Both files
/// must be durable before the credential is used: after a crash (or a file system the kernel
/// turned read-only) an unflushed certificate comes back empty beside its key, and a server
/// refuses to start on that pair until someone removes both, which changes the credential
/// every service provider has.
fn write_new(path: &Path, pem: &[u8], mode: u32) -> Result<(), SamlError> {
    use std::io::Write;
    let failed = |e: std::io::Error| fail(format!("{}: {e}", path.display()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(failed)?;
    file.write_all(pem)
        .and_then(|()| file.sync_all())
        .map_err(failed)?;
    // The new directory entry is durable only once the directory is (POSIX fsync(2)).
    #[cfg(unix)]
    if let Some(directory) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(directory)
            .and_then(|d| d.sync_all())
            .map_err(failed)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_files_load_back_and_a_mismatched_pair_is_refused() {
        let dir = std::env::temp_dir().join(format!("idflow-saml-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (key, cert) = (dir.join("saml.key"), dir.join("saml.crt"));
        let created = Credential::load_or_create(&key, &cert, "idp.test").expect("create");
        let loaded = Credential::load_or_create(&key, &cert, "idp.test").expect("load");
        assert_eq!(created.certificate_der(), loaded.certificate_der());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).expect("meta").permissions().mode();
            assert_eq!(mode & 0o077, 0, "the key is private: {mode:o}");
        }
        let other = Credential::generate("other").expect("other");
        let other_cert = X509::from_der(other.certificate_der())
            .and_then(|c| c.to_pem())
            .expect("pem");
        let key_pem = std::fs::read(&key).expect("key");
        assert!(Credential::from_pem(&key_pem, &other_cert).is_err());
        std::fs::remove_file(&cert).expect("rm");
        assert!(Credential::load_or_create(&key, &cert, "idp.test").is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
