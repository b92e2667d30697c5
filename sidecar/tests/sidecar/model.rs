//! The model against sentence-transformers' own output, and the properties callers rely on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::{cosine, model_dir};
use sidecar::model::Embedder;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

fn embedder() -> &'static Embedder {
    static E: OnceLock<Embedder> = OnceLock::new();
    E.get_or_init(|| Embedder::load(&model_dir(), None, 2).unwrap())
}

fn embed(text: &str) -> Vec<f32> {
    embedder().embed(&[text]).unwrap().remove(0).vector
}

#[derive(serde::Deserialize)]
struct Reference {
    max_seq_length: usize,
    items: Vec<Item>,
}

#[derive(serde::Deserialize)]
struct Item {
    text: String,
    embedding: Vec<f32>,
}

/// `tests/data/all-MiniLM-L6-v2.reference.json` was produced once with sentence-transformers (see its
/// `produced_by`): `SentenceTransformer(model_dir).encode(texts, normalize_embeddings=True)`.
fn reference() -> Reference {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/all-MiniLM-L6-v2.reference.json"
    );
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn embeddings_match_sentence_transformers() {
    let r = reference();
    assert_eq!(embedder().max_tokens, r.max_seq_length);
    assert!(r.items.len() >= 10);
    for item in &r.items {
        let v = embed(&item.text);
        assert_eq!(v.len(), item.embedding.len());
        let c = cosine(&v, &item.embedding);
        assert!(c >= 0.999, "cosine {c} for {:?}", item.text);
    }
}

#[test]
fn batched_reference_texts_match_too() {
    // Padding to the longest text of a batch must not change any vector.
    let r = reference();
    let texts: Vec<&str> = r.items.iter().map(|i| i.text.as_str()).collect();
    let out = embedder().embed(&texts).unwrap();
    for (e, item) in out.iter().zip(&r.items) {
        let c = cosine(&e.vector, &item.embedding);
        assert!(c >= 0.999, "cosine {c} for {:?} in a batch", item.text);
        let single = embed(&item.text);
        let max_diff = single
            .iter()
            .zip(&e.vector)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(
            max_diff < 1e-4,
            "batch differs from single by {max_diff} for {:?}",
            item.text
        );
    }
}

#[test]
fn splitting_the_layers_over_threads_changes_no_vector() {
    // The encoder splits each layer into parts (heads and intermediate columns) that idle threads
    // help with; partial sums only reorder additions, so every split, helped or not, gives the
    // same vectors.
    let r = reference();
    let texts: Vec<&str> = r.items.iter().map(|i| i.text.as_str()).collect();
    let two = embedder().embed(&texts).unwrap();
    for (parts, helpers) in [(1, 0), (2, 1), (3, 2), (12, 0), (40, 3)] {
        let other = Embedder::load(&model_dir(), None, parts).unwrap();
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            for _ in 0..helpers {
                scope.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        let invitation = other.invitations().recv_timeout(Duration::from_millis(5));
                        if let Some(team) = invitation.ok().and_then(|w| w.upgrade()) {
                            team.help(|| false);
                        }
                    }
                });
            }
            for _ in 0..3 {
                for (a, b) in other.embed(&texts).unwrap().iter().zip(&two) {
                    let max_diff = a
                        .vector
                        .iter()
                        .zip(&b.vector)
                        .map(|(x, y)| (x - y).abs())
                        .fold(0.0, f32::max);
                    assert!(
                        max_diff < 1e-5,
                        "{parts} parts, {helpers} helpers: differs by {max_diff}"
                    );
                }
            }
            stop.store(true, Ordering::Relaxed);
        });
    }
}

#[test]
fn vectors_are_unit_length_and_finite() {
    for t in ["a", "Hello world", "東京の天気はどうですか？", "🎉🔥😀"] {
        let v = embed(t);
        assert_eq!(v.len(), 384);
        assert!(v.iter().all(|x| x.is_finite()));
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm} for {t:?}");
    }
}

#[test]
fn paraphrases_score_above_unrelated_pairs() {
    let pairs = [
        (
            "How do I reset my account password?",
            "What are the steps to change my login password?",
        ),
        (
            "The cat sat quietly on the warm windowsill.",
            "A kitten was resting on the sunny window ledge.",
        ),
        (
            "A man is playing a guitar on stage.",
            "Someone performs music with a guitar in front of an audience.",
        ),
    ];
    let unrelated = [
        (
            "How do I reset my account password?",
            "Photosynthesis converts light energy into chemical energy.",
        ),
        (
            "The cat sat quietly on the warm windowsill.",
            "The stock market fell after the rate announcement.",
        ),
        (
            "A man is playing a guitar on stage.",
            "fn main() { println!(\"hello\"); }",
        ),
    ];
    let lowest_paraphrase = pairs
        .iter()
        .map(|(a, b)| cosine(&embed(a), &embed(b)))
        .fold(f32::MAX, f32::min);
    let highest_unrelated = unrelated
        .iter()
        .map(|(a, b)| cosine(&embed(a), &embed(b)))
        .fold(f32::MIN, f32::max);
    assert!(
        lowest_paraphrase > 0.5,
        "paraphrase similarity {lowest_paraphrase}"
    );
    assert!(
        lowest_paraphrase > highest_unrelated + 0.3,
        "paraphrase {lowest_paraphrase} vs unrelated {highest_unrelated}"
    );
}

#[test]
fn long_input_is_truncated_and_flagged() {
    let long = "distributed systems tolerate partial failure ".repeat(100);
    let out = embedder().embed(&[&long, "short text"]).unwrap();
    assert!(out[0].truncated);
    assert_eq!(out[0].tokens as usize, embedder().max_tokens);
    assert!(!out[1].truncated);
    assert_eq!(out[1].tokens, 4, "[CLS] short text [SEP]");
    // The truncated text embeds as its first window does.
    let words: Vec<&str> = long.split_whitespace().collect();
    let head = words[..embedder().max_tokens - 2].join(" ");
    assert!(cosine(&out[0].vector, &embed(&head)) > 0.999);
}

#[test]
fn max_tokens_override_is_capped_by_the_model() {
    let e = Embedder::load(&model_dir(), Some(100_000), 1).unwrap();
    assert_eq!(e.max_tokens, 512, "position embeddings of all-MiniLM-L6-v2");
    let short = Embedder::load(&model_dir(), Some(16), 3).unwrap();
    let out = short.embed(&["one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"]).unwrap();
    assert!(out[0].truncated);
    assert_eq!(out[0].tokens, 16);
}

#[test]
fn missing_model_dir_names_the_file() {
    let Err(e) = Embedder::load(std::path::Path::new("/nonexistent/model"), None, 1) else {
        panic!("loaded a model from nowhere");
    };
    assert!(e.to_string().contains("/nonexistent/model/config.json"), "{e}");
}
