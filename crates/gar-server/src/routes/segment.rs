//! `POST /v1/segment`: clicks / a box / a scribble → SAM mask (the `gar segment` pipeline). The
//! image embedding is cached per image content, so later clicks on the same image are fast.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;

use super::{ApiJson, AppStateRef};
use crate::error::{ApiError, ApiResult};
use crate::prepare::to_image_rgb;
use crate::wire::{decode_base64, decode_rgb, sam_prompt};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentIn {
    image: String,
    /// `[[x, y, label], ...]`, label 1 = foreground (default), 0 = background.
    points: Option<Vec<Vec<f64>>>,
    #[serde(rename = "box")]
    bbox: Option<[f64; 4]>,
    /// A polyline `[[x, y], ...]`; it becomes foreground points along it.
    scribble: Option<Vec<[f64; 2]>>,
    /// `png`, `rle` or `both` (default).
    format: Option<String>,
}

pub async fn segment(
    State(state): State<AppStateRef>,
    ApiJson(body): ApiJson<SegmentIn>,
) -> ApiResult<Json<serde_json::Value>> {
    let format = body.format.as_deref().unwrap_or("both");
    if !matches!(format, "png" | "rle" | "both") {
        return Err(ApiError::bad_request("format must be png, rle or both"));
    }
    if !state.workers.has_sam() {
        return Err(ApiError::bad_request(
            "segmentation needs SAM: start the server with --sam",
        ));
    }
    let prompt = sam_prompt(body.points.as_deref(), body.bbox, body.scribble.as_deref())?;
    let bytes = decode_base64("image", &body.image)?;
    let options = state.limits.load;
    let rgb = tokio::task::spawn_blocking(move || to_image_rgb(&decode_rgb(&bytes, &options)?))
        .await
        .map_err(|_| ApiError::internal("image decoding failed"))??;
    let seg = state.workers.segment(Arc::new(rgb), prompt).await?;
    let mask = &seg.mask;
    let mut out = json!({
        "score": seg.scores[seg.best],
        "scores": seg.scores,
        "best": seg.best,
        "area": mask.area(),
        "width": mask.width,
        "height": mask.height,
        "cached_embedding": seg.cached,
    });
    if format != "rle" {
        let mut png = std::io::Cursor::new(Vec::new());
        mask.to_image()
            .write_to(&mut png, image::ImageFormat::Png)
            .map_err(|e| ApiError::internal(format!("PNG encoding: {e}")))?;
        out["mask"] = json!(base64::engine::general_purpose::STANDARD.encode(png.into_inner()));
    }
    if format != "png" {
        out["rle"] = json!({"size": [mask.height, mask.width], "counts": mask.rle_counts()});
    }
    Ok(Json(out))
}
