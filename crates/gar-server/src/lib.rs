//! gar-server: `gar serve`. An HTTP API over one GAR engine (and optionally SAM):
//! `/v1/describe`, `/v1/segment`, OpenAI-compatible `/v1/chat/completions`, health, metrics,
//! an OpenAPI description and a small offline web demo.
//!
//! The models live on dedicated threads ([`worker`]); the async side only parses, queues and
//! streams, so a slow generation never blocks the HTTP runtime.

pub mod error;
pub mod metrics;
mod prepare;
mod routes;
mod sse;
pub mod wire;
pub mod worker;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gar_engine::EngineOptions;
use gar_processor::LoadOptions;

pub use routes::router;

/// Everything `gar serve` is configured with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Name reported by `/v1/models` (the `--model` argument as given).
    pub model_id: String,
    pub model_dir: PathBuf,
    pub engine: EngineOptions,
    pub sam_dir: Option<PathBuf>,
    pub limits: Limits,
}

/// Per-request limits and access control.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Generation jobs that may wait behind the running one before new ones get 429.
    pub queue_size: usize,
    /// Required `Authorization: Bearer` token for `/v1/*` and `/metrics`.
    pub api_key: Option<String>,
    /// Largest request body in bytes.
    pub body_limit: usize,
    /// Time allowed to read a request body.
    pub body_timeout: Duration,
    /// Time allowed for one generation, queue wait included.
    pub request_timeout: Duration,
    /// Largest accepted `max_new_tokens`.
    pub max_new_tokens: usize,
    /// Image decoding options (pixel limit against decompression bombs, EXIF).
    pub load: LoadOptions,
    /// Most images one chat request may carry.
    pub max_images: usize,
    /// Tile budget of a request with several images: every image costs up to `1 + max_tiles`
    /// tiles of 256 prompt tokens each.
    pub max_request_tiles: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            queue_size: 8,
            api_key: None,
            body_limit: 32 << 20,
            body_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(600),
            max_new_tokens: 4096,
            load: LoadOptions {
                max_pixels: 64 << 20,
                ..LoadOptions::default()
            },
            max_images: 8,
            // 40 tiles = 10240 image tokens: fits GAR-1B's 11520 positions with room for text.
            max_request_tiles: 40,
        }
    }
}

/// Shared by every handler.
pub struct AppState {
    pub workers: worker::Workers,
    pub metrics: Arc<metrics::Metrics>,
    pub limits: Limits,
}

/// Loads the models (blocking: call before starting to accept connections).
pub fn build(config: ServerConfig) -> Result<Arc<AppState>, String> {
    let metrics = Arc::new(metrics::Metrics::default());
    let workers = worker::Workers::start(
        worker::WorkerConfig {
            model_id: config.model_id,
            model_dir: config.model_dir,
            engine: config.engine,
            sam_dir: config.sam_dir,
            queue_size: config.limits.queue_size,
        },
        metrics.clone(),
    )?;
    Ok(Arc::new(AppState {
        workers,
        metrics,
        limits: config.limits,
    }))
}

/// Serves until `shutdown` resolves; in-flight requests are allowed to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
