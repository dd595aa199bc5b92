//! Model resolution: a local directory, or a hub id found in (or fetched into) the standard
//! Hugging Face cache, so checkpoints downloaded by Python tools are reused as they are.
//!
//! Cache location, in the order `huggingface_hub` uses: `HF_HUB_CACHE`, then `$HF_HOME/hub`, then
//! `~/.cache/huggingface/hub`. Layout: `models--{org}--{name}/refs/{revision}` holds a commit hash,
//! `snapshots/{hash}/{file}` the files. `HF_HUB_OFFLINE=1` forbids network access.

use std::path::{Path, PathBuf};

/// Files a GAR / Perception-LM checkpoint directory may hold; weights are listed separately.
const METADATA_FILES: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "preprocessor_config.json",
    "special_tokens_map.json",
];
const OPTIONAL_FILES: &[&str] = &["chat_template.jinja", "processor_config.json"];
const SINGLE_WEIGHTS: &str = "model.safetensors";
const SHARD_INDEX: &str = "model.safetensors.index.json";

/// The hub id used when `--model` is not given.
pub const DEFAULT_MODEL: &str = "HaochenWang/GAR-1B";

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("model directory {0} has no config.json: is it a GAR or Perception-LM checkpoint?")]
    NotACheckpoint(PathBuf),
    #[error(
        "model '{id}' (revision {revision}) is not in the Hugging Face cache at {cache} and \
         HF_HUB_OFFLINE is set; download it first or pass a local directory with --model"
    )]
    OfflineMissing {
        id: String,
        revision: String,
        cache: PathBuf,
    },
    #[error("'{0}' is neither an existing directory nor a hub id of the form owner/name")]
    BadId(String),
    #[error("downloading {file} of '{id}' failed: {message}")]
    Download {
        id: String,
        file: String,
        message: String,
    },
    #[error("checkpoint '{0}' has neither model.safetensors nor model.safetensors.index.json")]
    NoWeights(String),
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where the standard Hugging Face hub cache lives on this machine.
pub fn hub_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(home) = std::env::var_os("HF_HOME") {
        return PathBuf::from(home).join("hub");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache").join("huggingface").join("hub")
}

fn offline() -> bool {
    matches!(
        std::env::var("HF_HUB_OFFLINE").as_deref(),
        Ok("1") | Ok("true") | Ok("TRUE") | Ok("yes") | Ok("ON") | Ok("on")
    )
}

/// Resolves `model` (a directory or a hub id) to a local checkpoint directory.
pub fn resolve_model(model: &str, revision: &str) -> Result<PathBuf, ResolveError> {
    let path = Path::new(model);
    if path.is_dir() {
        if !path.join("config.json").is_file() {
            return Err(ResolveError::NotACheckpoint(path.to_path_buf()));
        }
        return Ok(path.to_path_buf());
    }
    if !looks_like_hub_id(model) {
        return Err(ResolveError::BadId(model.to_string()));
    }
    let cache = hub_cache_dir();
    if let Some(dir) = cached_snapshot(&cache, model, revision) {
        return Ok(dir);
    }
    if offline() {
        return Err(ResolveError::OfflineMissing {
            id: model.to_string(),
            revision: revision.to_string(),
            cache,
        });
    }
    download(&cache, model, revision)
}

