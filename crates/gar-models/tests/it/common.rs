//! Fixture access and tolerance helpers shared by the integration tests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};

/// `<workspace>/fixtures`.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// Names of the `fixtures/model/<case>` folders that hold a complete ladder, sorted.
pub fn model_cases() -> Vec<String> {
    let dir = fixtures_dir().join("model");
    let mut cases: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().join("tensors.safetensors").is_file())
                .filter(|e| e.path().join("meta.json").is_file())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    cases.sort();
    cases
}

pub struct Case {
    pub name: String,
    pub meta: serde_json::Value,
    pub tensors: HashMap<String, Tensor>,
    pub dir: PathBuf,
}

impl Case {
    pub fn load(name: &str) -> Result<Self> {
        let dir = fixtures_dir().join("model").join(name);
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json"))?)?;
        let tensors =
            candle_core::safetensors::load(dir.join("tensors.safetensors"), &Device::Cpu)?;
        Ok(Self {
            name: name.to_string(),
            meta,
            tensors,
            dir,
        })
    }

    pub fn t(&self, key: &str) -> Result<&Tensor> {
        self.tensors
            .get(key)
            .with_context(|| format!("{}: fixture tensor {key} missing", self.name))
    }

    pub fn checkpoint_dir(&self) -> PathBuf {
        let ck = self.meta["checkpoint"].as_str().unwrap_or_default();
        fixtures_dir().join("checkpoints").join(ck)
    }

    pub fn ids(&self, key: &str) -> Result<Vec<u32>> {
        Ok(self
            .t(key)?
            .to_dtype(DType::I64)?
            .to_vec1::<i64>()?
            .into_iter()
            .map(|v| v as u32)
            .collect())
    }

    pub fn aspect_ratio(&self) -> (usize, usize) {
        let a = &self.meta["aspect_ratio"];
        (
            a[0].as_u64().unwrap_or(0) as usize,
            a[1].as_u64().unwrap_or(0) as usize,
        )
    }

    /// `(T, 3, 448, 448)` f32 in [-1, 1] from the stacked `tiles.png`.
    pub fn pixel_values(&self) -> Result<Tensor> {
        let img = image::open(self.dir.join("tiles.png"))?.to_rgb8();
        let (w, h) = img.dimensions();
        let (w, h) = (w as usize, h as usize);
        let t = h / w;
        let data: Vec<f32> = img
            .into_raw()
            .into_iter()
            .map(|v| (v as f32 - 127.5) / 127.5)
            .collect();
        // HWC → (T, 3, w, w)
        Ok(Tensor::from_vec(data, (t, w, w, 3), &Device::Cpu)?
            .permute((0, 3, 1, 2))?
            .contiguous()?)
    }

    /// `(T, 448, 448)` u8 label maps from `labels.png`, if present.
    pub fn labels(&self) -> Result<Option<Tensor>> {
        let p = self.dir.join("labels.png");
        if !p.is_file() {
            return Ok(None);
        }
        let img = image::open(p)?.to_luma8();
        let (w, h) = img.dimensions();
        let (w, h) = (w as usize, h as usize);
        Ok(Some(Tensor::from_vec(
            img.into_raw(),
            (h / w, w, w),
            &Device::Cpu,
        )?))
    }
}

/// Error statistics of `got` against `want` (same element count).
#[derive(Debug, Clone, Copy)]
pub struct Diff {
    pub max_abs: f32,
    /// max |Δ| / max |want|.
    pub rel: f32,
    /// Smallest cosine similarity over the rows (last axis).
    pub min_cos: f32,
    /// Mean cosine similarity over the rows.
    pub mean_cos: f32,
}

pub fn diff(got: &Tensor, want: &Tensor) -> Result<Diff> {
    let g = got.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let w = want.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    anyhow::ensure!(
        g.len() == w.len(),
        "size mismatch {:?} vs {:?}",
        got.dims(),
        want.dims()
    );
    let row = *want.dims().last().unwrap_or(&1);
    let mut max_abs = 0f32;
    let mut scale = 0f32;
    for (a, b) in g.iter().zip(&w) {
        max_abs = max_abs.max((a - b).abs());
        scale = scale.max(b.abs());
    }
    let mut min_cos = 1f32;
    let (mut sum_cos, mut rows) = (0f64, 0usize);
    for (ga, wa) in g.chunks(row).zip(w.chunks(row)) {
        let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
        for (a, b) in ga.iter().zip(wa) {
            dot += (*a as f64) * (*b as f64);
            na += (*a as f64).powi(2);
            nb += (*b as f64).powi(2);
        }
        if na > 0.0 && nb > 0.0 {
            let c = dot / (na.sqrt() * nb.sqrt());
            min_cos = min_cos.min(c as f32);
            sum_cos += c;
            rows += 1;
        }
    }
    Ok(Diff {
        max_abs,
        rel: if scale > 0.0 {
            max_abs / scale
        } else {
            max_abs
        },
        min_cos,
        mean_cos: if rows > 0 {
            (sum_cos / rows as f64) as f32
        } else {
            1.0
        },
    })
}
