//! Region flags of describe / ask / chat / inspect, kept in the order the user typed them:
//! region i of the command line becomes `<Prompt{i}>` for `ask`, so `--mask a.png --box …`
//! must not be regrouped by flag name.
//!
//! SAM prompts group into regions by position (each group is segmented by SAM into one mask):
//! * every `--box-sam` starts a region, and so does every `--scribble`;
//! * a run of `--point`s directly after a `--box-sam` or `--scribble` (no other region flag in
//!   between) adds its clicks to that region (box + points, as SAM takes them together);
//! * any other run of consecutive `--point`s is one region of its own.
//!
//! So `--point 10,10 --point 40,12,0 --mask m.png --box-sam 0,0,50,50 --point 20,20` is three
//! regions: two clicks, the mask, and the box refined by one click.

use anyhow::{bail, Context, Result};
use clap::ArgMatches;
use gar_sam::{Point, Prompt as SamPrompt};
use std::path::PathBuf;

/// One region as given on the command line, before any file is read.
#[derive(Debug, Clone, PartialEq)]
pub enum RegionSpec {
    /// A binary mask image (any mode; non-zero = inside).
    Mask(PathBuf),
    /// COCO RLE: a JSON file, or inline JSON `{"size": [h, w], "counts": …}`.
    Rle(String),
    /// A polygon `x,y;x,y;…` in image pixels.
    Polygon(Vec<[f64; 2]>),
    /// A box `x1,y1,x2,y2` in image pixels, used as a filled rectangle.
    Box([f64; 4]),
    /// Clicks and/or a box that SAM turns into a mask first.
    Sam(SamPrompt),
}

/// Clap argument ids of the region flags (`--box` is stored under the field name `boxes`,
/// `--box-sam` under `box_sam`).
pub const REGION_FLAGS: &[&str] = &[
    "mask", "rle", "polygon", "boxes", "point", "box_sam", "scribble",
];

/// Collects every region flag's values, ordered by their position on the command line, and
/// groups SAM prompts into regions (see the module docs).
pub fn regions_in_order(matches: &ArgMatches) -> Result<Vec<RegionSpec>> {
    let mut found: Vec<(usize, &str, String)> = Vec::new();
    for &flag in REGION_FLAGS {
        let (Some(values), Some(indices)) = (matches.get_raw(flag), matches.indices_of(flag))
        else {
            continue;
        };
        for (value, index) in values.zip(indices) {
            found.push((index, flag, value.to_string_lossy().into_owned()));
        }
    }
    found.sort_by_key(|(index, _, _)| *index);
    let mut specs: Vec<RegionSpec> = Vec::new();
    // Whether the last region may still take clicks: a box-sam/scribble region or a point run.
    let mut open_sam = false;
    for (_, flag, value) in found {
        let name = match flag {
            "boxes" => "box",
            "box_sam" => "box-sam",
            other => other,
        };
        let context = || format!("--{name} {value}");
        match flag {
            "point" => {
                let point: Point = value.parse().with_context(context)?;
                match specs.last_mut() {
                    Some(RegionSpec::Sam(prompt)) if open_sam => prompt.points.push(point),
                    _ => specs.push(RegionSpec::Sam(SamPrompt {
                        points: vec![point],
                        bbox: None,
                    })),
                }
                open_sam = true;
            }
            "box_sam" => {
                let bbox = parse_box(&value).with_context(context)?;
                specs.push(RegionSpec::Sam(SamPrompt::default().with_box(bbox)));
                open_sam = true;
            }
            "scribble" => {
                let line = gar_sam::prompt::parse_polyline(&value).with_context(context)?;
                specs.push(RegionSpec::Sam(
                    SamPrompt::scribble(&line).with_context(context)?,
                ));
                open_sam = true;
            }
            _ => {
                specs.push(parse_region(flag, &value).with_context(context)?);
                open_sam = false;
            }
        }
    }
    Ok(specs)
}

fn parse_region(flag: &str, value: &str) -> Result<RegionSpec> {
    Ok(match flag {
        "mask" => RegionSpec::Mask(PathBuf::from(value)),
        "rle" => RegionSpec::Rle(value.to_string()),
        "polygon" => RegionSpec::Polygon(parse_points(value)?),
        "boxes" => RegionSpec::Box(parse_box(value)?),
        other => bail!("unknown region flag --{other}"),
    })
}

