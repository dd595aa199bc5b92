//! A blocking OpenAI-compatible chat client for LLM judges: a fixed number of worker threads,
//! retries with exponential backoff on 429 / 5xx / connection errors, and a content-addressed
//! cache of replies (JSONL, one `{"key", "reply"}` per line, appended and flushed as replies
//! arrive) so that a re-run, or a run resumed after a crash, makes no request twice.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Where and how to ask.
pub struct JudgeConfig {
    /// Base URL of the API (`https://api.openai.com/v1`, `http://127.0.0.1:8080/v1`).
    pub url: String,
    pub model: String,
    pub key: Option<String>,
    pub concurrency: usize,
    pub retries: u32,
    /// First backoff; doubled after each failed try.
    pub backoff: Duration,
    pub cache: PathBuf,
}

/// How a batch went.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Stats {
    /// Replies taken from the cache.
    pub cache_hits: usize,
    /// Requests that got a reply from the server.
    pub requests: usize,
    /// Failed tries that were retried.
    pub retries: usize,
}

/// A reply's text and how many failed tries it took.
type Reply = (String, usize);

#[derive(Serialize, Deserialize)]
struct CacheLine {
    key: String,
    reply: String,
}

/// The cache key: SHA-256 of the request body as sent (model, messages, sampling settings).
pub fn cache_key(body: &Value) -> String {
    let digest = Sha256::digest(body.to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_cache(path: &Path) -> Result<HashMap<String, String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut map = HashMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        // A torn last line (killed mid-write) is simply not a hit.
        if let Ok(entry) = serde_json::from_str::<CacheLine>(line) {
            map.insert(entry.key, entry.reply);
        }
    }
    Ok(map)
}

/// Sends every body (OpenAI chat-completions JSON without `model`) and returns the replies'
/// text in the same order.
pub fn ask_all(
    config: &JudgeConfig,
    bodies: &[Value],
    quiet: bool,
) -> Result<(Vec<String>, Stats)> {
    let cached = read_cache(&config.cache)?;
    let bodies: Vec<Value> = bodies
        .iter()
        .map(|b| {
            let mut b = b.clone();
            b["model"] = json!(config.model);
            b
        })
        .collect();
    let keys: Vec<String> = bodies.iter().map(cache_key).collect();
    let mut replies: Vec<Option<String>> = keys.iter().map(|k| cached.get(k).cloned()).collect();
    let mut stats = Stats {
        cache_hits: replies.iter().filter(|r| r.is_some()).count(),
        ..Stats::default()
    };
    let todo: Vec<usize> = (0..bodies.len())
        .filter(|&i| replies[i].is_none())
        .collect();
    if todo.is_empty() {
        return Ok((replies.into_iter().flatten().collect(), stats));
    }
    if let Some(dir) = config.cache.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&config.cache)
        .with_context(|| format!("cannot open {}", config.cache.display()))?;
    let cache_file = Mutex::new(file);
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(600))
        .build();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Result<Reply>)>> = Mutex::new(Vec::new());
    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::with_draw_target(
            Some(todo.len() as u64),
            indicatif::ProgressDrawTarget::stderr(),
        )
    };
    std::thread::scope(|scope| {
        for _ in 0..config.concurrency.max(1).min(todo.len()) {
            scope.spawn(|| loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                let Some(&i) = todo.get(n) else { break };
                let result =
                    post_with_retries(&agent, config, &bodies[i]).and_then(|(reply, retried)| {
                        append(&cache_file, &keys[i], &reply)?;
                        Ok((reply, retried))
                    });
                let failed = result.is_err();
                results.lock().expect("results lock").push((i, result));
                bar.inc(1);
                if failed {
                    // Stop handing out work; requests already in flight finish.
                    next.store(todo.len(), Ordering::SeqCst);
                }
            });
        }
    });
    bar.finish_and_clear();
    for (i, result) in results.into_inner().expect("results lock") {
        let (reply, retried) = result?;
        stats.requests += 1;
        stats.retries += retried;
        replies[i] = Some(reply);
    }
    let replies = replies
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| anyhow!("some judge requests were not sent"))?;
    Ok((replies, stats))
}

fn append(file: &Mutex<File>, key: &str, reply: &str) -> Result<()> {
    let mut line = serde_json::to_string(&CacheLine {
        key: key.to_string(),
        reply: reply.to_string(),
    })?;
    line.push('\n');
    let mut f = file.lock().map_err(|_| anyhow!("cache lock poisoned"))?;
    f.write_all(line.as_bytes())
        .and_then(|_| f.flush())
        .context("cannot append to the judge cache")
}

/// One request, retried on 429, 5xx and transport errors. Returns the reply and the retry count.
fn post_with_retries(
    agent: &ureq::Agent,
    config: &JudgeConfig,
    body: &Value,
) -> Result<(String, usize)> {
    let url = format!("{}/chat/completions", config.url.trim_end_matches('/'));
    let mut delay = config.backoff;
    for attempt in 0..=config.retries {
        let mut request = agent.post(&url);
        if let Some(key) = &config.key {
            request = request.set("Authorization", &format!("Bearer {key}"));
        }
        let retryable = match request.send_json(body.clone()) {
            Ok(response) => {
                let value: Value = response
                    .into_json()
                    .with_context(|| format!("{url}: the reply is not JSON"))?;
                let text = value
                    .pointer("/choices/0/message/content")
                    .and_then(Value::as_str)
                    .with_context(|| format!("{url}: no choices[0].message.content in {value}"))?;
                return Ok((text.to_string(), attempt as usize));
            }
            Err(ureq::Error::Status(code, response)) if code == 429 || code >= 500 => {
                format!(
                    "HTTP {code}: {}",
                    response.into_string().unwrap_or_default()
                )
            }
            Err(ureq::Error::Status(code, response)) => {
                bail!(
                    "{url}: HTTP {code}: {}",
                    response.into_string().unwrap_or_default()
                )
            }
            Err(e) => format!("{e}"),
        };
        if attempt == config.retries {
            bail!("{url}: gave up after {} tries: {retryable}", attempt + 1);
        }
        std::thread::sleep(delay);
        delay = delay.saturating_mul(2);
    }
    unreachable!("the loop returns or bails on its last try")
}
