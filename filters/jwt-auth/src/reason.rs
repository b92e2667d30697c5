//! Why a request was not let through. Each reason has a stable name (the `reason` tag of the
//! `denied` metric and the error `code`), a status, and a message that never quotes the token.

use filter_core::{ApiError, ErrorKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No token where the rule's providers look for one.
    Missing,
    /// The token is longer than `max_token_bytes`.
    TooLarge,
    /// More tokens in one request than `auth::MAX_TOKENS`.
    TooManyTokens,
    /// Not three non-empty `.`-separated segments.
    Malformed,
    HeaderBase64,
    HeaderJson,
    PayloadBase64,
    PayloadJson,
    SignatureBase64,
    /// The header has no `alg`, or `kid` is not a string.
    AlgMissing,
    /// `none` or an algorithm this filter does not verify.
    AlgUnsupported,
    /// The header names a critical extension (`crit`) this filter does not understand.
    CritUnsupported,
    /// The token's `kid` is not in the provider's JWKS (after the allowed refetch).
    UnknownKid,
    /// No key of the JWKS fits the token's `alg` (key type, curve, key `alg` or HMAC key length).
    KeyMismatch,
    BadSignature,
    Expired,
    NotYetValid,
    /// `exp` is required (`require_exp`) and missing.
    ExpMissing,
    /// `exp` lies further from `iat`/`nbf` than `max_lifetime_s`.
    LifetimeTooLong,
    /// A registered claim has the wrong JSON type (e.g. a string `exp`).
    ClaimType(&'static str),
    /// `iss` is not a provider's issuer.
    WrongIssuer,
    /// 403: none of the token's audiences is allowed.
    AudienceNotAllowed,
    /// 403: the token lacks a scope the rule requires.
    InsufficientScope,
    /// 403: no rule matches the path and `unmatched` is `deny`.
    NoRule,
    /// 503: the provider's keys could not be fetched and none are cached.
    JwksUnavailable,
    /// 500: Envoy refused to strip a client-sent identity header or to set a verified one, so the
    /// request cannot carry a trustworthy identity (fail closed).
    HeaderEdit,
}

impl Reason {
    /// The metric tag and error `code`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::TooLarge => "too_large",
            Self::TooManyTokens => "too_many_tokens",
            Self::Malformed => "malformed",
            Self::HeaderBase64 => "header_base64",
            Self::HeaderJson => "header_json",
            Self::PayloadBase64 => "payload_base64",
            Self::PayloadJson => "payload_json",
            Self::SignatureBase64 => "signature_base64",
            Self::AlgMissing => "alg_missing",
            Self::AlgUnsupported => "alg_unsupported",
            Self::CritUnsupported => "crit_unsupported",
            Self::UnknownKid => "unknown_kid",
            Self::KeyMismatch => "key_mismatch",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::ExpMissing => "exp_missing",
            Self::LifetimeTooLong => "lifetime_too_long",
            Self::ClaimType(_) => "claim_type",
            Self::WrongIssuer => "wrong_issuer",
            Self::AudienceNotAllowed => "audience_not_allowed",
            Self::InsufficientScope => "insufficient_scope",
            Self::NoRule => "no_rule",
            Self::JwksUnavailable => "jwks_unavailable",
            Self::HeaderEdit => "identity_headers_failed",
        }
    }

    /// Every reason, for defining metrics up front.
    pub const ALL: [Self; 26] = [
        Self::Missing,
        Self::TooLarge,
        Self::TooManyTokens,
        Self::Malformed,
        Self::HeaderBase64,
        Self::HeaderJson,
        Self::PayloadBase64,
        Self::PayloadJson,
        Self::SignatureBase64,
        Self::AlgMissing,
        Self::AlgUnsupported,
        Self::CritUnsupported,
        Self::UnknownKid,
        Self::KeyMismatch,
        Self::BadSignature,
        Self::Expired,
        Self::NotYetValid,
        Self::ExpMissing,
        Self::LifetimeTooLong,
        Self::ClaimType("exp"),
        Self::WrongIssuer,
        Self::AudienceNotAllowed,
        Self::InsufficientScope,
        Self::NoRule,
        Self::JwksUnavailable,
        Self::HeaderEdit,
    ];

    pub fn message(self) -> String {
        match self {
            Self::Missing => "a bearer token is required".to_owned(),
            Self::TooLarge => "the token is larger than the gateway accepts".to_owned(),
            Self::TooManyTokens => "the request carries more tokens than the gateway accepts".to_owned(),
            Self::Malformed => "the token is not a compact JWS (three base64url segments)".to_owned(),
            Self::HeaderBase64 => "the token header is not valid base64url".to_owned(),
            Self::HeaderJson => "the token header is not a JSON object".to_owned(),
            Self::PayloadBase64 => "the token payload is not valid base64url".to_owned(),
            Self::PayloadJson => "the token payload is not a JSON object".to_owned(),
            Self::SignatureBase64 => "the token signature is not valid base64url".to_owned(),
            Self::AlgMissing => {
                "the token header lacks a string `alg` (or has a non-string `kid`)".to_owned()
            }
            Self::AlgUnsupported => "the token's algorithm is not accepted".to_owned(),
            Self::CritUnsupported => {
                "the token header names critical extensions that are not supported".to_owned()
            }
            Self::UnknownKid => "no key with the token's `kid` is known".to_owned(),
            Self::KeyMismatch => "no known key fits the token's algorithm".to_owned(),
            Self::BadSignature => "the token signature does not verify".to_owned(),
            Self::Expired => "the token has expired".to_owned(),
            Self::NotYetValid => "the token is not valid yet".to_owned(),
            Self::ExpMissing => "the token has no `exp` claim".to_owned(),
            Self::LifetimeTooLong => "the token's lifetime exceeds the allowed maximum".to_owned(),
            Self::ClaimType(c) => format!("the token's `{c}` claim has the wrong type"),
            Self::WrongIssuer => "the token's issuer is not accepted here".to_owned(),
            Self::AudienceNotAllowed => "the token's audience is not allowed".to_owned(),
            Self::InsufficientScope => "the token lacks a required scope".to_owned(),
            Self::NoRule => "no authentication rule covers this path".to_owned(),
            Self::JwksUnavailable => "the keys to verify the token are unavailable".to_owned(),
            Self::HeaderEdit => {
                "the gateway could not set the request's identity headers; it was not sent".to_owned()
            }
        }
    }

    pub const fn kind(self) -> ErrorKind {
        match self {
            Self::AudienceNotAllowed | Self::InsufficientScope | Self::NoRule => ErrorKind::PermissionDenied,
            Self::JwksUnavailable => ErrorKind::Unavailable,
            Self::HeaderEdit => ErrorKind::Internal,
            _ => ErrorKind::Authentication,
        }
    }

    pub fn to_api(self) -> ApiError {
        ApiError::new(self.kind(), self.name(), self.message())
    }

    /// The RFC 6750 `error` attribute of `WWW-Authenticate`, if this reason gets one.
    pub const fn bearer_error(self) -> Option<&'static str> {
        match self {
            Self::Missing | Self::NoRule | Self::JwksUnavailable | Self::HeaderEdit => None,
            Self::InsufficientScope => Some("insufficient_scope"),
            _ => Some("invalid_token"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    #[test]
    fn names_are_unique_and_statuses_follow_rfc_6750() {
        let mut names: Vec<_> = Reason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Reason::ALL.len());
        assert_eq!(Reason::Missing.to_api().status(), 401);
        assert_eq!(Reason::Missing.bearer_error(), None);
        assert_eq!(Reason::Expired.to_api().status(), 401);
        assert_eq!(Reason::Expired.bearer_error(), Some("invalid_token"));
        assert_eq!(Reason::AudienceNotAllowed.to_api().status(), 403);
        assert_eq!(
            Reason::InsufficientScope.bearer_error(),
            Some("insufficient_scope")
        );
        assert_eq!(Reason::JwksUnavailable.to_api().status(), 503);
        assert_eq!(Reason::HeaderEdit.to_api().status(), 500);
        assert_eq!(Reason::HeaderEdit.bearer_error(), None);
        assert!(Reason::ClaimType("exp").message().contains("`exp`"));
    }
}
