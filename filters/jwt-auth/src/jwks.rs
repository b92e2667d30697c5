//! JSON Web Keys (RFC 7517/7518/8037) parsed once into ready-to-use verifying keys, and signature
//! checks with them. Key construction (RSA Montgomery parameters, curve point decompression) is the
//! expensive part, so it happens when a JWKS is loaded, never per request.
//!
//! An algorithm only ever meets a key of its own family: RS*/PS* ↔ `RSA`, ES256 ↔ `EC` P-256,
//! ES384 ↔ `EC` P-384, EdDSA ↔ `OKP` Ed25519, HS* ↔ `oct` (at least as long as the hash). There is
//! no path from an HMAC algorithm to a public key's bytes, so HS/RS confusion cannot happen.

use crate::native;
use crate::reason::Reason;
use base64ct::{Base64UrlUnpadded, Encoding};
use hmac::{EagerHash, Hmac, KeyInit, Mac};
use rsa::BoxedUint;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256, Sha384, Sha512};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
    HS256,
    HS384,
    HS512,
}

impl Alg {
    /// The `alg` header value; `none` and anything unknown are `None`.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "RS256" => Self::RS256,
            "RS384" => Self::RS384,
            "RS512" => Self::RS512,
            "PS256" => Self::PS256,
            "PS384" => Self::PS384,
            "PS512" => Self::PS512,
            "ES256" => Self::ES256,
            "ES384" => Self::ES384,
            "EdDSA" => Self::EdDSA,
            "HS256" => Self::HS256,
            "HS384" => Self::HS384,
            "HS512" => Self::HS512,
            _ => return None,
        })
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::RS384 => "RS384",
            Self::RS512 => "RS512",
            Self::PS256 => "PS256",
            Self::PS384 => "PS384",
            Self::PS512 => "PS512",
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
            Self::EdDSA => "EdDSA",
            Self::HS256 => "HS256",
            Self::HS384 => "HS384",
            Self::HS512 => "HS512",
        }
    }
}

/// A verifying key, built once.
pub enum Material {
    Rsa(Box<rsa::PublicKey>),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
    Hmac(Vec<u8>),
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print an HMAC secret.
        f.write_str(match self {
            Self::Rsa(_) => "RSA",
            Self::P256(_) => "EC P-256",
            Self::P384(_) => "EC P-384",
            Self::Ed25519(_) => "OKP Ed25519",
            Self::Hmac(_) => "oct",
        })
    }
}

#[derive(Debug)]
pub struct Jwk {
    pub kid: Option<String>,
    /// The key's own `alg`, when the JWK names one: the token must use exactly that.
    pub alg: Option<Alg>,
    pub material: Material,
    /// DER SubjectPublicKeyInfo of an RSA or EC key, for Envoy's native `verify_signature`.
    pub spki: Option<Vec<u8>>,
}

/// Shortest HMAC secret accepted (RFC 7518 §3.2: at least the hash size; HS256 needs 32 bytes).
pub const MIN_HMAC_KEY_BYTES: usize = 32;
/// RSA moduli accepted, in bits.
pub const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=8192;

