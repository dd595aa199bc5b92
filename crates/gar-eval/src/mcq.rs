//! Maps a judge's free-text reply to one of the multiple-choice options: a port of
//! `parse_pred` from DAM's `eval_model_outputs.py` (copied into GAR's DLC-Bench scripts).
//!
//! The rules, in order (all on the stripped, lower-cased reply and choices):
//! 1. the reply is a choice, `"x. choice"`, or the bare letter `x` → that choice;
//! 2. exactly one choice occurs inside the reply → it;
//! 3. the reply starts with `"x."` → choice `x`;
//! 4. several choices occur inside → the one found last, the longest on a tie;
//! 5. the reply occurs inside some choices → the longest such choice;
//! 6. the reply is a single letter, or a letter then a newline → that letter.
//!
//! Otherwise `None` (the caller scores 0). Where the Python raises (`pred[1]` on a one-letter
//! reply, a letter past the last choice, an empty reply) this port returns `None` instead.

const LABELS: [char; 5] = ['a', 'b', 'c', 'd', 'e'];

pub fn parse_choice<S: AsRef<str>>(reply: &str, choices: &[S]) -> Option<usize> {
    let pred = reply.trim().to_lowercase();
    if pred.is_empty() {
        return None;
    }
    let chars: Vec<char> = pred.chars().collect();
    let in_range = |i: usize| (i < choices.len()).then_some(i);
    let label_index = |c: char| LABELS.iter().position(|l| *l == c);

    // (choice index, byte position in the reply, length): positions only get compared with
    // each other, so bytes order them exactly as Python's character offsets do.
    let mut inside: Vec<(usize, usize, usize)> = Vec::new();
    for (index, choice) in choices.iter().enumerate() {
        let choice = choice.as_ref().trim().to_lowercase();
        let prefix = LABELS.get(index).map(|c| c.to_string());
        if choice == pred
            || prefix
                .as_ref()
                .is_some_and(|p| pred == format!("{p}. {choice}") || &pred == p)
        {
            return Some(index);
        }
        if let Some(pos) = pred.find(&choice) {
            inside.push((index, pos, choice.chars().count()));
        }
    }
    if inside.len() == 1 {
        return Some(inside[0].0);
    }
    if let Some(i) = chars.first().and_then(|&c| label_index(c)) {
        match chars.get(1) {
            Some('.') => return in_range(i),
            None => return None, // Python: `pred[1]` raises IndexError on a lone letter
            Some(_) => {}
        }
    }
    if !inside.is_empty() {
        // Python's max() keeps the first maximum, hence the strict comparisons.
        let last_pos = inside.iter().map(|m| m.1).max().unwrap_or(0);
        let mut best: Option<(usize, usize)> = None;
        for &(i, pos, len) in &inside {
            if pos == last_pos && best.is_none_or(|(_, l)| len > l) {
                best = Some((i, len));
            }
        }
        return best.map(|b| b.0);
    }
    let mut containing: Option<(usize, usize)> = None;
    for (index, choice) in choices.iter().enumerate() {
        let choice = choice.as_ref().trim().to_lowercase();
        if choice.contains(&pred) {
            let len = choice.chars().count();
            if containing.is_none_or(|(_, l)| len > l) {
                containing = Some((index, len));
            }
        }
    }
    if let Some((i, _)) = containing {
        return Some(i);
    }
    if let Some(&c0) = chars.first() {
        if chars.len() == 1 || chars.get(1) == Some(&'\n') {
            return label_index(c0).and_then(in_range);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const YN: [&str; 2] = ["Yes", "No"];
    const CH: [&str; 3] = [
        "The claws are not mentioned in the description.",
        "The claws are mentioned in the description.",
        "The bird is not mentioned in the description.",
    ];

    #[test]
    fn rule_1_exact_forms() {
        assert_eq!(parse_choice("A. Yes", &YN), Some(0));
        assert_eq!(parse_choice("  no ", &YN), Some(1));
        assert_eq!(parse_choice("b", &YN), Some(1));
        assert_eq!(
            parse_choice("B. The claws are mentioned in the description.", &CH),
            Some(1)
        );
    }

    #[test]
    fn rule_2_single_substring() {
        assert_eq!(
            parse_choice(
                "I think: the bird is not mentioned in the description. Done",
                &CH
            ),
            Some(2)
        );
    }

    #[test]
    fn rule_3_letter_prefix_beats_ambiguous_substrings() {
        // "Yes" and "No" both occur in "C. No, yes": the leading "c." decides, and is out of range.
        assert_eq!(parse_choice("A. no, yes", &YN), Some(0));
        assert_eq!(parse_choice("C. no, yes", &YN), None);
    }

    #[test]
    fn rule_4_last_then_longest() {
        // both occur, "yes" last
        assert_eq!(parse_choice("no... actually yes", &YN), Some(0));
        // Choice 1 contains choice 0's text at the same position: the longer one wins.
        let ch = ["The claws are", "The claws are mentioned"];
        assert_eq!(parse_choice("x the claws are mentioned", &ch), Some(1));
    }

    #[test]
    fn rule_5_reply_inside_choice() {
        assert_eq!(parse_choice("bird is not", &CH), Some(2));
        assert_eq!(parse_choice("are mentioned", &CH), Some(1));
        // Contained in both: the longer choice wins.
        assert_eq!(
            parse_choice("claws", &["The claws", "The claws are here"]),
            Some(1)
        );
    }

    #[test]
    fn rule_6_letter_then_newline() {
        assert_eq!(parse_choice("c\nbecause", &CH), Some(2));
        assert_eq!(parse_choice("e", &CH), None); // past the last choice (Python: IndexError)
    }

    #[test]
    fn no_match_and_degenerate_replies() {
        assert_eq!(parse_choice("maybe", &YN), None);
        assert_eq!(parse_choice("   ", &YN), None); // Python: IndexError on pred[0]
        assert_eq!(parse_choice("z", &YN), None);
    }
}
