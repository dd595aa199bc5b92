//! User-facing prompts in original-image pixel coordinates: points (positive/negative), one box,
//! or both; scribbles become points. Also the text forms the CLI accepts (`x,y[,label]`,
//! `x1,y1,x2,y2`, `x,y;x,y;…`).
//!
//! Scribbles: a polyline is turned into [`SCRIBBLE_POINTS`] positive points spaced evenly by arc
//! length, both ends included. SAM was trained on clicks (one to a handful of points per mask), so a
//! few points spread over the stroke carry what the stroke says ("this is all one object") without
//! leaving the prompt distribution; a box around the stroke would instead claim the stroke's extent
//! as the object's, wrong for a diagonal or partial stroke.

use std::str::FromStr;

use crate::error::{Result, SamError};

/// How many points a scribble becomes.
pub const SCRIBBLE_POINTS: usize = 5;

/// One click. `positive` = label 1 (foreground), otherwise label 0 (background).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub x: f64,
    pub y: f64,
    pub positive: bool,
}

/// A box `[x1, y1, x2, y2]` in pixels, top-left and bottom-right corners.
pub type BoxXyxy = [f64; 4];

/// What SAM is asked to segment. At least one point or a box.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prompt {
    pub points: Vec<Point>,
    pub bbox: Option<BoxXyxy>,
}

impl Prompt {
    pub fn point(x: f64, y: f64) -> Self {
        Self {
            points: vec![Point {
                x,
                y,
                positive: true,
            }],
            bbox: None,
        }
    }

    pub fn with_box(mut self, b: BoxXyxy) -> Self {
        self.bbox = Some(b);
        self
    }

    /// Positive points sampled along a polyline (see the module docs).
    pub fn scribble(polyline: &[(f64, f64)]) -> Result<Self> {
        Ok(Self {
            points: scribble_points(polyline, SCRIBBLE_POINTS)?
                .into_iter()
                .map(|(x, y)| Point {
                    x,
                    y,
                    positive: true,
                })
                .collect(),
            bbox: None,
        })
    }

    /// Checks the prompt against an image of `width × height` pixels. Points must lie on a pixel
    /// (`0 ≤ x < width`), box corners within the image edges (`0 ≤ x ≤ width`) with `x1 < x2`, `y1 < y2`.
    pub fn validate(&self, width: usize, height: usize) -> Result<()> {
        if self.points.is_empty() && self.bbox.is_none() {
            return Err(SamError::Prompt("give at least one point or a box".into()));
        }
        let (w, h) = (width as f64, height as f64);
        for p in &self.points {
            if !(p.x.is_finite()
                && p.y.is_finite()
                && p.x >= 0.0
                && p.y >= 0.0
                && p.x < w
                && p.y < h)
            {
                return Err(SamError::Prompt(format!(
                    "point ({}, {}) is outside the {width}×{height} image",
                    p.x, p.y
                )));
            }
        }
        if let Some([x1, y1, x2, y2]) = self.bbox {
            let inside = |v: f64, max: f64| v.is_finite() && (0.0..=max).contains(&v);
            if !(inside(x1, w) && inside(x2, w) && inside(y1, h) && inside(y2, h)) {
                return Err(SamError::Prompt(format!(
                    "box ({x1}, {y1}, {x2}, {y2}) is outside the {width}×{height} image"
                )));
            }
            if x1 >= x2 || y1 >= y2 {
                return Err(SamError::Prompt(format!(
                    "box ({x1}, {y1}, {x2}, {y2}) must have x1 < x2 and y1 < y2"
                )));
            }
        }
        Ok(())
    }
}

/// `count` points evenly spaced by arc length along `polyline`, both ends included. A single vertex
/// or a zero-length line gives that one point.
pub fn scribble_points(polyline: &[(f64, f64)], count: usize) -> Result<Vec<(f64, f64)>> {
    let first = *polyline
        .first()
        .ok_or_else(|| SamError::Prompt("a scribble needs at least one point".into()))?;
    let seg: Vec<f64> = polyline
        .windows(2)
        .map(|p| (p[1].0 - p[0].0).hypot(p[1].1 - p[0].1))
        .collect();
    let total: f64 = seg.iter().sum();
    if seg.is_empty() || total == 0.0 || count <= 1 {
        return Ok(vec![first]);
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let target = total * i as f64 / (count - 1) as f64;
        let (mut j, mut acc) = (0, 0.0);
        while j < seg.len() - 1 && acc + seg[j] < target {
            acc += seg[j];
            j += 1;
        }
        let t = if seg[j] == 0.0 {
            0.0
        } else {
            ((target - acc) / seg[j]).clamp(0.0, 1.0)
        };
        let (a, b) = (polyline[j], polyline[j + 1]);
        out.push((a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1)));
    }
    Ok(out)
}

