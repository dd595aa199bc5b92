//! Prompt texts (gar-spec §7.3) and the chat template (§7.2).
//!
//! The first user message carries the image and the region preamble; it is built exactly as GAR's
//! `SingleRegionCaptionDataset` (Describe) or `MultiRegionDataset` (Ask) build it, except that prompts are
//! listed by increasing index instead of Python `set` order. Later turns are plain text.
//!
//! The template is the checkpoint's own Jinja `chat_template`, rendered with minijinja configured like
//! transformers' sandbox (`trim_blocks`, `lstrip_blocks`, `raise_exception`, Python-style `trim`, Python
//! string/dict methods through minijinja-contrib's `pycompat`).

use minijinja::{Environment, ErrorKind, Value};
use serde::Serialize;
use serde_json::json;

use crate::decode::py_strip;
use crate::error::{ProcessorError, Result};

/// Crop (feature-replay) tokens per region: the model's 16×16 `roi_align` output.
pub const CROP_TOKENS_PER_REGION: usize = 256;

/// The reference's instruction for region captions.
pub const DEFAULT_INSTRUCTION: &str = "Describe this masked region in detail.";

/// The first user message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// Single-region caption: exactly one region, placed in slot `<Prompt{slot}>` (1 in every GAR demo
    /// and benchmark).
    Describe { instruction: String, slot: usize },
    /// Free question mentioning `<PromptK>` for region K (region index = prompt index).
    Ask { question: String },
}

impl Prompt {
    /// `Describe` with the reference instruction and slot `<Prompt1>`.
    pub fn describe() -> Self {
        Prompt::Describe {
            instruction: DEFAULT_INSTRUCTION.into(),
            slot: 1,
        }
    }

    pub fn ask(question: impl Into<String>) -> Self {
        Prompt::Ask {
            question: question.into(),
        }
    }
}

/// One more exchange after the first message: the assistant's earlier answer, then the user's next text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowUp {
    pub assistant: String,
    pub user: String,
}

/// What to ask about the image and its regions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The first user message (carries the image and the regions).
    pub prompt: Prompt,
    /// Earlier answers and later user messages, oldest first; the model answers the last user text.
    pub follow_ups: Vec<FollowUp>,
    /// Replaces the template's default system prompt.
    pub system: Option<String>,
    /// Overrides `max_num_tiles` for this request.
    pub max_num_tiles: Option<usize>,
}

impl Request {
    pub fn new(prompt: Prompt) -> Self {
        Self {
            prompt,
            follow_ups: Vec::new(),
            system: None,
            max_num_tiles: None,
        }
    }

    /// The reference's single-region caption request.
    pub fn describe() -> Self {
        Self::new(Prompt::describe())
    }

    pub fn ask(question: impl Into<String>) -> Self {
        Self::new(Prompt::ask(question))
    }

    /// Replaces the template's default system prompt.
    pub fn with_system(mut self, system: impl Into<String>) -> Self {
        self.system = Some(system.into());
        self
    }

    /// Overrides `max_num_tiles` for this request.
    pub fn with_max_num_tiles(mut self, max_num_tiles: usize) -> Self {
        self.max_num_tiles = Some(max_num_tiles);
        self
    }

    /// Appends an earlier answer and the next user message.
    pub fn follow_up(mut self, assistant: impl Into<String>, user: impl Into<String>) -> Self {
        self.follow_ups.push(FollowUp {
            assistant: assistant.into(),
            user: user.into(),
        });
        self
    }

    /// All user texts, first message's own text first.
    pub(crate) fn user_texts(&self) -> impl Iterator<Item = &str> {
        let first = match &self.prompt {
            Prompt::Describe { instruction, .. } => instruction.as_str(),
            Prompt::Ask { question } => question.as_str(),
        };
        std::iter::once(first).chain(self.follow_ups.iter().map(|f| f.user.as_str()))
    }
}

/// Indices K of every `<PromptK>` in `text` (the reference's `re.findall(r"<Prompt\d+>")`).
pub fn mentioned_prompts(text: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("<Prompt") {
        let tail = &rest[i + "<Prompt".len()..];
        let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && tail.as_bytes().get(digits) == Some(&b'>') {
            // Absurdly long numbers saturate, which later fails the region check.
            out.push(tail[..digits].parse().unwrap_or(usize::MAX));
        }
        rest = tail;
    }
    out
}

