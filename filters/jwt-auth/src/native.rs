//! Envoy's `verify_signature` foreign function: BoringSSL, native, outside the wasm VM. It takes a
//! serialized `envoy.source.extensions.common.wasm.VerifySignatureArguments` (hash name, DER
//! SubjectPublicKeyInfo, signature, text) and answers a `VerifySignatureResult {bool result = 1;
//! string error = 2}`. It always verifies RSA with PKCS#1 v1.5 and ECDSA with DER signatures, so
//! it serves RS256/384/512 and ES256/384 (after the JWS `r || s` is rewritten as DER); PS*, EdDSA
//! and HMAC stay in Rust. This module only builds and reads bytes; the call is in `filter.rs`.

/// The function's registered name.
pub const FUNCTION: &str = "verify_signature";

/// Asks the host to verify: `(hash, spki, signature, text)` → `Some(valid)`, or `None` when the
/// host cannot answer (no such function, key not accepted) and Rust must verify.
pub type Host<'a> = dyn FnMut(&str, &[u8], &[u8], &[u8]) -> Option<bool> + 'a;

fn der_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    der_len(&mut out, content.len());
    out.extend_from_slice(content);
    out
}

/// A DER INTEGER of the unsigned big-endian `bytes`.
fn der_uint(bytes: &[u8]) -> Vec<u8> {
    let trimmed = match bytes.iter().position(|b| *b != 0) {
        Some(i) => &bytes[i..],
        None => &[0u8][..],
    };
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_some_and(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(trimmed);
    der(0x02, &content)
}

fn bit_string(content: &[u8]) -> Vec<u8> {
    let mut c = Vec::with_capacity(content.len() + 1);
    c.push(0);
    c.extend_from_slice(content);
    der(0x03, &c)
}

// OIDs, DER-encoded with their tag.
const RSA_ENCRYPTION: &[u8] = &[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const PRIME256V1: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const SECP384R1: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

/// SubjectPublicKeyInfo of an RSA key (RFC 8017 A.1.1 inside RFC 5280 4.1.2.7).
pub fn rsa_spki(n: &[u8], e: &[u8]) -> Vec<u8> {
    let mut alg = RSA_ENCRYPTION.to_vec();
    alg.extend_from_slice(&[0x05, 0x00]);
    let mut key = der_uint(n);
    key.extend_from_slice(&der_uint(e));
    let mut spki = der(0x30, &alg);
    spki.extend_from_slice(&bit_string(&der(0x30, &key)));
    der(0x30, &spki)
}

/// SubjectPublicKeyInfo of an EC key given its uncompressed point `04 || x || y` (RFC 5480).
pub fn ec_spki(p384: bool, point: &[u8]) -> Vec<u8> {
    let mut alg = EC_PUBLIC_KEY.to_vec();
    alg.extend_from_slice(if p384 { SECP384R1 } else { PRIME256V1 });
    let mut spki = der(0x30, &alg);
    spki.extend_from_slice(&bit_string(point));
    der(0x30, &spki)
}

/// A JWS ECDSA signature (`r || s`, each `size` bytes) as a DER `ECDSA-Sig-Value`; `None` for the
/// wrong length.
pub fn ecdsa_der(signature: &[u8], size: usize) -> Option<Vec<u8>> {
    if signature.len() != 2 * size {
        return None;
    }
    let (r, s) = signature.split_at(size);
    let mut seq = der_uint(r);
    seq.extend_from_slice(&der_uint(s));
    Some(der(0x30, &seq))
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field(out: &mut Vec<u8>, number: u8, bytes: &[u8]) {
    out.push((number << 3) | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// The serialized `VerifySignatureArguments`.
pub fn arguments(hash: &str, spki: &[u8], signature: &[u8], text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hash.len() + spki.len() + signature.len() + text.len() + 16);
    field(&mut out, 1, hash.as_bytes());
    field(&mut out, 2, spki);
    field(&mut out, 3, signature);
    field(&mut out, 4, text);
    out
}

/// `result` of a serialized `VerifySignatureResult` (absent means false, as in proto3); `None` when
/// the bytes are not that message.
pub fn result(bytes: &[u8]) -> Option<bool> {
    let mut ok = false;
    let mut i = 0;
    while i < bytes.len() {
        let key = *bytes.get(i)?;
        i += 1;
        let mut read_varint = || -> Option<u64> {
            let mut v = 0u64;
            for shift in (0..64).step_by(7) {
                let b = *bytes.get(i)?;
                i += 1;
                v |= u64::from(b & 0x7f) << shift;
                if b & 0x80 == 0 {
                    return Some(v);
                }
            }
            None
        };
        match (key >> 3, key & 7) {
            (1, 0) => ok = read_varint()? != 0,
            (_, 0) => {
                read_varint()?;
            }
            (_, 2) => {
                let len = usize::try_from(read_varint()?).ok()?;
                i = i.checked_add(len).filter(|end| *end <= bytes.len())?;
            }
            _ => return None,
        }
    }
    Some(ok)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    #[test]
    fn der_integers_are_minimal_and_unsigned() {
        assert_eq!(der_uint(&[0, 0, 1]), [0x02, 0x01, 0x01]);
        assert_eq!(der_uint(&[0x80]), [0x02, 0x02, 0x00, 0x80]);
        assert_eq!(der_uint(&[0, 0]), [0x02, 0x01, 0x00]);
        let long = der(0x04, &[7u8; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
    }

    #[test]
    fn rsa_spki_has_the_rfc_layout() {
        // The exponent 65537 and a 2048-bit modulus with the top bit set.
        let mut n = vec![0xc5u8; 256];
        n[255] = 0x01;
        let spki = rsa_spki(&n, &[1, 0, 1]);
        // SEQUENCE(len 0x0122) SEQUENCE(13) OID rsaEncryption NULL BIT STRING(0x010f) 00 SEQUENCE(0x010a)
        assert_eq!(&spki[..4], &[0x30, 0x82, 0x01, 0x22]);
        assert_eq!(&spki[4..6], &[0x30, 0x0d]);
        assert_eq!(&spki[6..17], RSA_ENCRYPTION);
        assert_eq!(&spki[17..19], &[0x05, 0x00]);
        assert_eq!(&spki[19..24], &[0x03, 0x82, 0x01, 0x0f, 0x00]);
        assert_eq!(&spki[24..28], &[0x30, 0x82, 0x01, 0x0a]);
        assert_eq!(&spki[28..32], &[0x02, 0x82, 0x01, 0x01]);
        assert_eq!(spki.len(), 0x126);
        assert_eq!(&spki[spki.len() - 5..], &[0x02, 0x03, 0x01, 0x00, 0x01]);
    }

    #[test]
    fn ec_spki_and_signatures() {
        let mut point = vec![4u8];
        point.extend_from_slice(&[9u8; 64]);
        let spki = ec_spki(false, &point);
        assert_eq!(spki.len(), 91, "P-256 SPKI is 91 bytes");
        assert_eq!(&spki[..2], &[0x30, 0x59]);
        assert!(spki.ends_with(&point));
        let mut sig = vec![0u8; 64];
        sig[31] = 5;
        sig[32] = 0x90;
        let d = ecdsa_der(&sig, 32).unwrap();
        assert_eq!(&d[..5], &[0x30, 0x26, 0x02, 0x01, 0x05]);
        assert_eq!(&d[5..8], &[0x02, 0x21, 0x00]);
        assert!(ecdsa_der(&sig[..63], 32).is_none());
        assert_eq!(
            ecdsa_der(&[0u8; 64], 32).unwrap(),
            [0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00]
        );
    }

    #[test]
    fn protobuf_arguments_and_results() {
        let a = arguments("sha256", &[1, 2], &[3], b"hi");
        assert_eq!(
            a,
            [
                0x0a, 6, b's', b'h', b'a', b'2', b'5', b'6', 0x12, 2, 1, 2, 0x1a, 1, 3, 0x22, 2, b'h', b'i'
            ]
        );
        assert_eq!(result(&[0x08, 0x01]), Some(true));
        assert_eq!(result(&[]), Some(false));
        assert_eq!(result(&[0x12, 0x03, b'b', b'a', b'd']), Some(false));
        assert_eq!(result(&[0x08, 0x01, 0x12, 0x00]), Some(true));
        assert_eq!(result(&[0x12, 0x09, b'x']), None, "truncated");
        assert_eq!(result(&[0x0d, 0, 0, 0, 0]), None, "unexpected wire type");
    }
}
