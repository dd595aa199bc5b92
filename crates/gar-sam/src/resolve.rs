//! `--sam DIR_OR_ID`: a local directory, or a hub id looked up in the standard Hugging Face cache
//! (no download: SAM checkpoints are large and users of GAR usually have one already).
//!
//! Cache location as `huggingface_hub` resolves it: `HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`; layout `models--{org}--{name}/refs/{revision}` → `snapshots/{hash}/`.

use std::path::{Path, PathBuf};

use crate::error::{Result, SamError};

/// The checkpoint the GAR reference uses.
pub const DEFAULT_SAM: &str = "facebook/sam-vit-huge";

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

fn is_hub_id(id: &str) -> bool {
    let ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    matches!(id.split('/').collect::<Vec<_>>().as_slice(), [o, n] if ok(o) && ok(n))
}

/// Resolves `model` (directory or hub id at `revision`, e.g. "main") to a checkpoint directory.
pub fn resolve_sam(model: &str, revision: &str) -> Result<PathBuf> {
    let path = Path::new(model);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if !is_hub_id(model) {
        return Err(SamError::BadModelId(model.to_string()));
    }
    let cache = hub_cache_dir();
    let repo = cache.join(format!("models--{}", model.replace('/', "--")));
    let commit = std::fs::read_to_string(repo.join("refs").join(revision))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| revision.to_string());
    let snapshot = repo.join("snapshots").join(commit);
    let has_weights = snapshot.join("model.safetensors").is_file()
        || snapshot.join("model.safetensors.index.json").is_file();
    if snapshot.is_dir() && has_weights {
        Ok(snapshot)
    } else {
        Err(SamError::NotCached {
            id: model.to_string(),
            cache,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_and_directories() {
        assert!(is_hub_id("facebook/sam-vit-huge"));
        assert!(!is_hub_id("facebook"));
        assert!(!is_hub_id("a/b/c"));
        assert!(matches!(
            resolve_sam("not a path", "main"),
            Err(SamError::BadModelId(_))
        ));
        let here = env!("CARGO_MANIFEST_DIR");
        assert_eq!(resolve_sam(here, "main").unwrap(), PathBuf::from(here));
    }

    #[test]
    fn finds_a_snapshot_in_a_cache_layout() {
        let root = std::env::temp_dir().join(format!("gar-sam-resolve-{}", std::process::id()));
        let repo = root.join("models--org--tiny-sam");
        let snap = repo.join("snapshots").join("abc123");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs").join("main"), "abc123\n").unwrap();
        std::fs::write(snap.join("model.safetensors"), b"").unwrap();
        // Environment variables are process-wide: only this test sets HF_HUB_CACHE.
        std::env::set_var("HF_HUB_CACHE", &root);
        assert_eq!(resolve_sam("org/tiny-sam", "main").unwrap(), snap);
        let missing = resolve_sam("org/other", "main").unwrap_err();
        assert!(missing
            .to_string()
            .contains("not in the Hugging Face cache"));
        std::env::remove_var("HF_HUB_CACHE");
        std::fs::remove_dir_all(&root).ok();
    }
}
