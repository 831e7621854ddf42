//! Signing keys and JSON Web Tokens.
//!
//! One RS256 key (ID tokens by default: every OpenID client supports it) and one ES256 key
//! (access tokens by default: 15x cheaper to sign) are active at a time. `idflow keys rotate`
//! retires them and makes new ones; a retired key stays in the JWKS until every token it signed
//! has expired, then drops out.
//!
//! JWS compact serialization is written here by hand over aws-lc-rs key objects parsed once:
//! jsonwebtoken re-parses its key on every `encode` (RS256 678 µs against 250 µs with a parsed
//! key, measured in DEPENDENCIES.md) and openidconnect has no ES256 signing key. The format is
//! three base64url parts; the care is in verification, which pins the algorithm to the key
//! named by `kid` (no `alg: none`, no RS/HS confusion).

use std::collections::HashMap;
use std::sync::Arc;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RsaKeyPair, UnparsedPublicKey,
};
use serde_json::{Value, json};

use crate::crypto::{b64url, b64url_decode, sha256};
use crate::store::{KeyRecord, Store, StoreError, Write};

/// A JWS algorithm idflow signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256, 2048-bit keys.
    Rs256,
    /// ECDSA P-256 with SHA-256.
    Es256,
}

impl Alg {
    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
        }
    }

    /// Parses a JOSE name.
    pub fn parse(name: &str) -> Option<Alg> {
        match name {
            "RS256" => Some(Alg::Rs256),
            "ES256" => Some(Alg::Es256),
            _ => None,
        }
    }
}

enum Pair {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

/// A private key, parsed once.
struct SigningKey {
    kid: String,
    pair: Pair,
}

/// A public key that verifies tokens.
struct VerifyingKey {
    alg: Alg,
    public: Vec<u8>,
}

/// The keys in force: what signs now, what verifies, and what the JWKS publishes.
pub struct KeySet {
    active: HashMap<Alg, Arc<SigningKey>>,
    verifying: HashMap<String, VerifyingKey>,
    jwks: Value,
}

/// Why a token did not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    /// Not three base64url parts of JSON.
    Malformed,
    /// No published key has this `kid`, or the header's `alg` is not the key's.
    UnknownKey,
    /// The signature does not verify.
    BadSignature,
}

fn key_error(error: impl std::fmt::Display) -> StoreError {
    StoreError::Failed(format!("signing key: {error}"))
}

fn generate(alg: Alg, now: u64) -> Result<KeyRecord, StoreError> {
    let der = match alg {
        Alg::Rs256 => {
            let pair = RsaKeyPair::generate(KeySize::Rsa2048).map_err(key_error)?;
            pair.as_der().map_err(key_error)?.as_ref().to_vec()
        }
        Alg::Es256 => {
            let pair =
                EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(key_error)?;
            pair.to_pkcs8v1().map_err(key_error)?.as_ref().to_vec()
        }
    };
    let parsed = parse(alg, &der, String::new())?;
    Ok(KeyRecord {
        kid: kid_for(&public_bytes(&parsed.pair)),
        alg: alg.name().into(),
        pkcs8: b64url(&der),
        created: now,
        retired: None,
    })
}

fn parse(alg: Alg, der: &[u8], kid: String) -> Result<SigningKey, StoreError> {
    let pair = match alg {
        Alg::Rs256 => Pair::Rsa(RsaKeyPair::from_pkcs8(der).map_err(key_error)?),
        Alg::Es256 => Pair::Ec(
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der).map_err(key_error)?,
        ),
    };
    Ok(SigningKey { kid, pair })
}

fn public_bytes(pair: &Pair) -> Vec<u8> {
    match pair {
        Pair::Rsa(pair) => pair.public_key().as_ref().to_vec(),
        Pair::Ec(pair) => pair.public_key().as_ref().to_vec(),
    }
}

fn kid_for(public: &[u8]) -> String {
    b64url(&sha256(public)[..12])
}

fn jwk(key: &SigningKey) -> Value {
    match &key.pair {
        Pair::Rsa(pair) => {
            let public = pair.public_key();
            json!({
                "kty": "RSA", "use": "sig", "alg": "RS256", "kid": key.kid,
                "n": b64url(public.modulus().big_endian_without_leading_zero()),
                "e": b64url(public.exponent().big_endian_without_leading_zero()),
            })
        }
        Pair::Ec(pair) => {
            let point = pair.public_key().as_ref();
            // An uncompressed P-256 point: 0x04, then 32 bytes of x and 32 of y.
            let (x, y) = (&point[1..33], &point[33..65]);
            json!({
                "kty": "EC", "use": "sig", "alg": "ES256", "kid": key.kid, "crv": "P-256",
                "x": b64url(x), "y": b64url(y),
            })
        }
    }
}