impl Jwk {
    /// Parses one JWK object. `Ok(None)` for a key that is not for signatures (`use` ≠ `sig`).
    /// Errors name the member: `("n", "is not base64url")`.
    pub fn parse(obj: &Map<String, Value>) -> Result<Option<Self>, (&'static str, String)> {
        if let Some(u) = obj.get("use") {
            match u.as_str() {
                Some("sig") => {}
                Some(_) => return Ok(None),
                None => return Err(("use", "must be a string".to_owned())),
            }
        }
        let kid = match obj.get("kid") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(("kid", "must be a string".to_owned())),
        };
        let alg = match obj.get("alg") {
            None => None,
            Some(Value::String(s)) => {
                Some(Alg::from_name(s).ok_or(("alg", format!("`{s}` is not a supported algorithm")))?)
            }
            Some(_) => return Err(("alg", "must be a string".to_owned())),
        };
        let kty = obj
            .get("kty")
            .and_then(Value::as_str)
            .ok_or(("kty", "is required and must be a string".to_owned()))?;
        let mut spki = None;
        let material = match kty {
            "RSA" => {
                let n_bytes = member(obj, "n")?;
                let e_bytes = member(obj, "e")?;
                let n = uint(&n_bytes).map_err(|m| ("n", m))?;
                let e = uint(&e_bytes).map_err(|m| ("e", m))?;
                let key = rsa::PublicKey::new_with_size_limits(n, e, RSA_BITS)
                    .map_err(|err| ("n", format!("not a usable RSA key: {err}")))?;
                spki = Some(native::rsa_spki(&n_bytes, &e_bytes));
                Material::Rsa(Box::new(key))
            }
            "EC" => {
                let crv = obj.get("crv").and_then(Value::as_str).unwrap_or("");
                let x = member(obj, "x")?;
                let y = member(obj, "y")?;
                let size = match crv {
                    "P-256" => 32,
                    "P-384" => 48,
                    _ => return Err(("crv", format!("`{crv}` is not supported (P-256, P-384)"))),
                };
                if x.len() != size || y.len() != size {
                    return Err(("x", format!("x and y must be {size} bytes for {crv}")));
                }
                let mut sec1 = Vec::with_capacity(1 + 2 * size);
                sec1.push(0x04);
                sec1.extend_from_slice(&x);
                sec1.extend_from_slice(&y);
                let bad = |_| ("x", format!("not a point on {crv}"));
                spki = Some(native::ec_spki(size == 48, &sec1));
                if size == 32 {
                    Material::P256(p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).map_err(bad)?)
                } else {
                    Material::P384(p384::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).map_err(bad)?)
                }
            }
            "OKP" => {
                let crv = obj.get("crv").and_then(Value::as_str).unwrap_or("");
                if crv != "Ed25519" {
                    return Err(("crv", format!("`{crv}` is not supported (Ed25519)")));
                }
                let x: [u8; 32] = member(obj, "x")?
                    .try_into()
                    .map_err(|_| ("x", "must be 32 bytes for Ed25519".to_owned()))?;
                let key = ed25519_dalek::VerifyingKey::from_bytes(&x)
                    .map_err(|_| ("x", "not an Ed25519 public key".to_owned()))?;
                Material::Ed25519(key)
            }
            "oct" => {
                let k = member(obj, "k")?;
                if k.len() < MIN_HMAC_KEY_BYTES {
                    return Err((
                        "k",
                        format!(
                            "{} bytes is shorter than the minimum of {MIN_HMAC_KEY_BYTES}",
                            k.len()
                        ),
                    ));
                }
                Material::Hmac(k)
            }
            other => return Err(("kty", format!("`{other}` is not supported (RSA, EC, OKP, oct)"))),
        };
        let jwk = Self {
            kid,
            alg,
            material,
            spki,
        };
        if let Some(a) = alg
            && !jwk.fits(a)
        {
            return Err((
                "alg",
                format!("`{}` does not fit a {:?} key", a.name(), jwk.material),
            ));
        }
        Ok(Some(jwk))
    }

    /// Whether a token signed with `alg` may be checked with this key.
    pub fn fits(&self, alg: Alg) -> bool {
        if self.alg.is_some_and(|a| a != alg) {
            return false;
        }
        match (&self.material, alg) {
            (Material::Rsa(_), Alg::RS256 | Alg::RS384 | Alg::RS512)
            | (Material::Rsa(_), Alg::PS256 | Alg::PS384 | Alg::PS512)
            | (Material::P256(_), Alg::ES256)
            | (Material::P384(_), Alg::ES384)
            | (Material::Ed25519(_), Alg::EdDSA) => true,
            (Material::Hmac(k), Alg::HS256) => k.len() >= 32,
            (Material::Hmac(k), Alg::HS384) => k.len() >= 48,
            (Material::Hmac(k), Alg::HS512) => k.len() >= 64,
            _ => false,
        }
    }

    /// Checks `signature` over `input`. The caller made sure the key [`fits`](Self::fits) `alg`.
    /// RS* and ES* go to `host` (Envoy's BoringSSL) first; where it cannot answer, and for every
    /// other algorithm, RustCrypto verifies.
    pub fn verify(
        &self,
        alg: Alg,
        input: &[u8],
        signature: &[u8],
        host: &mut native::Host<'_>,
    ) -> Result<(), Reason> {
        use p256::ecdsa::signature::Verifier;
        if let Some(spki) = &self.spki {
            let ask: Option<(&str, std::borrow::Cow<'_, [u8]>)> = match alg {
                Alg::RS256 => Some(("sha256", signature.into())),
                Alg::RS384 => Some(("sha384", signature.into())),
                Alg::RS512 => Some(("sha512", signature.into())),
                Alg::ES256 => native::ecdsa_der(signature, 32).map(|d| ("sha256", d.into())),
                Alg::ES384 => native::ecdsa_der(signature, 48).map(|d| ("sha384", d.into())),
                _ => None,
            };
            if let Some((hash, sig)) = ask
                && let Some(valid) = host(hash, spki, &sig, input)
            {
                return if valid { Ok(()) } else { Err(Reason::BadSignature) };
            }
        }
        let ok = match (&self.material, alg) {
            (Material::Rsa(key), _) => {
                let r = match alg {
                    Alg::RS256 => key.verify(
                        rsa::Pkcs1v15Sign::new::<Sha256>(),
                        &Sha256::digest(input),
                        signature,
                    ),
                    Alg::RS384 => key.verify(
                        rsa::Pkcs1v15Sign::new::<Sha384>(),
                        &Sha384::digest(input),
                        signature,
                    ),
                    Alg::RS512 => key.verify(
                        rsa::Pkcs1v15Sign::new::<Sha512>(),
                        &Sha512::digest(input),
                        signature,
                    ),
                    Alg::PS256 => key.verify(rsa::Pss::<Sha256>::new(), &Sha256::digest(input), signature),
                    Alg::PS384 => key.verify(rsa::Pss::<Sha384>::new(), &Sha384::digest(input), signature),
                    Alg::PS512 => key.verify(rsa::Pss::<Sha512>::new(), &Sha512::digest(input), signature),
                    _ => return Err(Reason::KeyMismatch),
                };
                r.is_ok()
            }
            (Material::P256(key), Alg::ES256) => {
                p256::ecdsa::Signature::from_slice(signature).is_ok_and(|s| key.verify(input, &s).is_ok())
            }
            (Material::P384(key), Alg::ES384) => {
                p384::ecdsa::Signature::from_slice(signature).is_ok_and(|s| key.verify(input, &s).is_ok())
            }
            (Material::Ed25519(key), Alg::EdDSA) => <[u8; 64]>::try_from(signature).is_ok_and(|s| {
                key.verify_strict(input, &ed25519_dalek::Signature::from_bytes(&s))
                    .is_ok()
            }),
            (Material::Hmac(k), Alg::HS256) => hmac_ok::<Sha256>(k, input, signature),
            (Material::Hmac(k), Alg::HS384) => hmac_ok::<Sha384>(k, input, signature),
            (Material::Hmac(k), Alg::HS512) => hmac_ok::<Sha512>(k, input, signature),
            _ => return Err(Reason::KeyMismatch),
        };
        if ok { Ok(()) } else { Err(Reason::BadSignature) }
    }
}

