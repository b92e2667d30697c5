#![allow(clippy::unwrap_used, clippy::panic)]

use super::*;
use filter_core::config::parse;

fn load(json: &str) -> Result<Config, ConfigError> {
    parse::<RawConfig>(json.as_bytes()).and_then(compile)
}

#[test]
fn empty_config_counts_with_defaults() {
    let c = load("").unwrap();
    assert_eq!(c.max_body_bytes, 1 << 20);
    assert_eq!(c.encoding_for("gpt-4o-mini", None), Encoding::O200kBase);
    assert_eq!(c.encoding_for("gpt-4-0613", None), Encoding::Cl100kBase);
    assert_eq!(
        c.encoding_for("text-embedding-3-small", None),
        Encoding::Cl100kBase
    );
    assert_eq!(c.encoding_for("o3-mini", None), Encoding::O200kBase);
    assert_eq!(
        c.encoding_for("ft:gpt-3.5-turbo:acme::x", None),
        Encoding::Cl100kBase
    );
    assert_eq!(c.encoding_for("claude-sonnet-4-5", None), Encoding::O200kBase);
    assert!(c.budgets.is_none());
}

#[test]
fn exact_names_win_then_the_longest_prefix() {
    let c = load(
        r#"{"default_encoding":"cl100k_base","models":{
            "claude-*": {"max_context_tokens": 200000},
            "claude-3-haiku*": {"max_context_tokens": 100000, "encoding": "o200k_base"},
            "claude-3-haiku-20240307": {"max_context_tokens": 5}}}"#,
    )
    .unwrap();
    assert_eq!(
        c.model("claude-3-haiku-20240307").unwrap().max_context_tokens,
        Some(5)
    );
    let haiku = c.model("claude-3-haiku-x").unwrap();
    assert_eq!(haiku.max_context_tokens, Some(100_000));
    assert_eq!(
        c.encoding_for("claude-3-haiku-x", Some(haiku)),
        Encoding::O200kBase
    );
    let opus = c.model("claude-opus-4").unwrap();
    assert_eq!(opus.max_context_tokens, Some(200_000));
    assert_eq!(c.encoding_for("claude-opus-4", Some(opus)), Encoding::Cl100kBase);
    assert!(c.model("llama").is_none());
}

#[test]
fn bad_values_name_their_field() {
    let cases = [
        (
            r#"{"models":{"gpt-4o":{"max_context_tokens":0}}}"#,
            "models.gpt-4o.max_context_tokens",
        ),
        (r#"{"models":{"a*b*":{}}}"#, "models.a*b*"),
        (r#"{"models":{"*":{}}}"#, "models.*"),
        (
            r#"{"models":{"m":{"price":{"input":-1,"output":1}}}}"#,
            "models.m.price.input",
        ),
        (r#"{"models":{"m":{"encoding":"p50k"}}}"#, "models.m.encoding"),
        (r#"{"models":{"m":{"prce":{}}}}"#, "models.m.prce"),
        (r#"{"max_body_bytes":0}"#, "max_body_bytes"),
        (
            r#"{"tenant_metrics":{"max_tenants":0}}"#,
            "tenant_metrics.max_tenants",
        ),
        (
            r#"{"tenant_metrics":{"header":"Tenant"}}"#,
            "tenant_metrics.header",
        ),
        (r#"{"budgets":{"rules":[]}}"#, "budgets.rules"),
        (
            r#"{"budgets":{"rules":[{"name":"a b","window":"hour","tokens":1}]}}"#,
            "budgets.rules[0].name",
        ),
        (
            r#"{"budgets":{"rules":[{"name":"a","window":"week","tokens":1}]}}"#,
            "budgets.rules[0].window",
        ),
        (
            r#"{"budgets":{"rules":[{"name":"a","window":"hour","tokens":0}]}}"#,
            "budgets.rules[0].tokens",
        ),
        (
            r#"{"budgets":{"rules":[{"name":"a","window":"hour","tokens":1},{"name":"a","window":"day","tokens":1}]}}"#,
            "budgets.rules[1].name",
        ),
        (
            r#"{"budgets":{"rules":[{"name":"a","group":"gold","window":"hour","tokens":1}]}}"#,
            "budgets.rules[0].group",
        ),
        (
            r#"{"budgets":{"identity_header":"X-Sub","rules":[{"name":"a","window":"hour","tokens":1}]}}"#,
            "budgets.identity_header",
        ),
        (
            r#"{"budgets":{"slots":0,"rules":[{"name":"a","window":"hour","tokens":1}]}}"#,
            "budgets.slots",
        ),
        (
            r#"{"budgets":{"backend":"sidecar","sidecar":{"timeout_ms":0},"rules":[{"name":"a","window":"hour","tokens":1}]}}"#,
            "budgets.sidecar.timeout_ms",
        ),
    ];
    for (json, path) in cases {
        let err = load(json).unwrap_err();
        assert_eq!(err.path, path, "{json}: {err}");
    }
}

#[test]
fn budget_rules_compile_with_their_keys() {
    let c = load(
        r#"{"models":{"gpt-4o*":{"group":"premium"}},
            "budgets":{"rules":[{"name":"premium-hour","group":"premium","window":"hour","tokens":1000},
                                 {"name":"all-day","window":"day","tokens":5000}]}}"#,
    )
    .unwrap();
    let b = c.budgets.unwrap();
    assert_eq!(b.identity_header, "x-tollgate-subject");
    assert_eq!(b.missing_identity, MissingIdentity::Reject);
    assert_eq!(b.backend, Backend::SharedData);
    assert_eq!(b.failure_mode, FailureMode::Closed);
    assert_eq!(
        b.rules[0].key_prefix,
        "tollgate.token_counter.budget.premium-hour."
    );
    assert_eq!(b.rules[1].window.seconds(), 86_400);
}

#[test]
fn cost_uses_each_rate_once() {
    let p = Price {
        input: 2.5,
        output: 10.0,
        cached_input: Some(1.25),
        cache_write: None,
    };
    let u = filter_core::usage::TokenUsage {
        input_tokens: 1_000_000,
        cache_read_tokens: 2_000_000,
        cache_write_tokens: 400_000,
        output_tokens: 100_000,
    };
    let want = 2.5 + 2.5 + 1.0 + 1.0;
    assert!((p.cost(&u) - want).abs() < 1e-9, "{}", p.cost(&u));
}
