//! Header and filter-state names shared by the suite (see ARCHITECTURE.md, "Contracts").
//! Every header the suite sets starts with `x-tollgate-`; jwt-auth strips client-sent copies.

pub const PREFIX: &str = "x-tollgate-";
pub const SUBJECT: &str = "x-tollgate-subject";
pub const TENANT: &str = "x-tollgate-tenant";
pub const ROUTE: &str = "x-tollgate-route";
pub const CACHE: &str = "x-tollgate-cache";
pub const TEMPLATE: &str = "x-tollgate-template";
/// Response headers the token counter adds when `response_headers` is on.
pub const PROMPT_TOKENS: &str = "x-tollgate-prompt-tokens";
pub const BUDGET_REMAINING: &str = "x-tollgate-budget-remaining";

/// Values of [`CACHE`].
pub mod cache {
    pub const HIT: &str = "hit";
    pub const SEMANTIC_HIT: &str = "semantic-hit";
    pub const MISS: &str = "miss";
    pub const BYPASS: &str = "bypass";
}

/// Filter-state keys (read in access logs as `%FILTER_STATE(<key>:PLAIN)%`).
pub mod state {
    pub const MODEL: &str = "tollgate.model";
    pub const PROMPT_TOKENS: &str = "tollgate.prompt_tokens";
    pub const COMPLETION_TOKENS: &str = "tollgate.completion_tokens";
    /// Prompt tokens read from the provider's prompt cache (billed at the cached rate).
    pub const CACHE_READ_TOKENS: &str = "tollgate.cache_read_tokens";
    /// Prompt tokens written to the provider's prompt cache (Anthropic).
    pub const CACHE_WRITE_TOKENS: &str = "tollgate.cache_write_tokens";
    /// The gateway's own count of the prompt, made before the request left.
    pub const COUNTED_PROMPT_TOKENS: &str = "tollgate.counted_prompt_tokens";
    /// Cost of the request in USD from the configured price table.
    pub const COST_USD: &str = "tollgate.cost_usd";
    pub const ROUTE: &str = "tollgate.route";
    pub const CACHE: &str = "tollgate.cache";
    pub const MODERATION: &str = "tollgate.moderation";
    /// `id@version` of the prompt template a request was rendered from.
    pub const TEMPLATE: &str = "tollgate.template";
    /// The jwt-auth provider that verified the request's token.
    pub const AUTH_PROVIDER: &str = "tollgate.auth.provider";
    /// Prefix of the claims jwt-auth puts in filter state (`tollgate.jwt.sub`).
    pub const JWT_CLAIM_PREFIX: &str = "tollgate.jwt.";
}

/// True when `name` is one of the suite's own headers (case-insensitive, as HTTP header names are).
pub fn is_tollgate_header(name: &str) -> bool {
    name.as_bytes()
        .get(..PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(PREFIX.as_bytes()))
}

/// True for a header name a filter may be configured with: lower-case letters, digits, `-`, `_`
/// (what Envoy stores; no pseudo-headers, no characters that need quoting).
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn recognises_suite_headers_case_insensitively() {
        assert!(is_tollgate_header("x-tollgate-subject"));
        assert!(is_tollgate_header("X-Tollgate-Route"));
        assert!(!is_tollgate_header("x-tollgate"));
        assert!(!is_tollgate_header("authorization"));
    }

    #[test]
    fn configured_names_are_lower_case_tokens() {
        assert!(is_valid_name("x-tollgate-subject"));
        assert!(is_valid_name("x_api_key2"));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("X-Upper"));
        assert!(!is_valid_name(":path"));
        assert!(!is_valid_name("bad name"));
    }
}
