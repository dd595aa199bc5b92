//! Interactive use: image embeddings cached by image content, so the second and later prompts on
//! an image only run the (cheap) prompt encoder and mask decoder.

use std::collections::hash_map::DefaultHasher;
use std::collections::VecDeque;
use std::hash::Hasher;
use std::sync::Arc;

use image::RgbImage;

use crate::error::Result;
use crate::model::{ImageEmbedding, Prediction, Sam};
use crate::postprocess::Mask;
use crate::prompt::Prompt;

/// Content key of an image: its size and a 64-bit hash of its RGB bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ImageKey {
    pub width: u32,
    pub height: u32,
    pub hash: u64,
}

impl ImageKey {
    pub fn of(rgb: &RgbImage) -> Self {
        // SipHash with fixed keys: stable within a process, which is all an in-memory cache needs.
        let mut h = DefaultHasher::new();
        h.write(rgb.as_raw());
        Self {
            width: rgb.width(),
            height: rgb.height(),
            hash: h.finish(),
        }
    }
}

/// The result for one prompt: every candidate at image resolution, and the chosen one.
#[derive(Debug, Clone)]
pub struct Segmentation {
    pub masks: Vec<Mask>,
    pub scores: Vec<f32>,
    /// Index of the highest predicted IoU (the reference's choice).
    pub best: usize,
    pub prediction: Prediction,
}

impl Segmentation {
    pub fn mask(&self) -> &Mask {
        &self.masks[self.best]
    }
    pub fn score(&self) -> f32 {
        self.scores[self.best]
    }
}

/// A [`Sam`] with a small least-recently-used cache of image embeddings.
pub struct SamPredictor {
    sam: Sam,
    cache: VecDeque<(ImageKey, Arc<ImageEmbedding>)>,
    capacity: usize,
    encoder_runs: u64,
}

impl SamPredictor {
    /// Keeps the embeddings of the last 4 images.
    pub fn new(sam: Sam) -> Self {
        Self::with_cache_capacity(sam, 4)
    }

    pub fn with_cache_capacity(sam: Sam, capacity: usize) -> Self {
        Self {
            sam,
            cache: VecDeque::new(),
            capacity: capacity.max(1),
            encoder_runs: 0,
        }
    }

    pub fn sam(&self) -> &Sam {
        &self.sam
    }

    /// How many times the image encoder has run (the cache's hit/miss witness).
    pub fn encoder_runs(&self) -> u64 {
        self.encoder_runs
    }

    pub fn clear_cache(&mut self) {
        self.cache.clear();
    }

    /// The embedding of `rgb`, from the cache when this exact image was seen recently.
    pub fn embedding(&mut self, rgb: &RgbImage) -> Result<Arc<ImageEmbedding>> {
        let key = ImageKey::of(rgb);
        if let Some(pos) = self.cache.iter().position(|(k, _)| *k == key) {
            let entry = self.cache.remove(pos).expect("position is in range");
            let emb = entry.1.clone();
            self.cache.push_front(entry);
            return Ok(emb);
        }
        let emb = Arc::new(self.sam.embed(rgb)?);
        self.encoder_runs += 1;
        self.cache.push_front((key, emb.clone()));
        self.cache.truncate(self.capacity);
        Ok(emb)
    }

    /// Segments `prompt` on `rgb`: cached embedding, decode, post-process all candidates.
    pub fn segment(&mut self, rgb: &RgbImage, prompt: &Prompt) -> Result<Segmentation> {
        let emb = self.embedding(rgb)?;
        let prediction = self.sam.decode(&emb, prompt)?;
        let masks = (0..prediction.scores.len())
            .map(|i| self.sam.mask(&emb, &prediction, i))
            .collect::<Result<Vec<_>>>()?;
        Ok(Segmentation {
            masks,
            scores: prediction.scores.clone(),
            best: prediction.best(),
            prediction,
        })
    }
}