impl KeySet {
    /// Loads the keys from the store, generating an active key for each algorithm that has
    /// none. Retired keys are published while `now < retired + keep_seconds`.
    pub fn load_or_create(
        store: &dyn Store,
        now: u64,
        keep_seconds: u64,
    ) -> Result<KeySet, StoreError> {
        let mut records = store.keys()?;
        for alg in [Alg::Rs256, Alg::Es256] {
            if !records
                .iter()
                .any(|r| r.alg == alg.name() && r.retired.is_none())
            {
                let record = generate(alg, now)?;
                store.commit(vec![Write::PutKey(record.clone())])?;
                records.push(record);
            }
        }
        KeySet::from_records(&records, now, keep_seconds)
    }

    /// Retires every active key and makes new ones; returns the new key ids.
    pub fn rotate(store: &dyn Store, now: u64) -> Result<Vec<String>, StoreError> {
        let mut batch = Vec::new();
        for mut record in store.keys()? {
            if record.retired.is_none() {
                record.retired = Some(now);
                batch.push(Write::PutKey(record));
            }
        }
        let mut kids = Vec::new();
        for alg in [Alg::Rs256, Alg::Es256] {
            let record = generate(alg, now)?;
            kids.push(format!("{} {}", record.alg, record.kid));
            batch.push(Write::PutKey(record));
        }
        store.commit(batch)?;
        Ok(kids)
    }

    fn from_records(
        records: &[KeyRecord],
        now: u64,
        keep_seconds: u64,
    ) -> Result<KeySet, StoreError> {
        let mut active: HashMap<Alg, Arc<SigningKey>> = HashMap::new();
        let mut verifying = HashMap::new();
        let mut published = Vec::new();
        let mut sorted: Vec<&KeyRecord> = records.iter().collect();
        sorted.sort_by_key(|r| std::cmp::Reverse(r.created));
        for record in sorted {
            let Some(alg) = Alg::parse(&record.alg) else {
                continue;
            };
            if record
                .retired
                .is_some_and(|retired| retired.saturating_add(keep_seconds) <= now)
            {
                continue;
            }
            let der = b64url_decode(&record.pkcs8).ok_or_else(|| {
                StoreError::Failed(format!("key {} is not base64url", record.kid))
            })?;
            let key = parse(alg, &der, record.kid.clone())?;
            published.push(jwk(&key));
            verifying.insert(
                record.kid.clone(),
                VerifyingKey {
                    alg,
                    public: public_bytes(&key.pair),
                },
            );
            if record.retired.is_none() && !active.contains_key(&alg) {
                active.insert(alg, Arc::new(key));
            }
        }
        Ok(KeySet {
            active,
            verifying,
            jwks: json!({ "keys": published }),
        })
    }

    /// The JWKS document.
    pub fn jwks(&self) -> &Value {
        &self.jwks
    }

    /// Signs `claims` as a compact JWS with the active key for `alg`; `typ` is the header's
    /// type (`JWT`, or `at+jwt` for access tokens, RFC 9068).
    pub fn sign(&self, alg: Alg, typ: &str, claims: &Value) -> Result<String, StoreError> {
        let key = self
            .active
            .get(&alg)
            .ok_or_else(|| StoreError::Failed(format!("no active {} key", alg.name())))?;
        let header = json!({ "alg": alg.name(), "typ": typ, "kid": key.kid });
        let mut token = b64url(header.to_string().as_bytes());
        token.push('.');
        token.push_str(&b64url(claims.to_string().as_bytes()));
        let signature = match &key.pair {
            Pair::Rsa(pair) => {
                let mut signature = vec![0u8; pair.public_modulus_len()];
                pair.sign(
                    &RSA_PKCS1_SHA256,
                    &aws_lc_rs::rand::SystemRandom::new(),
                    token.as_bytes(),
                    &mut signature,
                )
                .map_err(key_error)?;
                signature
            }
            Pair::Ec(pair) => pair
                .sign(&aws_lc_rs::rand::SystemRandom::new(), token.as_bytes())
                .map_err(key_error)?
                .as_ref()
                .to_vec(),
        };
        token.push('.');
        token.push_str(&b64url(&signature));
        Ok(token)
    }

