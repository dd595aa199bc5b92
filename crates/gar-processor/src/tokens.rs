//! Special token ids, always looked up by token *name* in the checkpoint's tokenizer (gar-spec §7.1), and
//! checked against the ids `config.json` hard-wires into the model (`crop_tokens_ids`, `image_token_id`).

use std::path::Path;

use serde_json::Value;
use tokenizers::Tokenizer;

use crate::config::{read_json, GarFields};
use crate::error::{ProcessorError, Result};

/// The `tokenizer_config.json` entries the processor uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizerConfig {
    pub bos_token: String,
    pub eos_token: String,
    pub pad_token: Option<String>,
    pub unk_token: Option<String>,
    pub image_token: String,
    /// transformers' post-decode space clean-up (`clean_up_tokenization`); its default is `false`.
    pub clean_up_tokenization_spaces: bool,
    /// `chat_template` when stored here (string, or the entry named "default" of a list).
    pub chat_template: Option<String>,
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        Self {
            bos_token: "<|begin_of_text|>".into(),
            eos_token: "<|eot_id|>".into(),
            pad_token: None,
            unk_token: None,
            image_token: "<|image|>".into(),
            clean_up_tokenization_spaces: false,
            chat_template: None,
        }
    }
}

/// A special token entry is either a string or an `AddedToken` dict with `content`.
fn token_str(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

impl TokenizerConfig {
    /// The special tokens the chat template sees as variables (`bos_token`, `eos_token`, and
    /// `pad_token` / `unk_token` when configured).
    pub fn template_specials(&self) -> Vec<(&str, &str)> {
        let mut special = vec![
            ("bos_token", self.bos_token.as_str()),
            ("eos_token", self.eos_token.as_str()),
        ];
        if let Some(p) = &self.pad_token {
            special.push(("pad_token", p.as_str()));
        }
        if let Some(u) = &self.unk_token {
            special.push(("unk_token", u.as_str()));
        }
        special
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let v = read_json(path)?;
        let d = Self::default();
        let extra = v.get("extra_special_tokens");
        let chat_template = match v.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
            _ => None,
        };
        Ok(Self {
            bos_token: token_str(v.get("bos_token")).unwrap_or(d.bos_token),
            eos_token: token_str(v.get("eos_token")).unwrap_or(d.eos_token),
            pad_token: token_str(v.get("pad_token")),
            unk_token: token_str(v.get("unk_token")),
            image_token: token_str(v.get("image_token"))
                .or_else(|| token_str(extra.and_then(|e| e.get("image_token"))))
                .unwrap_or(d.image_token),
            clean_up_tokenization_spaces: v
                .get("clean_up_tokenization_spaces")
                .and_then(Value::as_bool)
                .unwrap_or(d.clean_up_tokenization_spaces),
            chat_template,
        })
    }
}

/// Name of the crop (feature-replay) token of `<PromptK>` (GAR:eval, convert_to_hf).
pub fn crop_token_name(k: usize) -> String {
    format!("<|reserved_special_token_{}|>", k + 2)
}

/// Name of the region prompt token K.
pub fn prompt_token_name(k: usize) -> String {
    format!("<Prompt{k}>")
}

/// Name of the background prompt token.
pub const NO_PROMPT_TOKEN: &str = "<NO_Prompt>";

/// Resolved special token ids of one checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: u32,
    /// `eos_token` of the tokenizer (`<|eot_id|>`): generation stops there.
    pub eos: u32,
    pub pad: Option<u32>,
    pub image: u32,
    pub image_token: String,
    /// Number of `<PromptK>` slots; the background label.
    pub prompt_numbers: usize,
    /// Id of `<PromptK>`, K < prompt_numbers.
    pub prompts: Vec<u32>,
    pub no_prompt: u32,
    /// Crop token id of `<PromptK>`, K < prompt_numbers.
    pub crops: Vec<u32>,
}

impl SpecialTokens {
    pub fn resolve(tokenizer: &Tokenizer, cfg: &TokenizerConfig, gar: &GarFields) -> Result<Self> {
        let id = |name: &str| {
            tokenizer
                .token_to_id(name)
                .ok_or_else(|| ProcessorError::MissingToken(name.to_string()))
        };
        let n = gar.prompt_numbers;
        if n == 0 || n > u8::MAX as usize {
            return Err(ProcessorError::Tokenizer(format!(
                "prompt_numbers = {n} is outside 1..=255"
            )));
        }
        let crops = (0..n)
            .map(|k| id(&crop_token_name(k)))
            .collect::<Result<Vec<_>>>()?;
        if let Some(saved) = &gar.crop_tokens_ids {
            for (k, (&c, &t)) in saved.iter().zip(&crops).enumerate() {
                if c != t {
                    return Err(ProcessorError::CropTokenMismatch {
                        index: k,
                        config_id: c,
                        token: crop_token_name(k),
                        tokenizer_id: t,
                    });
                }
            }
            if saved.len() < n {
                return Err(ProcessorError::Tokenizer(format!(
                    "config.json has {} crop_tokens_ids for prompt_numbers = {n}",
                    saved.len()
                )));
            }
        }
        let image = id(&cfg.image_token)?;
        if let Some(saved) = gar.image_token_id {
            if saved != image {
                return Err(ProcessorError::TokenIdMismatch {
                    field: "image_token_id",
                    config_id: saved,
                    token: cfg.image_token.clone(),
                    tokenizer_id: image,
                });
            }
        }
        Ok(Self {
            bos: id(&cfg.bos_token)?,
            eos: id(&cfg.eos_token)?,
            pad: cfg.pad_token.as_deref().map(id).transpose()?,
            image,
            image_token: cfg.image_token.clone(),
            prompt_numbers: n,
            prompts: (0..n)
                .map(|k| id(&prompt_token_name(k)))
                .collect::<Result<Vec<_>>>()?,
            no_prompt: id(NO_PROMPT_TOKEN)?,
            crops,
        })
    }

    /// Label of the background in the visual-prompt map.
    pub fn background_label(&self) -> u8 {
        // prompt_numbers ≤ 255 is checked in `resolve`.
        self.prompt_numbers as u8
    }
}