fn numbers(s: &str, sep: char, what: &str, form: &str) -> Result<Vec<f64>> {
    s.split(sep)
        .map(|v| {
            let v = v.trim();
            v.parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .ok_or_else(|| SamError::Prompt(format!("malformed {what} '{s}': expected {form}")))
        })
        .collect()
}

impl FromStr for Point {
    type Err = SamError;

    /// `x,y` (positive) or `x,y,label` with label 1 (foreground) or 0 (background).
    fn from_str(s: &str) -> Result<Self> {
        let form = "x,y or x,y,label with label 1 (foreground) or 0 (background)";
        let v = numbers(s, ',', "point", form)?;
        let positive = match v.as_slice() {
            [_, _] => true,
            [_, _, l] if *l == 1.0 => true,
            [_, _, l] if *l == 0.0 => false,
            _ => {
                return Err(SamError::Prompt(format!(
                    "malformed point '{s}': expected {form}"
                )))
            }
        };
        Ok(Point {
            x: v[0],
            y: v[1],
            positive,
        })
    }
}

/// Parses `x1,y1,x2,y2`.
pub fn parse_box(s: &str) -> Result<BoxXyxy> {
    let v = numbers(s, ',', "box", "x1,y1,x2,y2")?;
    match v.as_slice() {
        [a, b, c, d] => Ok([*a, *b, *c, *d]),
        _ => Err(SamError::Prompt(format!(
            "malformed box '{s}': expected x1,y1,x2,y2"
        ))),
    }
}

/// Parses `x,y;x,y;…` into a polyline.
pub fn parse_polyline(s: &str) -> Result<Vec<(f64, f64)>> {
    s.split(';')
        .filter(|p| !p.trim().is_empty())
        .map(
            |p| match numbers(p, ',', "scribble vertex", "x,y;x,y;…")?.as_slice() {
                [x, y] => Ok((*x, *y)),
                _ => Err(SamError::Prompt(format!(
                    "malformed scribble '{s}': expected x,y;x,y;…"
                ))),
            },
        )
        .collect::<Result<Vec<_>>>()
        .and_then(|v| {
            if v.is_empty() {
                Err(SamError::Prompt("empty scribble".into()))
            } else {
                Ok(v)
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_parse_with_optional_label() {
        let p: Point = "10,20".parse().unwrap();
        assert!(p.positive && p.x == 10.0 && p.y == 20.0);
        let p: Point = " 1.5 , 2 ,0".parse().unwrap();
        assert!(!p.positive && p.x == 1.5);
        for bad in ["10", "10,x", "1,2,3", "1,2,0.5", "1,2,1,1", "", "nan,1"] {
            assert!(bad.parse::<Point>().is_err(), "{bad}");
        }
    }

    #[test]
    fn boxes_and_scribbles_parse() {
        assert_eq!(parse_box("1,2,3,4").unwrap(), [1.0, 2.0, 3.0, 4.0]);
        assert!(parse_box("1,2,3").is_err());
        assert_eq!(
            parse_polyline("0,0; 10,0;").unwrap(),
            vec![(0.0, 0.0), (10.0, 0.0)]
        );
        assert!(parse_polyline("0,0;1").is_err());
        assert!(parse_polyline(";").is_err());
    }

    #[test]
    fn scribble_points_are_evenly_spaced_by_arc_length() {
        // An L of total length 20: points at 0, 5, 10, 15, 20 along it.
        let pts = scribble_points(&[(0.0, 0.0), (10.0, 0.0), (10.0, 10.0)], 5).unwrap();
        assert_eq!(
            pts,
            vec![
                (0.0, 0.0),
                (5.0, 0.0),
                (10.0, 0.0),
                (10.0, 5.0),
                (10.0, 10.0)
            ]
        );
        assert_eq!(scribble_points(&[(3.0, 4.0)], 5).unwrap(), vec![(3.0, 4.0)]);
        assert_eq!(
            scribble_points(&[(3.0, 4.0), (3.0, 4.0)], 5).unwrap(),
            vec![(3.0, 4.0)]
        );
        assert!(scribble_points(&[], 5).is_err());
    }

    #[test]
    fn validation_names_the_problem() {
        let ok = Prompt::point(9.5, 0.0);
        ok.validate(10, 10).unwrap();
        let err = Prompt::point(10.0, 3.0).validate(10, 10).unwrap_err();
        assert!(err.to_string().contains("outside"), "{err}");
        assert!(Prompt::default().validate(10, 10).is_err());
        let b = Prompt::default().with_box([0.0, 0.0, 10.0, 10.0]);
        b.validate(10, 10).unwrap();
        let flipped = Prompt::default().with_box([5.0, 0.0, 1.0, 10.0]);
        assert!(flipped.validate(10, 10).is_err());
    }
}
