//! File readers shared by every benchmark: JSON lists, key-ordered JSON maps, JSON lines,
//! and the search for companion files in the reference `…/evaluation/<Bench>/` layout.

use std::path::{Path, PathBuf};

use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::error::{EvalError, Result};

/// Reads a whole file as JSON.
pub fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| EvalError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Converts one record, naming the file and the item when its shape is wrong.
pub fn from_item<T: DeserializeOwned>(path: &Path, item: impl ToString, value: Value) -> Result<T> {
    serde_json::from_value(value).map_err(|e| EvalError::item(path, item, e))
}

/// Reads a top-level JSON array, converting each element on its own so that the error says
/// which element is bad.
pub fn read_list<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    match read_json(path)? {
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| from_item(path, i, v))
            .collect(),
        other => Err(EvalError::format(
            path,
            format!("expected a JSON list, found {}", kind(&other)),
        )),
    }
}

/// Reads a top-level JSON object keeping the file's key order (the reference iterates
/// Python dicts in insertion order; serde_json's default map would sort the keys).
pub fn read_map(path: &Path) -> Result<Vec<(String, Value)>> {
    let text = std::fs::read_to_string(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let map: OrderedMap = serde_json::from_str(&text).map_err(|source| EvalError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(map.0)
}

/// Reads JSON lines (blank lines are skipped); errors give the 1-based line number.
pub fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let text = std::fs::read_to_string(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line)
            .map_err(|e| EvalError::item(path, format!("line {}", i + 1), e))?;
        out.push(from_item(path, format!("line {}", i + 1), value)?);
    }
    Ok(out)
}

/// A short name for a JSON value's type, for error messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Looks for a companion file next to `start` in the reference layout: for `start`'s folder and
/// each folder above it (up to five levels), tries every `candidates` path relative to it.
/// `…/DLC-Bench/model_outputs/x_eval.json` finds `…/DLC-Bench/annotations/qa.json`
/// through the candidate `annotations/qa.json`.
pub fn find_companion(start: &Path, candidates: &[&str], what: &str) -> Result<PathBuf> {
    let mut searched = Vec::new();
    let start = std::path::absolute(start).unwrap_or_else(|_| start.to_path_buf());
    let first = if start.is_dir() {
        Some(start.as_path())
    } else {
        start.parent()
    };
    for dir in first.into_iter().flat_map(Path::ancestors).take(5) {
        for rel in candidates {
            let p = dir.join(rel);
            if p.is_file() || p.is_dir() {
                return Ok(p);
            }
            searched.push(p);
        }
    }
    Err(EvalError::NotFound {
        what: what.to_string(),
        searched,
    })
}

/// A JSON object as a key-ordered list of entries.
struct OrderedMap(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for OrderedMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedMap;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<OrderedMap, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, Value>()? {
                    out.push((k, v));
                }
                Ok(OrderedMap(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_file_and_item() {
        let dir = std::env::temp_dir().join(format!("gar-eval-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let jsonl = dir.join("r.jsonl");
        std::fs::write(&jsonl, "{\"a\": 1}\n\n{oops\n").unwrap();
        let e = read_jsonl::<Value>(&jsonl).unwrap_err().to_string();
        assert!(e.contains("r.jsonl: item line 3"), "{e}");
        let list = dir.join("l.json");
        std::fs::write(&list, r#"[{"x": 1}, {"x": "no"}]"#).unwrap();
        #[derive(Debug, serde::Deserialize)]
        struct X {
            #[allow(dead_code)]
            x: u32,
        }
        let e = read_list::<X>(&list).unwrap_err().to_string();
        assert!(e.contains("l.json: item 1: invalid type"), "{e}");
        std::fs::write(&list, "{").unwrap();
        assert!(read_list::<X>(&list)
            .unwrap_err()
            .to_string()
            .starts_with("malformed JSON in"));
        let e = read_list::<X>(&dir.join("missing.json"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("cannot read") && e.contains("missing.json"),
            "{e}"
        );
        let e = find_companion(&list, &["annotations/none.json"], "none.json")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("none.json not found; looked at:") && e.contains("--annotations"),
            "{e}"
        );
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn ordered_map_keeps_file_order() {
        let m: OrderedMap = serde_json::from_str(r#"{"b": 1, "a": 2, "c": 3}"#).unwrap();
        let keys: Vec<_> = m.0.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["b", "a", "c"]);
    }
}