fn hmac_ok<D: EagerHash>(key: &[u8], input: &[u8], signature: &[u8]) -> bool
where
    Hmac<D>: KeyInit + Mac,
{
    match <Hmac<D> as KeyInit>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(input);
            // Constant-time comparison; a wrong length is simply a mismatch.
            mac.verify_slice(signature).is_ok()
        }
        Err(_) => false,
    }
}

/// A base64url member of a JWK (trailing `=` padding tolerated, as some issuers pad).
fn member(obj: &Map<String, Value>, name: &'static str) -> Result<Vec<u8>, (&'static str, String)> {
    let s = obj
        .get(name)
        .and_then(Value::as_str)
        .ok_or((name, "is required and must be a string".to_owned()))?;
    let bytes = Base64UrlUnpadded::decode_vec(s.trim_end_matches('='))
        .map_err(|_| (name, "is not base64url".to_owned()))?;
    if bytes.is_empty() {
        return Err((name, "is empty".to_owned()));
    }
    Ok(bytes)
}

fn uint(bytes: &[u8]) -> Result<BoxedUint, String> {
    let bits = u32::try_from(bytes.len() * 8).map_err(|_| "is too long".to_owned())?;
    BoxedUint::from_be_slice(bytes, bits).map_err(|_| "is not an unsigned integer".to_owned())
}

