//! The visual-prompt label map (gar-spec §8.1) and its trip through the image processor (§8.2).
//!
//! At the image's resolution every pixel gets the label of the region covering it (`<PromptK>` → K; the
//! lowest prompt index wins overlaps) or `prompt_numbers` (`<NO_Prompt>`). The map is then tiled on the
//! image's own grid, resized with NEAREST by default. The bicubic alternative reproduces the training
//! code, which sent the label map through the ordinary bicubic processor; its values are clamped to
//! `prompt_numbers` as the model does when it recovers labels.

use crate::error::Warning;
use crate::region::BinaryMask;
use crate::resize::{resize_bicubic_aa, resize_nearest, Arith};

/// How the label map is resampled onto the tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MaskResample {
    /// torch legacy nearest, what the inference processor is expected to do (default).
    #[default]
    Nearest,
    /// The image's antialiased bicubic (training-time behaviour, gar-spec §8.2 caution).
    Bicubic,
}

/// One region placed in the label map.
pub(crate) struct Placed<'a> {
    pub label: u8,
    pub region: usize,
    pub mask: &'a BinaryMask,
}

/// Label map at the image's resolution (all masks already have its size). Regions are painted in the
/// given order and never overwrite an earlier one.
pub(crate) fn label_map(
    width: u32,
    height: u32,
    placed: &[Placed<'_>],
    background: u8,
    warnings: &mut Vec<Warning>,
) -> Vec<u8> {
    let mut labels = vec![background; width as usize * height as usize];
    let mut taken = vec![false; labels.len()];
    for p in placed {
        let mut overlap = 0u64;
        for ((l, t), &inside) in labels
            .iter_mut()
            .zip(taken.iter_mut())
            .zip(p.mask.as_slice())
        {
            if !inside {
                continue;
            }
            if *t {
                overlap += 1;
            } else {
                *l = p.label;
                *t = true;
            }
        }
        if overlap > 0 {
            warnings.push(Warning::RegionsOverlap {
                region: p.region,
                pixels: overlap,
            });
        }
    }
    labels
}

/// Resizes a one-channel label plane with the chosen kernel and clamps to `max_label`.
pub(crate) fn resize_labels(
    labels: &[u8],
    (in_h, in_w): (usize, usize),
    (out_h, out_w): (usize, usize),
    resample: MaskResample,
    max_label: u8,
    arith: Arith,
) -> Vec<u8> {
    match resample {
        MaskResample::Nearest => resize_nearest(labels, (in_h, in_w), (out_h, out_w)),
        MaskResample::Bicubic => {
            let mut v = resize_bicubic_aa(labels, (in_h, in_w), (out_h, out_w), arith);
            for x in v.iter_mut() {
                *x = (*x).min(max_label);
            }
            v
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_region_wins_and_background_fills() {
        let a = BinaryMask::new(3, 1, vec![true, true, false]).unwrap();
        let b = BinaryMask::new(3, 1, vec![false, true, true]).unwrap();
        let mut warnings = Vec::new();
        let placed = [
            Placed {
                label: 0,
                region: 0,
                mask: &a,
            },
            Placed {
                label: 1,
                region: 1,
                mask: &b,
            },
        ];
        let l = label_map(3, 1, &placed, 5, &mut warnings);
        assert_eq!(l, vec![0, 0, 1]);
        assert_eq!(
            warnings,
            vec![Warning::RegionsOverlap {
                region: 1,
                pixels: 1
            }]
        );
        let l = label_map(3, 1, &[], 5, &mut warnings);
        assert_eq!(l, vec![5, 5, 5]);
    }
}
