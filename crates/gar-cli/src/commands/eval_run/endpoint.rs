//! `--endpoint`: the same requests sent to a running `gar serve` through `/v1/describe` (the
//! route that answers token for token like the CLI; the image is sent as the file's bytes).

use std::path::Path;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;

use super::items::{self, Item, Query};

pub struct Client {
    base: String,
    agent: ureq::Agent,
    key: Option<String>,
}

#[derive(Deserialize)]
pub struct Reply {
    pub text: String,
    pub tokens: Vec<u32>,
    pub prompt_tokens: usize,
    pub stop_reason: String,
}

impl Client {
    pub fn new(url: &str) -> Self {
        Self {
            base: url.trim_end_matches('/').to_string(),
            agent: ureq::AgentBuilder::new()
                .timeout(std::time::Duration::from_secs(3600))
                .build(),
            key: std::env::var("GAR_API_KEY").ok().filter(|k| !k.is_empty()),
        }
    }

    pub fn describe(
        &self,
        image: &Path,
        item: &Item,
        max_new_tokens: usize,
        max_tiles: Option<usize>,
    ) -> Result<Reply> {
        let bytes =
            std::fs::read(image).with_context(|| format!("cannot read {}", image.display()))?;
        let mut body = json!({
            "image": base64::engine::general_purpose::STANDARD.encode(bytes),
            "regions": item.regions,
            "max_new_tokens": max_new_tokens,
        });
        match &item.query {
            Query::Describe => {
                body["prompt"] = json!(items::DESCRIBE);
                body["slot"] = json!(1);
            }
            Query::Ask(text) => body["question"] = json!(text),
        }
        if let Some(t) = max_tiles {
            body["max_tiles"] = json!(t);
        }
        let url = format!("{}/v1/describe", self.base);
        let mut request = self.agent.post(&url);
        if let Some(key) = &self.key {
            request = request.set("Authorization", &format!("Bearer {key}"));
        }
        match request.send_json(body) {
            Ok(response) => response
                .into_json::<Reply>()
                .with_context(|| format!("{url}: unexpected reply")),
            Err(ureq::Error::Status(code, response)) => {
                let text = response.into_string().unwrap_or_default();
                bail!("{url}: HTTP {code}: {text}")
            }
            Err(e) => Err(e).with_context(|| format!("cannot reach {url}")),
        }
    }
}
