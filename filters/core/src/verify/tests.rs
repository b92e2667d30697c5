use super::*;

fn contrast(a: &str, b: &str) -> Option<Contrast> {
    compare(a, b).contrast()
}

#[test]
fn numbers_must_agree_in_order() {
    let c = |a, b| contrast(a, b);
    assert_eq!(
        c("what is 17 times 24", "what is 17 times 23"),
        Some(Contrast::Numbers)
    );
    assert_eq!(
        c("transfer $5000 to savings", "transfer $500 to savings"),
        Some(Contrast::Numbers)
    );
    assert_eq!(
        c(
            "paracetamol dose for a 40 kg child",
            "paracetamol dose for a 20 kg child"
        ),
        Some(Contrast::Numbers)
    );
    assert_eq!(
        c("summarise ticket 4522", "summarise ticket 4521"),
        Some(Contrast::Numbers)
    );
    assert_eq!(
        c("what is 9 minus 4", "what is 4 minus 9"),
        Some(Contrast::Numbers)
    );
    assert_eq!(c("a dozen eggs", "12 eggs"), None);
    assert_eq!(c("the 3rd of May", "the 3 of May"), None);
    assert_eq!(
        c(
            "what is 12 times 12?",
            "Hi! Could you tell me what's 12 times 12?"
        ),
        None
    );
}

#[test]
fn negation_antonyms_and_order() {
    assert_eq!(
        contrast("Which mushrooms are edible?", "Which mushrooms aren't edible?"),
        Some(Contrast::Negation)
    );
    assert_eq!(
        contrast("make tea with milk", "make tea without milk"),
        Some(Contrast::Negation)
    );
    assert_eq!(
        contrast("Why do prices rise in winter?", "Why do prices fall in winter?"),
        Some(Contrast::Antonym)
    );
    assert_eq!(
        contrast("Convert miles to kilometres", "Convert kilometres to miles"),
        Some(Contrast::Order)
    );
    assert_eq!(
        contrast("Do cats chase dogs?", "Do dogs chase cats?"),
        Some(Contrast::Order)
    );
    // One block moved is a paraphrase.
    assert_eq!(
        contrast("In Go, how do I read a file?", "How do I read a file in Go?"),
        None
    );
}

#[test]
fn small_exchanges_are_refused_typos_and_rewordings_are_not() {
    assert_eq!(
        contrast(
            "What is the height of the Eiffel Tower?",
            "What is the weight of the Eiffel Tower?"
        ),
        Some(Contrast::Exchange)
    );
    assert_eq!(
        contrast("Sort users by age", "Sort users by signup date"),
        Some(Contrast::Exchange)
    );
    assert_eq!(
        contrast("how do I bake sourdough bread", "how do i bake sourdogh bread"),
        None
    );
    assert_eq!(
        contrast("Whta is the capital of Peru?", "What is the capital of Peru?"),
        None
    );
    assert_eq!(
        contrast(
            "How do I cook quinoa?",
            "Hello! I'm cooking dinner for friends tonight and never made it before: how do I cook quinoa?"
        ),
        None
    );
    assert_eq!(compare("What is Rust?", "what is rust"), Verdict::SameWords);
    assert_eq!(
        compare("what does a plumber do", "what dose a plumbr do"),
        Verdict::SameWords
    );
    assert_eq!(compare("", ""), Verdict::SameWords);
    assert_eq!(
        compare(
            "How do I renew my passport?",
            "My passport expires soon and I travel next month, what must I do to renew it?"
        ),
        Verdict::Close
    );
}

#[test]
fn one_edit_is_a_typo_in_words_long_enough() {
    assert!(typo("receive", "recieve"));
    assert!(typo("color", "colour"));
    assert!(typo("whta", "what"));
    assert!(!typo("cat", "car"));
    assert!(!typo("2023", "2024"));
    assert!(!typo("height", "weight"));
}
