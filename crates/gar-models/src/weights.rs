//! Checkpoint access: memory-mapped safetensors (one file or HF-sharded with `model.safetensors.index.json`) or
//! an in-memory tensor map (GGUF import, tests), exposed as a candle `VarBuilder` whose lookups check names and
//! shapes and fail with a [`WeightError`] naming the offending tensor.
//!
//! Stored dtypes (bf16/f16/f32) are converted to the requested compute dtype on load.
//!
//! Each tensor is copied out of the mapping and its pages are then released from this process (`MADV_DONTNEED`
//! on a read-only file mapping: the page cache keeps them, a later read faults them back in). Without that,
//! every byte of the file ever touched stays counted in the resident set next to the converted weights, so
//! the peak RSS of a load was file size + model size (8.8 GB instead of 6 GB for GAR-1B in f32, and the whole
//! bf16 file on top of a quantized model).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use memmap2::{Mmap, UncheckedAdvice};
use safetensors::{Dtype, SafeTensors};

use crate::error::{LoadError, WeightError};

/// File names HF uses for single-file and sharded checkpoints.
pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

enum Source {
    Mmaped {
        files: Vec<Mmap>,
        entries: HashMap<String, Entry>,
    },
    Tensors(HashMap<String, Tensor>),
}

/// Where one tensor's bytes sit: file index and absolute byte range within that file's mapping.
struct Entry {
    file: usize,
    /// `Err(stored dtype name)` for dtypes candle cannot hold: reported when the tensor is requested, so
    /// a checkpoint carrying some unusual extra tensor still loads.
    dtype: Result<DType, String>,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

fn candle_dtype(dtype: Dtype) -> Option<DType> {
    Some(match dtype {
        Dtype::BF16 => DType::BF16,
        Dtype::F16 => DType::F16,
        Dtype::F32 => DType::F32,
        Dtype::F64 => DType::F64,
        Dtype::U8 => DType::U8,
        Dtype::U32 => DType::U32,
        Dtype::I16 => DType::I16,
        Dtype::I32 => DType::I32,
        Dtype::I64 => DType::I64,
        _ => return None,
    })
}

/// Maps `path` and indexes its tensors into `entries` (a later file overrides an earlier one's names).
fn index_file(
    path: &Path,
    file: usize,
    entries: &mut HashMap<String, Entry>,
) -> Result<Mmap, LoadError> {
    let f = std::fs::File::open(path).map_err(|e| files_err(path, e))?;
    // SAFETY: the file is mapped read-only; as with every mmap-based loader, it must not be truncated or
    // rewritten while the model is alive.
    let mmap = unsafe { Mmap::map(&f) }.map_err(|e| files_err(path, e))?;
    let (header_len, meta) = SafeTensors::read_metadata(&mmap).map_err(|e| files_err(path, e))?;
    // `read_metadata` validated that every tensor's range lies inside the data section.
    let data_start = 8 + header_len;
    for (name, info) in meta.tensors() {
        let dtype = candle_dtype(info.dtype).ok_or_else(|| format!("{:?}", info.dtype));
        let (a, b) = info.data_offsets;
        entries.insert(
            name,
            Entry {
                file,
                dtype,
                shape: info.shape.clone(),
                start: data_start + a,
                end: data_start + b,
            },
        );
    }
    Ok(mmap)
}

/// Drops the whole pages of `mmap[start..end]` from this process's resident set.
fn release_pages(mmap: &Mmap, start: usize, end: usize) {
    const PAGE: usize = 4096;
    let first = start.div_ceil(PAGE) * PAGE;
    let last = end / PAGE * PAGE;
    if last > first {
        // SAFETY: the mapping is read-only and file-backed, so discarding its pages loses nothing: the next
        // access reads the file again. Failure only means the pages stay resident.
        let _ =
            unsafe { mmap.unchecked_advise_range(UncheckedAdvice::DontNeed, first, last - first) };
    }
}

/// Little-endian bf16 or f16 values to f32, in parallel chunks (exact: both widen without rounding).
fn widen_to_f32(bytes: &[u8], stored: DType) -> Vec<f32> {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 16;
    let mut out = vec![0f32; bytes.len() / 2];
    out.par_chunks_mut(CHUNK)
        .zip(bytes.par_chunks(2 * CHUNK))
        .for_each(|(out, bytes)| {
            let bits = bytes
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]));
            match stored {
                DType::BF16 => {
                    for (o, b) in out.iter_mut().zip(bits) {
                        *o = f32::from_bits(u32::from(b) << 16);
                    }
                }
                _ => {
                    for (o, b) in out.iter_mut().zip(bits) {
                        *o = half::f16::from_bits(b).to_f32();
                    }
                }
            }
        });
    out
}