/// Parses `x1,y1,x2,y2` (pixels; x2 > x1, y2 > y1).
pub fn parse_box(value: &str) -> Result<[f64; 4]> {
    let numbers = parse_numbers(value, ',')?;
    let [x1, y1, x2, y2] = numbers[..] else {
        bail!(
            "a box needs four numbers x1,y1,x2,y2, got {}",
            numbers.len()
        );
    };
    if x2 <= x1 || y2 <= y1 {
        bail!("a box needs x2 > x1 and y2 > y1");
    }
    Ok([x1, y1, x2, y2])
}

/// Parses `x,y;x,y;…` (also accepts a flat `x,y,x,y,…` list).
pub fn parse_points(value: &str) -> Result<Vec<[f64; 2]>> {
    let flat: Vec<f64> = if value.contains(';') {
        let mut out = Vec::new();
        for pair in value.split(';').filter(|p| !p.trim().is_empty()) {
            let xy = parse_numbers(pair, ',')?;
            if xy.len() != 2 {
                bail!("each point needs two numbers x,y, got '{pair}'");
            }
            out.extend(xy);
        }
        out
    } else {
        parse_numbers(value, ',')?
    };
    if !flat.len().is_multiple_of(2) || flat.len() < 6 {
        bail!("a polygon needs at least three x,y points");
    }
    Ok(flat.chunks(2).map(|c| [c[0], c[1]]).collect())
}

fn parse_numbers(value: &str, sep: char) -> Result<Vec<f64>> {
    value
        .split(sep)
        .map(|s| {
            let s = s.trim();
            let n: f64 = s
                .parse()
                .with_context(|| format!("'{s}' is not a number"))?;
            if !n.is_finite() {
                bail!("'{s}' is not a finite number");
            }
            Ok(n)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_and_polygons_parse() {
        assert_eq!(parse_box("1,2,3.5,4").unwrap(), [1.0, 2.0, 3.5, 4.0]);
        assert!(parse_box("1,2,3").is_err());
        assert!(parse_box("3,2,1,4").is_err());
        assert!(parse_box("a,2,3,4").is_err());
        assert_eq!(
            parse_points("0,0;10,0;10,10").unwrap(),
            vec![[0.0, 0.0], [10.0, 0.0], [10.0, 10.0]]
        );
        assert_eq!(parse_points("0,0,10,0,10,10").unwrap().len(), 3);
        assert!(parse_points("0,0;10,0").is_err());
    }
}

#[cfg(test)]
mod grouping_tests {
    use super::*;
    use crate::commands::common_region_args_for_tests as region_command;

    fn specs(args: &[&str]) -> Vec<RegionSpec> {
        let matches = region_command()
            .try_get_matches_from(std::iter::once("t").chain(args.iter().copied()))
            .unwrap();
        regions_in_order(&matches).unwrap()
    }

    fn click(x: f64, y: f64, positive: bool) -> Point {
        Point { x, y, positive }
    }

    #[test]
    fn sam_prompts_group_by_position() {
        let got = specs(&[
            "--point",
            "10,10",
            "--point",
            "40,12,0",
            "--mask",
            "m.png",
            "--box-sam",
            "0,0,50,50",
            "--point",
            "20,20",
            "--scribble",
            "1,1;9,9",
            "--box",
            "1,2,3,4",
            "--point",
            "5,5",
        ]);
        assert_eq!(got.len(), 6);
        assert_eq!(
            got[0],
            RegionSpec::Sam(SamPrompt {
                points: vec![click(10.0, 10.0, true), click(40.0, 12.0, false)],
                bbox: None
            })
        );
        assert_eq!(got[1], RegionSpec::Mask("m.png".into()));
        assert_eq!(
            got[2],
            RegionSpec::Sam(SamPrompt {
                points: vec![click(20.0, 20.0, true)],
                bbox: Some([0.0, 0.0, 50.0, 50.0])
            })
        );
        let RegionSpec::Sam(scribble) = &got[3] else {
            panic!("{:?}", got[3])
        };
        assert_eq!(scribble.points.len(), gar_sam::prompt::SCRIBBLE_POINTS);
        assert_eq!(got[4], RegionSpec::Box([1.0, 2.0, 3.0, 4.0]));
        assert_eq!(
            got[5],
            RegionSpec::Sam(SamPrompt::point(5.0, 5.0)),
            "a click after a plain --box is a region of its own"
        );
    }

    #[test]
    fn malformed_sam_flags_name_the_flag() {
        let matches = region_command()
            .try_get_matches_from(["t", "--point", "1,2,7"])
            .unwrap();
        let err = format!("{:#}", regions_in_order(&matches).unwrap_err());
        assert!(err.contains("--point 1,2,7"), "{err}");
    }
}
