//! The server's secret key, and sealing with it: TOTP seeds (and anything else a copy of the
//! database must not reveal) are encrypted with AES-256-GCM under a key that lives outside the
//! database — in a file beside it (created on first start, readable by the owner only), in a
//! file the configuration names, or in `IDFLOW_SECRET_KEY`.
//!
//! Each sealed value is bound to what it belongs to (the "associated data", e.g. the user and
//! factor id), so a sealed seed copied onto another user's record does not open.

use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, Nonce, RandomizedNonceKey};

use crate::crypto::{b64url, b64url_decode};

/// Bytes of the key (AES-256).
pub const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 12;

/// The secret key, ready to seal and open.
pub struct SecretKey(RandomizedNonceKey);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    /// A key from its base64url text (43 characters).
    pub fn from_text(text: &str) -> Result<SecretKey, String> {
        let bytes = b64url_decode(text.trim())
            .filter(|b| b.len() == KEY_BYTES)
            .ok_or_else(|| {
                format!("a secret key is {KEY_BYTES} bytes in base64url (43 characters)")
            })?;
        RandomizedNonceKey::new(&AES_256_GCM, &bytes)
            .map(SecretKey)
            .map_err(|_| "the secret key was refused by AES-256-GCM".to_string())
    }

    /// Reads the key file at `path`, creating it with a fresh random key (mode 0600) when it
    /// does not exist yet.
    pub fn load_or_create(path: &Path) -> Result<SecretKey, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => SecretKey::from_text(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let text = crate::crypto::random_token(KEY_BYTES);
                write_private(path, &text)
                    .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
                SecretKey::from_text(&text)
            }
            Err(error) => Err(format!("cannot read {}: {error}", path.display())),
        }
    }

    /// Encrypts `plain` bound to `context`; the result is base64url of nonce and ciphertext.
    pub fn seal(&self, plain: &[u8], context: &str) -> Result<String, String> {
        let mut in_out = plain.to_vec();
        let nonce = self
            .0
            .seal_in_place_append_tag(Aad::from(context.as_bytes()), &mut in_out)
            .map_err(|_| "sealing failed".to_string())?;
        let mut out = nonce.as_ref().to_vec();
        out.extend_from_slice(&in_out);
        Ok(b64url(&out))
    }

    /// Decrypts what [`SecretKey::seal`] made for the same `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<Vec<u8>, String> {
        let bytes = b64url_decode(sealed).ok_or("a sealed value is base64url")?;
        if bytes.len() < NONCE_BYTES {
            return Err("the sealed value is too short".into());
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| "bad nonce")?;
        let mut in_out = ciphertext.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut in_out)
            .map_err(
                |_| "the sealed value does not open with this key (wrong key, or it was moved)",
            )?;
        Ok(plain.to_vec())
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        SecretKey::from_text(&crate::crypto::random_token(KEY_BYTES)).expect("key")
    }

    #[test]
    fn opens_what_it_sealed_only_with_the_same_key_and_context() {
        let key = key();
        let sealed = key.seal(b"seed bytes", "alice/f1").expect("seal");
        assert_eq!(key.open(&sealed, "alice/f1").expect("open"), b"seed bytes");
        assert!(
            key.open(&sealed, "mallory/f1").is_err(),
            "moved to another user"
        );
        assert!(
            self::key().open(&sealed, "alice/f1").is_err(),
            "another key"
        );
        assert!(!sealed.contains("seed"), "not readable");
        assert_ne!(
            sealed,
            key.seal(b"seed bytes", "alice/f1").expect("seal"),
            "fresh nonce"
        );
    }

    #[test]
    fn creates_a_private_key_file_once_and_reads_it_back() {
        let dir =
            std::env::temp_dir().join(format!("idflow-secret-{}", crate::crypto::random_token(6)));
        let path = dir.join("secret.key");
        let first = SecretKey::load_or_create(&path).expect("create");
        let sealed = first.seal(b"x", "c").expect("seal");
        let again = SecretKey::load_or_create(&path).expect("read");
        assert_eq!(again.open(&sealed, "c").expect("open"), b"x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o077, 0, "readable by the owner only");
        }
        assert!(SecretKey::from_text("short").is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
