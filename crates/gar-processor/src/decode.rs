//! Token ids back to text as the reference does it (gar-spec §9):
//! `tokenizer.decode(ids, skip_special_tokens=True).strip()`, where transformers' fast tokenizer runs the
//! `tokenizers` decoder and then, when `clean_up_tokenization_spaces` is set, `clean_up_tokenization`.
//!
//! [`TextStream`] emits the same text incrementally: the concatenation of its pieces equals the one-shot
//! result. It never emits an incomplete UTF-8 character, nor text that a later token could still change
//! (trailing whitespace that the final `strip` or the clean-up may remove, a dangling `" n'"`, ...).

use tokenizers::Tokenizer;

use crate::error::{ProcessorError, Result};

/// transformers' `PreTrainedTokenizerBase.clean_up_tokenization` (single left-to-right pass per rule, in
/// this order, like Python's `str.replace`).
pub fn clean_up_tokenization(s: &str) -> String {
    s.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}

/// Python's `str.isspace` for one character (Rust's whitespace plus the ASCII separators 0x1C..=0x1F).
pub(crate) fn py_is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()` with no argument.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(py_is_space)
}

/// Decodes `ids` with the tokenizer's decoder, then applies the clean-up when `cleanup` is set.
pub(crate) fn decode_raw(
    tokenizer: &Tokenizer,
    ids: &[u32],
    skip_special_tokens: bool,
    cleanup: bool,
) -> Result<String> {
    let text = tokenizer
        .decode(ids, skip_special_tokens)
        .map_err(ProcessorError::tokenizer)?;
    Ok(if cleanup {
        clean_up_tokenization(&text)
    } else {
        text
    })
}

/// Length of the prefix of `text` that no further token can change.
fn stable_len(text: &str) -> usize {
    // An incomplete UTF-8 sequence decodes to U+FFFD until its last byte arrives.
    let t = text.trim_end_matches('\u{FFFD}');
    // Trailing whitespace may be stripped at the end or merged by the clean-up (" ." → ".").
    let t = t.trim_end_matches(py_is_space);
    // Beginnings of the clean-up patterns that do not end in a space.
    for p in [" n'", " 'v", " 'r", " n", " '"] {
        if let Some(rest) = t.strip_suffix(p) {
            return rest.len();
        }
    }
    t.len()
}

/// Incremental decoder for streaming. Feed generated ids with [`TextStream::step`]; call
/// [`TextStream::finish`] at the end for the held-back tail.
pub struct TextStream<'a> {
    tokenizer: &'a Tokenizer,
    skip_special_tokens: bool,
    cleanup: bool,
    /// Ids since the last point where everything decoded so far was emitted.
    window: Vec<u32>,
    /// Bytes of the window's text already emitted.
    emitted: usize,
    /// Whether non-whitespace text was emitted (leading whitespace is stripped).
    started: bool,
}

impl<'a> TextStream<'a> {
    pub(crate) fn new(tokenizer: &'a Tokenizer, skip_special_tokens: bool, cleanup: bool) -> Self {
        Self {
            tokenizer,
            skip_special_tokens,
            cleanup,
            window: Vec::new(),
            emitted: 0,
            started: false,
        }
    }

    fn window_text(&self) -> Result<String> {
        decode_raw(
            self.tokenizer,
            &self.window,
            self.skip_special_tokens,
            self.cleanup,
        )
    }

    /// Adds one token; returns the newly stable text, if any.
    pub fn step(&mut self, id: u32) -> Result<Option<String>> {
        self.window.push(id);
        let text = self.window_text()?;
        if !self.started {
            // Leading whitespace never reaches the output (final `strip`).
            let lead = text.len() - text.trim_start_matches(py_is_space).len();
            self.emitted = self.emitted.max(lead);
        }
        let end = stable_len(&text);
        let piece = match text.get(self.emitted..end) {
            Some(p) if !p.is_empty() => {
                self.started = true;
                Some(p.to_string())
            }
            _ => None,
        };
        if piece.is_some() {
            self.emitted = end;
        }
        if self.started && end == text.len() && self.emitted == end {
            // Everything so far is out and nothing is pending: later text only appends.
            self.window.clear();
            self.emitted = 0;
        }
        Ok(piece)
    }

    /// Flushes what was held back, with the final strip applied.
    pub fn finish(self) -> Result<Option<String>> {
        let text = self.window_text()?;
        let rest = text.get(self.emitted..).unwrap_or("");
        let rest = if self.started {
            rest.trim_end_matches(py_is_space)
        } else {
            py_strip(rest)
        };
        Ok((!rest.is_empty()).then(|| rest.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleanup_rules_in_transformers_order() {
        assert_eq!(
            clean_up_tokenization("Hi , it 's a dog . Is n't it ? Yes ! I 'm sure they 're ok"),
            "Hi, it's a dog. Isn't it? Yes! I'm sure they're ok"
        );
        assert_eq!(clean_up_tokenization("a ' b"), "a'b");
    }

    #[test]
    fn python_strip() {
        assert_eq!(py_strip("\u{1c} a b \n\t"), "a b");
        assert_eq!(py_strip("   "), "");
    }

    #[test]
    fn stable_prefix_holds_back_mutable_tails() {
        assert_eq!(stable_len("a dog "), 5);
        assert_eq!(stable_len("is n"), 2);
        assert_eq!(stable_len("it '"), 2);
        assert_eq!(stable_len("caf\u{FFFD}"), 3);
        assert_eq!(stable_len("done."), 5);
    }
}