/// A set of named tensors plus a description for error messages.
pub struct Checkpoint {
    source: Source,
    desc: String,
    first_error: Mutex<Option<WeightError>>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Checkpoint({})", self.desc)
    }
}

fn files_err(path: &Path, message: impl std::fmt::Display) -> LoadError {
    LoadError::Files {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

impl Checkpoint {
    /// Opens `dir/model.safetensors`, or the shards listed in `dir/model.safetensors.index.json`.
    pub fn open_dir(dir: impl AsRef<Path>) -> Result<Self, LoadError> {
        let dir = dir.as_ref();
        let index = dir.join(INDEX_FILE);
        let single = dir.join(SINGLE_FILE);
        if index.is_file() {
            let text = std::fs::read_to_string(&index).map_err(|e| files_err(&index, e))?;
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| files_err(&index, e))?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| files_err(&index, "no \"weight_map\" object"))?;
            let shards: BTreeSet<&str> = map.values().filter_map(|v| v.as_str()).collect();
            let paths: Vec<PathBuf> = shards.iter().map(|s| dir.join(s)).collect();
            Self::open_files(&paths)
        } else if single.is_file() {
            Self::open_files(&[single])
        } else {
            Err(files_err(
                dir,
                format!("neither {SINGLE_FILE} nor {INDEX_FILE} found"),
            ))
        }
    }

    /// Memory-maps the given safetensors files (a tensor present in several files comes from the last).
    pub fn open_files(paths: &[PathBuf]) -> Result<Self, LoadError> {
        for p in paths {
            if !p.is_file() {
                return Err(files_err(p, "file not found"));
            }
        }
        let mut entries = HashMap::new();
        let files = paths
            .iter()
            .enumerate()
            .map(|(i, p)| index_file(p, i, &mut entries))
            .collect::<Result<Vec<_>, _>>()?;
        let desc = paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        Ok(Self {
            source: Source::Mmaped { files, entries },
            desc,
            first_error: Mutex::new(None),
        })
    }

    /// Wraps tensors already in memory (e.g. dequantized GGUF weights).
    pub fn from_tensors(tensors: HashMap<String, Tensor>, desc: impl Into<String>) -> Self {
        Self {
            source: Source::Tensors(tensors),
            desc: desc.into(),
            first_error: Mutex::new(None),
        }
    }

    pub fn description(&self) -> &str {
        &self.desc
    }

    pub fn contains(&self, name: &str) -> bool {
        self.shape_of(name).is_some()
    }

    /// Stored shape of a tensor, if present.
    pub fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        match &self.source {
            Source::Mmaped { entries, .. } => entries.get(name).map(|e| e.shape.clone()),
            Source::Tensors(map) => map.get(name).map(|t| t.dims().to_vec()),
        }
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = match &self.source {
            Source::Mmaped { entries, .. } => entries.keys().cloned().collect(),
            Source::Tensors(map) => map.keys().cloned().collect(),
        };
        names.sort();
        names
    }

    /// Loads one tensor as stored (no dtype conversion, no shape check).
    pub fn load_raw(&self, name: &str, device: &Device) -> candle_core::Result<Tensor> {
        match &self.source {
            Source::Mmaped { files, entries } => {
                let e = entries
                    .get(name)
                    .ok_or_else(|| candle_core::Error::CannotFindTensor {
                        path: name.to_string(),
                    })?;
                let dtype = match &e.dtype {
                    Ok(d) => *d,
                    Err(stored) => {
                        candle_core::bail!("tensor {name}: unsupported stored dtype {stored}")
                    }
                };
                let mmap = &files[e.file];
                let t = Tensor::from_raw_buffer(&mmap[e.start..e.end], dtype, &e.shape, device)?;
                release_pages(mmap, e.start, e.end);
                Ok(t)
            }
            Source::Tensors(map) => map
                .get(name)
                .ok_or_else(|| candle_core::Error::CannotFindTensor {
                    path: name.to_string(),
                })?
                .to_device(device),
        }
    }

    /// Loads one tensor converted to `dtype`. A bf16/f16 tensor read as f32 on the CPU is widened straight
    /// from the mapped file on every core (no intermediate copy in the stored dtype, no single-threaded
    /// cast: those two passes were ≈ 40 % of loading GAR-1B); everything else is [`Self::load_raw`] then
    /// `to_dtype`.
    pub fn load_as(
        &self,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        if let (Source::Mmaped { files, entries }, true, DType::F32) =
            (&self.source, device.is_cpu(), dtype)
        {
            if let Some(e) = entries.get(name) {
                if let Ok(stored @ (DType::BF16 | DType::F16)) = e.dtype {
                    let mmap = &files[e.file];
                    let bytes = &mmap[e.start..e.end];
                    let n: usize = e.shape.iter().product();
                    if bytes.len() != 2 * n {
                        candle_core::bail!("tensor {name}: {} bytes for {n} values", bytes.len());
                    }
                    let values = widen_to_f32(bytes, stored);
                    release_pages(mmap, e.start, e.end);
                    return Tensor::from_vec(values, e.shape.as_slice(), device);
                }
            }
        }
        self.load_raw(name, device)?.to_dtype(dtype)
    }

    /// The first name/shape problem met by a `VarBuilder` built on this checkpoint.
    pub fn first_error(&self) -> Option<WeightError> {
        self.first_error.lock().ok().and_then(|e| e.clone())
    }

    fn fail(&self, err: WeightError) -> candle_core::Error {
        if let Ok(mut slot) = self.first_error.lock() {
            slot.get_or_insert_with(|| err.clone());
        }
        candle_core::Error::wrap(err)
    }

    /// A `VarBuilder` over this checkpoint producing tensors of `dtype` on `device`.
    pub fn var_builder(self: &Arc<Self>, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(Backend(self.clone())), dtype, device.clone())
    }
}