fn looks_like_hub_id(id: &str) -> bool {
    let mut parts = id.split('/');
    let (Some(owner), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    ok(owner) && ok(name)
}

fn repo_folder(cache: &Path, id: &str) -> PathBuf {
    cache.join(format!("models--{}", id.replace('/', "--")))
}

/// A complete snapshot for `revision` (a branch/tag name in `refs/`, or a commit hash) in the cache.
fn cached_snapshot(cache: &Path, id: &str, revision: &str) -> Option<PathBuf> {
    let repo = repo_folder(cache, id);
    let commit = match std::fs::read_to_string(repo.join("refs").join(revision)) {
        Ok(hash) => hash.trim().to_string(),
        Err(_) => revision.to_string(),
    };
    let snapshot = repo.join("snapshots").join(commit);
    let complete =
        METADATA_FILES.iter().all(|f| snapshot.join(f).is_file()) && weights_complete(&snapshot);
    complete.then_some(snapshot)
}

/// True when the single weights file or every shard named by the index is present.
fn weights_complete(dir: &Path) -> bool {
    if dir.join(SINGLE_WEIGHTS).is_file() {
        return true;
    }
    match shard_names(&dir.join(SHARD_INDEX)) {
        Ok(shards) => !shards.is_empty() && shards.iter().all(|s| dir.join(s).is_file()),
        Err(_) => false,
    }
}

/// The distinct shard file names listed in a `model.safetensors.index.json`.
pub fn shard_names(index: &Path) -> Result<Vec<String>, ResolveError> {
    let io = |source| ResolveError::Io {
        path: index.to_path_buf(),
        source,
    };
    let text = std::fs::read_to_string(index).map_err(io)?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
    let mut names: Vec<String> = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.values()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names.dedup();
    Ok(names)
}

/// Downloads the checkpoint into the standard cache (with progress bars) and returns its snapshot.
fn download(cache: &Path, id: &str, revision: &str) -> Result<PathBuf, ResolveError> {
    use hf_hub::api::sync::ApiBuilder;
    use hf_hub::{Repo, RepoType};

    let fail = |file: &str, e: &dyn std::fmt::Display| ResolveError::Download {
        id: id.to_string(),
        file: file.to_string(),
        message: e.to_string(),
    };
    let mut builder = ApiBuilder::new()
        .with_cache_dir(cache.to_path_buf())
        .with_progress(true);
    if let Ok(token) = std::env::var("HF_TOKEN") {
        builder = builder.with_token(Some(token));
    }
    let api = builder.build().map_err(|e| fail("(connection)", &e))?;
    let repo = api.repo(Repo::with_revision(
        id.to_string(),
        RepoType::Model,
        revision.to_string(),
    ));
    let mut snapshot = None;
    for file in METADATA_FILES {
        let path = repo.get(file).map_err(|e| fail(file, &e))?;
        snapshot = path.parent().map(Path::to_path_buf);
    }
    for file in OPTIONAL_FILES {
        // Absent optional files are normal (older checkpoints); anything else surfaces later.
        let _ = repo.get(file);
    }
    let snapshot = snapshot.ok_or_else(|| ResolveError::NoWeights(id.to_string()))?;
    if repo.get(SINGLE_WEIGHTS).is_err() {
        let index = repo
            .get(SHARD_INDEX)
            .map_err(|_| ResolveError::NoWeights(id.to_string()))?;
        for shard in shard_names(&index)? {
            repo.get(&shard).map_err(|e| fail(&shard, &e))?;
        }
    }
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn hub_ids_are_recognised() {
        assert!(looks_like_hub_id("HaochenWang/GAR-1B"));
        assert!(looks_like_hub_id("facebook/sam-vit-huge"));
        assert!(!looks_like_hub_id("GAR-1B"));
        assert!(!looks_like_hub_id("a/b/c"));
        assert!(!looks_like_hub_id("a/"));
    }

    #[test]
    fn finds_a_sharded_snapshot_through_refs() {
        let cache = std::env::temp_dir().join(format!("gar-resolve-{}", std::process::id()));
        let repo = repo_folder(&cache, "org/model");
        write(&repo.join("refs/main"), "abc123\n");
        let snap = repo.join("snapshots/abc123");
        for f in METADATA_FILES {
            write(&snap.join(f), "{}");
        }
        assert_eq!(cached_snapshot(&cache, "org/model", "main"), None);
        write(
            &snap.join(SHARD_INDEX),
            r#"{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#,
        );
        write(&snap.join("model-00001-of-00002.safetensors"), "");
        assert_eq!(cached_snapshot(&cache, "org/model", "main"), None);
        write(&snap.join("model-00002-of-00002.safetensors"), "");
        assert_eq!(
            cached_snapshot(&cache, "org/model", "main"),
            Some(snap.clone())
        );
        assert_eq!(cached_snapshot(&cache, "org/model", "abc123"), Some(snap));
        std::fs::remove_dir_all(&cache).unwrap();
    }

    #[test]
    fn a_directory_without_config_is_refused() {
        let dir = std::env::temp_dir().join(format!("gar-notckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = resolve_model(dir.to_str().unwrap(), "main").unwrap_err();
        assert!(err.to_string().contains("no config.json"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