    /// Verifies a compact JWS signed by one of our published keys and returns its header's
    /// `typ` and its claims. Expiry and audience are the caller's to check.
    pub fn verify(&self, token: &str) -> Result<(String, Value), JwtError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        let header_json: Value = b64url_decode(header)
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(JwtError::Malformed)?;
        let kid = header_json["kid"].as_str().ok_or(JwtError::UnknownKey)?;
        let key = self.verifying.get(kid).ok_or(JwtError::UnknownKey)?;
        if header_json["alg"].as_str() != Some(key.alg.name()) {
            return Err(JwtError::UnknownKey);
        }
        let signature = b64url_decode(signature).ok_or(JwtError::Malformed)?;
        let signed = &token[..header.len() + 1 + payload.len()];
        let verified = match key.alg {
            Alg::Rs256 => UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &key.public)
                .verify(signed.as_bytes(), &signature),
            Alg::Es256 => UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &key.public)
                .verify(signed.as_bytes(), &signature),
        };
        verified.map_err(|_| JwtError::BadSignature)?;
        let claims = b64url_decode(payload)
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(JwtError::Malformed)?;
        let typ = header_json["typ"].as_str().unwrap_or("JWT").to_string();
        Ok((typ, claims))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(now: u64) -> KeySet {
        let records = vec![
            generate(Alg::Rs256, now).expect("rsa"),
            generate(Alg::Es256, now).expect("ec"),
        ];
        KeySet::from_records(&records, now, 600).expect("load")
    }

    #[test]
    fn tokens_verify_with_both_algorithms_and_tampering_fails() {
        let keys = keys(1);
        for alg in [Alg::Rs256, Alg::Es256] {
            let token = keys.sign(alg, "JWT", &json!({"sub": "u1"})).expect("sign");
            let (typ, claims) = keys.verify(&token).expect("verify");
            assert_eq!((typ.as_str(), &claims["sub"]), ("JWT", &json!("u1")));
            let mut parts: Vec<&str> = token.split('.').collect();
            let forged = b64url(br#"{"sub":"admin"}"#);
            parts[1] = &forged;
            assert_eq!(keys.verify(&parts.join(".")), Err(JwtError::BadSignature));
        }
    }

    #[test]
    fn alg_none_and_alg_swaps_are_refused() {
        let keys = keys(1);
        let token = keys
            .sign(Alg::Rs256, "JWT", &json!({"sub": "u1"}))
            .expect("sign");
        let kid = keys.active[&Alg::Rs256].kid.clone();
        let payload = token.split('.').nth(1).expect("payload");
        for alg in ["none", "HS256", "ES256"] {
            let header = b64url(json!({"alg": alg, "kid": kid}).to_string().as_bytes());
            let forged = format!("{header}.{payload}.");
            assert_eq!(keys.verify(&forged), Err(JwtError::UnknownKey), "{alg}");
        }
        assert_eq!(keys.verify("a.b"), Err(JwtError::Malformed));
    }

    #[test]
    fn the_jwks_publishes_both_keys_with_their_parameters() {
        let keys = keys(1);
        let jwks = keys.jwks()["keys"].as_array().expect("keys").clone();
        assert_eq!(jwks.len(), 2);
        let rsa = jwks.iter().find(|k| k["kty"] == "RSA").expect("rsa");
        assert_eq!(rsa["e"], "AQAB");
        assert_eq!(
            b64url_decode(rsa["n"].as_str().expect("n"))
                .expect("n")
                .len(),
            256
        );
        let ec = jwks.iter().find(|k| k["kty"] == "EC").expect("ec");
        assert_eq!(
            b64url_decode(ec["x"].as_str().expect("x"))
                .expect("x")
                .len(),
            32
        );
    }

    #[test]
    fn retired_keys_stay_published_until_their_tokens_expire() {
        let mut old = generate(Alg::Rs256, 1).expect("rsa");
        old.retired = Some(100);
        let records = vec![
            old.clone(),
            generate(Alg::Rs256, 100).expect("rsa"),
            generate(Alg::Es256, 100).expect("ec"),
        ];
        let at = |now| KeySet::from_records(&records, now, 300).expect("load");
        assert!(at(399).verifying.contains_key(&old.kid));
        assert_ne!(
            at(399).active[&Alg::Rs256].kid,
            old.kid,
            "a retired key never signs"
        );
        assert!(!at(400).verifying.contains_key(&old.kid));
    }
}