/// Text of the first user message. `slots` are `(K, crop token)` in increasing K.
pub(crate) fn first_message_text(prompt: &Prompt, slots: &[(usize, &str)]) -> String {
    let crops = |tok: &str| tok.repeat(CROP_TOKENS_PER_REGION);
    match prompt {
        Prompt::Describe { instruction, .. } => match slots.first() {
            Some(&(k, tok)) => format!(
                "There are some objects I am curious about: <Prompt{k}>;\n<Prompt{k}>: {}{instruction}",
                crops(tok)
            ),
            None => instruction.clone(),
        },
        Prompt::Ask { question } => {
            if slots.is_empty() {
                return question.clone();
            }
            let mut objects = String::from("There are some objects I am curious about: ");
            let mut lines = String::new();
            for &(k, tok) in slots {
                objects.push_str(&format!("<Prompt{k}>; "));
                lines.push_str(&format!("<Prompt{k}>: {}\n", crops(tok)));
            }
            format!("{objects}\n{lines}\n{question}")
        }
    }
}

/// Messages in transformers' multimodal chat format. User and assistant contents are lists of
/// `{"type": ...}` items (the PLM template selects items by type); the system content is a plain string
/// (the template applies `|trim` to it directly). The first user message holds `images` image items,
/// which the PLM template writes before the text.
pub(crate) fn conversation(
    first_text: &str,
    images: usize,
    request: &Request,
) -> Vec<serde_json::Value> {
    let text = |t: &str| json!([{"type": "text", "text": t}]);
    let mut messages = Vec::new();
    if let Some(system) = &request.system {
        messages.push(json!({"role": "system", "content": system}));
    }
    let mut first: Vec<serde_json::Value> = vec![json!({"type": "image"}); images];
    first.push(json!({"type": "text", "text": first_text}));
    messages.push(json!({"role": "user", "content": first}));
    for f in &request.follow_ups {
        messages.push(json!({"role": "assistant", "content": text(&f.assistant)}));
        messages.push(json!({"role": "user", "content": text(&f.user)}));
    }
    messages
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChatTemplate")
    }
}

const TEMPLATE_NAME: &str = "chat_template";

impl ChatTemplate {
    pub fn new(source: &str) -> Result<Self> {
        let mut env = Environment::new();
        // transformers renders with jinja2's ImmutableSandboxedEnvironment(trim_blocks=True,
        // lstrip_blocks=True) and keep_trailing_newline=False (also minijinja's default).
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<Value, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        // jinja2's `trim` is Python's `str.strip()`.
        env.add_filter("trim", |s: String| py_strip(&s).to_string());
        // Python methods on values (`.strip()`, `.startswith()`, `.items()`, ...), which HF templates use.
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(|e| ProcessorError::Template(e.to_string()))?;
        Ok(Self { env })
    }

    /// Renders `messages` (transformers' chat format) with `add_generation_prompt` and the tokenizer's
    /// special tokens (`("bos_token", "<|begin_of_text|>")`, ...) as template variables.
    pub fn render(
        &self,
        messages: &impl Serialize,
        add_generation_prompt: bool,
        special_tokens: &[(&str, &str)],
    ) -> Result<String> {
        let tmpl = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| ProcessorError::Template(e.to_string()))?;
        let mut ctx: Vec<(&str, Value)> = vec![
            ("messages", Value::from_serialize(messages)),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
        ];
        ctx.extend(special_tokens.iter().map(|&(k, v)| (k, Value::from(v))));
        let ctx: std::collections::BTreeMap<&str, Value> = ctx.into_iter().collect();
        tmpl.render(ctx)
            .map_err(|e| ProcessorError::Template(format!("{e:#}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_has_python_methods_and_raise_exception() {
        let t = ChatTemplate::new(
            "{% if messages[0]['content'].startswith(' a') %}{{ messages[0]['content'].strip()|upper }}{% endif %}\n\
             {%- if add_generation_prompt %}{{ raise_exception('no') }}{% endif %}",
        )
        .unwrap();
        let msgs = json!([{"role": "user", "content": " a b "}]);
        assert_eq!(t.render(&msgs, false, &[]).unwrap(), "A B");
        assert!(matches!(
            t.render(&msgs, true, &[]),
            Err(ProcessorError::Template(_))
        ));
    }

    #[test]
    fn finds_prompt_mentions() {
        assert_eq!(
            mentioned_prompts("Is <Prompt0> left of <Prompt12>? <Prompt> <Promptx> <Prompt3"),
            vec![0, 12]
        );
    }

    #[test]
    fn single_region_text_is_the_reference_one() {
        let t = first_message_text(&Prompt::describe(), &[(1, "<c>")]);
        let want = format!(
            "There are some objects I am curious about: <Prompt1>;\n<Prompt1>: {}Describe this masked region in detail.",
            "<c>".repeat(256)
        );
        assert_eq!(t, want);
    }

    #[test]
    fn multi_region_text_lists_prompts_in_order() {
        let t = first_message_text(&Prompt::ask("Q?"), &[(0, "<a>"), (1, "<b>")]);
        let want = format!(
            "There are some objects I am curious about: <Prompt0>; <Prompt1>; \n<Prompt0>: {}\n<Prompt1>: {}\n\nQ?",
            "<a>".repeat(256),
            "<b>".repeat(256)
        );
        assert_eq!(t, want);
    }
}