/// Maps a construction error to [`LoadError`], preferring the typed weight error the checkpoint recorded.
pub fn load_error(ckpt: &Checkpoint, err: candle_core::Error) -> LoadError {
    match ckpt.first_error() {
        Some(w) => LoadError::Weight(w),
        None => LoadError::Candle(err),
    }
}

struct Backend(Arc<Checkpoint>);

impl SimpleBackend for Backend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let ckpt = &self.0;
        let Some(found) = ckpt.shape_of(name) else {
            return Err(ckpt.fail(WeightError::Missing {
                name: name.to_string(),
                expected: s.dims().to_vec(),
                source_desc: ckpt.desc.clone(),
            }));
        };
        if found != s.dims() {
            return Err(ckpt.fail(WeightError::Shape {
                name: name.to_string(),
                expected: s.dims().to_vec(),
                found,
                source_desc: ckpt.desc.clone(),
            }));
        }
        ckpt.load_as(name, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let ckpt = &self.0;
        if !ckpt.contains(name) {
            return Err(ckpt.fail(WeightError::Missing {
                name: name.to_string(),
                expected: vec![],
                source_desc: ckpt.desc.clone(),
            }));
        }
        ckpt.load_as(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widening_from_the_file_equals_loading_then_casting() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let dir = std::env::temp_dir().join(format!("gar-weights-widen-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        // More values than one conversion chunk (65,536), and an odd count for the last chunk.
        let x = Tensor::randn(0f32, 3., (7, 10_001), &dev)?;
        let tensors: HashMap<String, Tensor> = [
            ("b".to_string(), x.to_dtype(DType::BF16)?),
            ("h".to_string(), x.to_dtype(DType::F16)?),
            ("f".to_string(), x.clone()),
        ]
        .into();
        candle_core::safetensors::save(&tensors, dir.join(SINGLE_FILE))?;
        let ckpt = Checkpoint::open_dir(&dir).map_err(candle_core::Error::wrap)?;
        for name in ["b", "h", "f"] {
            for dtype in [DType::F32, DType::BF16] {
                let want = ckpt.load_raw(name, &dev)?.to_dtype(dtype)?;
                let got = ckpt.load_as(name, dtype, &dev)?;
                assert_eq!((got.dtype(), got.dims()), (dtype, want.dims()));
                let diff = (got.to_dtype(DType::F32)? - want.to_dtype(DType::F32)?)?
                    .abs()?
                    .max_all()?
                    .to_scalar::<f32>()?;
                assert_eq!(diff, 0.0, "{name} as {dtype:?}");
            }
        }
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
