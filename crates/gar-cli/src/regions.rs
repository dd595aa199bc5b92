//! Region flags of describe / ask / chat / inspect, kept in the order the user typed them:
//! region i of the command line becomes `<Prompt{i}>` for `ask`, so `--mask a.png --box …`
//! must not be regrouped by flag name.

use anyhow::{bail, Context, Result};
use clap::ArgMatches;
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
}

/// Clap argument ids of the region flags (`--box` is stored under the field name `boxes`).
pub const REGION_FLAGS: &[&str] = &["mask", "rle", "polygon", "boxes"];

/// Collects every region flag's values, ordered by their position on the command line.
pub fn regions_in_order(matches: &ArgMatches) -> Result<Vec<RegionSpec>> {
    let mut found: Vec<(usize, RegionSpec)> = Vec::new();
    for &flag in REGION_FLAGS {
        let (Some(values), Some(indices)) = (matches.get_raw(flag), matches.indices_of(flag))
        else {
            continue;
        };
        for (value, index) in values.zip(indices) {
            let value = value.to_string_lossy();
            let name = if flag == "boxes" { "box" } else { flag };
            let spec = parse_region(flag, &value).with_context(|| format!("--{name} {value}"))?;
            found.push((index, spec));
        }
    }
    found.sort_by_key(|(index, _)| *index);
    Ok(found.into_iter().map(|(_, spec)| spec).collect())
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