/// A parsed key set.
#[derive(Debug, Default)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// A JWKS that could not be used: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksError {
    /// `keys[2].n`, or `.` for the document.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for JwksError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`: {}", self.path, self.message)
    }
}

impl Jwks {
    /// Parses a JWKS document (`{"keys": [...]}`) or a single JWK object.
    ///
    /// `strict` (keys written in the filter's config): any bad key is an error. Otherwise (keys
    /// fetched from an issuer): a bad key is skipped and reported in the second value, so one key of
    /// an unsupported type does not take the others down; a set with no usable key is an error.
    pub fn parse(bytes: &[u8], strict: bool) -> Result<(Self, Vec<JwksError>), JwksError> {
        let doc: Value = serde_json::from_slice(bytes).map_err(|e| JwksError {
            path: ".".to_owned(),
            message: format!("not JSON: {}", filter_core::error::redact_quoted(&e.to_string())),
        })?;
        Self::from_value(&doc, strict)
    }

    pub fn from_value(doc: &Value, strict: bool) -> Result<(Self, Vec<JwksError>), JwksError> {
        let doc_err = |m: &str| JwksError {
            path: ".".to_owned(),
            message: m.to_owned(),
        };
        let obj = doc.as_object().ok_or_else(|| doc_err("must be a JSON object"))?;
        let single;
        let list: &[Value] = match obj.get("keys") {
            Some(Value::Array(keys)) => keys,
            Some(_) => return Err(doc_err("`keys` must be an array")),
            None if obj.contains_key("kty") => {
                single = [doc.clone()];
                &single
            }
            None => return Err(doc_err("has no `keys` array")),
        };
        let mut keys = Vec::with_capacity(list.len());
        let mut skipped = Vec::new();
        for (i, k) in list.iter().enumerate() {
            let parsed = match k.as_object() {
                Some(o) => Jwk::parse(o).map_err(|(member, message)| JwksError {
                    path: format!("keys[{i}].{member}"),
                    message,
                }),
                None => Err(JwksError {
                    path: format!("keys[{i}]"),
                    message: "must be an object".to_owned(),
                }),
            };
            match parsed {
                Ok(Some(key)) => keys.push(key),
                Ok(None) => {}
                Err(e) if strict => return Err(e),
                Err(e) => skipped.push(e),
            }
        }
        if keys.is_empty() {
            return Err(match skipped.into_iter().next() {
                Some(first) => JwksError {
                    path: first.path,
                    message: format!("no usable signing key ({})", first.message),
                },
                None => doc_err("has no signing key"),
            });
        }
        Ok((Self { keys }, skipped))
    }

    /// Whether any key carries `kid`.
    /// Whether a key may carry `kid`: one with that `kid`, or one without any (as jwt_verify_lib,
    /// a key without `kid` is tried for every token).
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys
            .iter()
            .any(|k| k.kid.as_deref().is_none_or(|k| k == kid))
    }

    /// Verifies with the keys that may check this token: those with its `kid` or without any `kid`
    /// (all keys when the token names none) that fit `alg`. Unknown `kid` → [`Reason::UnknownKid`]; keys that exist
    /// but do not fit → [`Reason::KeyMismatch`].
    pub fn verify(
        &self,
        alg: Alg,
        kid: Option<&str>,
        input: &[u8],
        signature: &[u8],
        host: &mut native::Host<'_>,
    ) -> Result<(), Reason> {
        let mut named = false;
        let mut tried = false;
        for key in &self.keys {
            if let (Some(want), Some(has)) = (kid, key.kid.as_deref())
                && want != has
            {
                continue;
            }
            named = true;
            if !key.fits(alg) {
                continue;
            }
            tried = true;
            if key.verify(alg, input, signature, host).is_ok() {
                return Ok(());
            }
        }
        Err(match (named, tried) {
            (false, _) => Reason::UnknownKid,
            (true, false) => Reason::KeyMismatch,
            (true, true) => Reason::BadSignature,
        })
    }
}
