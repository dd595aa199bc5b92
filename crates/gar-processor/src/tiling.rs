//! Tile-grid selection of `PerceptionLMImageProcessorFast` (gar-spec §6.2), with Python's f64 arithmetic and
//! its tie-breaking (dict insertion order, `min`/`max` keeping the first extreme, `>=` letting later
//! canvases win).

/// Candidate grids `(ncw, nch)` grouped by aspect ratio `ncw / nch`, groups in first-seen order
/// (`_find_supported_aspect_ratios`): for n = M down to 1, for each divisor f of n ascending, (f, n / f).
pub fn supported_aspect_ratios(max_num_tiles: usize) -> Vec<(f64, Vec<(u32, u32)>)> {
    let mut groups: Vec<(f64, Vec<(u32, u32)>)> = Vec::new();
    for n in (1..=max_num_tiles as u32).rev() {
        for f in (1..=n).filter(|f| n % f == 0) {
            let ratio = (f, n / f);
            // Equal rationals give bit-equal quotients (IEEE division is correctly rounded), so float
            // equality is the dict-key equality Python uses.
            let key = f as f64 / (n / f) as f64;
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => v.push(ratio),
                None => groups.push((key, vec![ratio])),
            }
        }
    }
    groups
}

/// `(ncw, nch)` for an image of `width × height` with at most `max_num_tiles` grid tiles of `tile_size`.
/// `max_num_tiles <= 1` gives the single tile (1, 1), as the processor's `resize` does.
pub fn select_grid(width: u32, height: u32, tile_size: u32, max_num_tiles: usize) -> (u32, u32) {
    if max_num_tiles <= 1 || width == 0 || height == 0 {
        return (1, 1);
    }
    let groups = supported_aspect_ratios(max_num_tiles);
    fit_image_to_canvas(width, height, tile_size, &groups)
        .unwrap_or_else(|| closest_aspect_ratio(width, height, &groups))
}

/// Size of the image scaled to fit a canvas, aspect ratio kept (`_get_image_height_width`). Python mixes
/// a float and a floored int in the pair; both are exact in f64.
fn scaled_size(w: u32, h: u32, canvas_w: u64, canvas_h: u64) -> (f64, f64) {
    let (w, h) = (w as f64, h as f64);
    let scale = w / h;
    let factor = f64::min(canvas_w as f64 / w, canvas_h as f64 / h);
    if scale > 1.0 {
        let new_w = factor * w;
        (new_w, (new_w / scale).floor())
    } else {
        let new_h = factor * h;
        ((new_h * scale).floor(), new_h)
    }
}

/// `_fit_image_to_canvas`: the canvas that holds the image without downsampling and makes its shorter
/// side largest; later candidates win ties.
fn fit_image_to_canvas(
    width: u32,
    height: u32,
    tile_size: u32,
    groups: &[(f64, Vec<(u32, u32)>)],
) -> Option<(u32, u32)> {
    let scale = width as f64 / height as f64;
    let mut best: Option<((u32, u32), (f64, f64))> = None;
    for &(nw, nh) in groups.iter().flat_map(|(_, v)| v) {
        let (cw, ch) = (nw as u64 * tile_size as u64, nh as u64 * tile_size as u64);
        if cw < width as u64 || ch < height as u64 {
            continue;
        }
        let size = scaled_size(width, height, cw, ch);
        let better = match best {
            None => true,
            Some((_, b)) => (scale < 1.0 && size.0 >= b.0) || (scale >= 1.0 && size.1 >= b.1),
        };
        if better {
            best = Some(((nw, nh), size));
        }
    }
    best.map(|(grid, _)| grid)
}

/// `_find_closest_aspect_ratio`: used when no canvas holds the image (it will be downsampled).
fn closest_aspect_ratio(width: u32, height: u32, groups: &[(f64, Vec<(u32, u32)>)]) -> (u32, u32) {
    let target = width as f64 / height as f64;
    // Python's min/max return the first extreme element in iteration order: only a strictly better
    // candidate replaces the incumbent.
    let first_min = |dist: &dyn Fn(f64) -> f64, keep: &dyn Fn(f64) -> bool| {
        let mut best: Option<(f64, &Vec<(u32, u32)>)> = None;
        for (k, v) in groups.iter().filter(|(k, _)| keep(*k)) {
            let d = dist(*k);
            if best.is_none_or(|(bd, _)| d < bd) {
                best = Some((d, v));
            }
        }
        best.map(|(_, v)| v)
    };
    let first_max = |v: &Vec<(u32, u32)>, key: &dyn Fn(&(u32, u32)) -> u32| {
        let mut best = v[0];
        for r in &v[1..] {
            if key(r) > key(&best) {
                best = *r;
            }
        }
        best
    };
    if target >= 1.0 {
        // Key 1.0 always exists and is <= target.
        first_min(&|k| (k - target).abs(), &|k| k <= target)
            .map_or((1, 1), |v| first_max(v, &|r| r.0))
    } else {
        first_min(&|k| (1.0 / k - 1.0 / target).abs(), &|k| k > target)
            .map_or((1, 1), |v| first_max(v, &|r| r.1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_examples() {
        let cases: &[(u32, u32, usize, (u32, u32))] = &[
            (640, 480, 8, (3, 2)),
            (480, 640, 8, (2, 3)),
            (1920, 1080, 8, (3, 2)),
            (448, 448, 8, (2, 2)),
            (896, 448, 8, (4, 2)),
            (4000, 3000, 8, (2, 2)),
            (100, 1000, 8, (1, 8)),
            (6000, 1000, 8, (6, 1)),
            (640, 480, 16, (4, 3)),
            (1920, 1080, 16, (5, 3)),
            (448, 448, 16, (4, 4)),
            (4000, 3000, 16, (4, 3)),
            (3000, 4000, 16, (4, 4)),
            (640, 480, 36, (7, 5)),
            (1920, 1080, 36, (8, 4)),
            (448, 448, 36, (6, 6)),
        ];
        for &(w, h, m, want) in cases {
            assert_eq!(select_grid(w, h, 448, m), want, "{w}x{h} M={m}");
        }
    }

    #[test]
    fn aspect_ratio_groups_keep_first_seen_order() {
        // The docstring example of `_find_supported_aspect_ratios` for num_tiles = 5.
        let g = supported_aspect_ratios(5);
        let keys: Vec<f64> = g.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            vec![0.2, 5.0, 0.25, 1.0, 4.0, 1.0 / 3.0, 3.0, 0.5, 2.0]
        );
        assert_eq!(g[3].1, vec![(2, 2), (1, 1)]);
    }

    #[test]
    fn single_tile_when_max_is_one() {
        assert_eq!(select_grid(5000, 100, 448, 1), (1, 1));
        assert_eq!(select_grid(5000, 100, 448, 0), (1, 1));
    }
}
