//! A compact JWS (RFC 7515 §7.1) split and decoded: `header.payload.signature`, each strict
//! base64url without padding, header and payload JSON objects. Nothing here checks a signature or
//! a claim; the error says which part failed.

use crate::jwks::Alg;
use crate::reason::Reason;
use base64ct::{Base64UrlUnpadded, Encoding};
use serde_json::{Map, Value};

#[derive(Debug)]
pub struct Token<'a> {
    pub alg: Alg,
    pub kid: Option<String>,
    pub claims: Map<String, Value>,
    /// `header.payload`, the bytes the signature covers.
    pub signing_input: &'a [u8],
    pub signature: Vec<u8>,
}

/// Splits and decodes `token`. `max_bytes` bounds the work a client can ask for.
pub fn parse(token: &str, max_bytes: usize) -> Result<Token<'_>, Reason> {
    if token.len() > max_bytes {
        return Err(Reason::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(Reason::Malformed);
    };
    if h.is_empty() || p.is_empty() || s.is_empty() {
        return Err(Reason::Malformed);
    }
    let header = decode_object(h, Reason::HeaderBase64, Reason::HeaderJson)?;
    let alg = match header.get("alg") {
        Some(Value::String(a)) => Alg::from_name(a).ok_or(Reason::AlgUnsupported)?,
        _ => return Err(Reason::AlgMissing),
    };
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(Reason::AlgMissing),
    };
    // RFC 7515 §4.1.11: a recipient must reject extensions it does not understand (this includes
    // `b64: false`, RFC 7797, which changes what the signature covers).
    if header.contains_key("crit") || header.contains_key("b64") {
        return Err(Reason::CritUnsupported);
    }
    let claims = decode_object(p, Reason::PayloadBase64, Reason::PayloadJson)?;
    let signature = Base64UrlUnpadded::decode_vec(s).map_err(|_| Reason::SignatureBase64)?;
    let signing_input = token
        .as_bytes()
        .get(..h.len() + 1 + p.len())
        .ok_or(Reason::Malformed)?;
    Ok(Token {
        alg,
        kid,
        claims,
        signing_input,
        signature,
    })
}

fn decode_object(segment: &str, b64: Reason, json: Reason) -> Result<Map<String, Value>, Reason> {
    let bytes = Base64UrlUnpadded::decode_vec(segment).map_err(|_| b64)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(json),
    }
}
