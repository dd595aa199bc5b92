//! The threads that own the models. One engine thread owns the GAR [`Engine`] and answers jobs one
//! at a time from a bounded queue (the model is not shared between requests; batching would not
//! pay off on one CPU engine). SAM gets its own thread and queue so that masks stay interactive
//! while a long answer is being generated.

use std::ops::ControlFlow;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gar_engine::{Answer, Engine, EngineOptions};
use gar_models::SamplingConfig;
use gar_processor::{Region, Request, RgbImage};
use gar_sam::{Sam, SamError, SamPredictor};
use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;
use crate::metrics::Metrics;

/// Sampling settings of one request; the checkpoint's stop token is added by the engine thread.
#[derive(Debug, Clone)]
pub struct GenParams {
    pub max_new_tokens: usize,
    pub sampling: SamplingConfig,
}

/// What the engine thread reports back while answering a job.
#[derive(Debug)]
pub enum GenEvent {
    /// The job left the queue and generation started.
    Started,
    /// A piece of streamed text.
    Text(String),
    /// The whole answer, or why there is none. Always the last event.
    Done(Result<Answer, ApiError>),
}

pub struct GenJob {
    /// One image, or several (then without regions) in message order.
    pub images: Vec<Arc<RgbImage>>,
    pub regions: Vec<Region>,
    pub request: Request,
    pub params: GenParams,
    /// Closed when the client went away: generation then stops at the next token.
    pub events: mpsc::UnboundedSender<GenEvent>,
    pub deadline: Instant,
    pub enqueued: Instant,
}

pub struct SamOutput {
    pub mask: gar_sam::Mask,
    pub scores: Vec<f32>,
    pub best: usize,
    /// The image embedding came from the cache (no encoder run).
    pub cached: bool,
}

struct SamJob {
    image: Arc<image::RgbImage>,
    prompt: gar_sam::Prompt,
    reply: oneshot::Sender<Result<SamOutput, ApiError>>,
}

/// What the server reports about its model.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelInfo {
    pub id: String,
    pub dir: PathBuf,
    /// Number of `<PromptK>` slots: the most regions one request may carry.
    pub prompt_numbers: usize,
    /// Grid tiles per image when a request sets none (checkpoint or `--max-tiles`); 0 when the
    /// checkpoint feeds the thumbnail alone.
    #[serde(skip)]
    pub max_num_tiles: usize,
    pub load_seconds: f64,
    pub sam: Option<PathBuf>,
}

/// Handles to the worker threads.
pub struct Workers {
    gen: mpsc::Sender<GenJob>,
    sam: Option<mpsc::Sender<SamJob>>,
    pub info: ModelInfo,
    metrics: Arc<Metrics>,
}

pub struct WorkerConfig {
    pub model_id: String,
    pub model_dir: PathBuf,
    pub engine: EngineOptions,
    pub sam_dir: Option<PathBuf>,
    pub queue_size: usize,
}

impl Workers {
    /// Loads the checkpoints on their threads and waits until both are ready.
    pub fn start(config: WorkerConfig, metrics: Arc<Metrics>) -> Result<Self, String> {
        let (gen_tx, gen_rx) = mpsc::channel(config.queue_size.max(1));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let m = metrics.clone();
        let (dir, options) = (config.model_dir.clone(), config.engine.clone());
        std::thread::Builder::new()
            .name("gar-engine".into())
            .spawn(move || match Engine::load(&dir, &options) {
                Ok(engine) => {
                    let processor = engine.processor();
                    let slots = processor.special_tokens().prompt_numbers;
                    let tiles = if processor.preprocessor_config().uses_tiles() {
                        processor.max_num_tiles(&Request::describe())
                    } else {
                        0
                    };
                    let _ = ready_tx.send(Ok((slots, tiles, engine.load_seconds())));
                    engine_loop(&engine, gen_rx, &m);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("cannot load {}: {e}", dir.display())));
                }
            })
            .map_err(|e| format!("cannot start the engine thread: {e}"))?;
        let (prompt_numbers, max_num_tiles, load_seconds) = ready_rx
            .recv()
            .map_err(|_| "the engine thread died while loading".to_string())??;

        let sam = match &config.sam_dir {
            Some(dir) => Some(start_sam(
                dir.clone(),
                &config.engine.device,
                metrics.clone(),
            )?),
            None => None,
        };
        Ok(Self {
            gen: gen_tx,
            sam,
            info: ModelInfo {
                id: config.model_id,
                dir: config.model_dir,
                prompt_numbers,
                max_num_tiles,
                load_seconds,
                sam: config.sam_dir,
            },
            metrics,
        })
    }

    pub fn has_sam(&self) -> bool {
        self.sam.is_some()
    }

    /// Queues a generation; returns how many jobs are ahead of it. A full queue is a 429.
    pub fn submit(&self, job: GenJob) -> Result<u64, ApiError> {
        let m = &self.metrics;
        let ahead = m.queue_depth.load(Relaxed).max(0) + m.engine_busy.load(Relaxed);
        // Counted before sending so the engine thread's decrement can never go below zero.
        m.queue_depth.fetch_add(1, Relaxed);
        match self.gen.try_send(job) {
            Ok(()) => Ok(ahead as u64),
            Err(e) => {
                m.queue_depth.fetch_sub(1, Relaxed);
                match e {
                    mpsc::error::TrySendError::Full(_) => {
                        m.queue_rejected.fetch_add(1, Relaxed);
                        Err(ApiError::queue_full(self.retry_after()))
                    }
                    mpsc::error::TrySendError::Closed(_) => {
                        Err(ApiError::unavailable("the engine thread has stopped"))
                    }
                }
            }
        }
    }

    /// A guess for `Retry-After`: the queue drained at the mean generation time, 1–60 s.
    fn retry_after(&self) -> u64 {
        let depth = self.metrics.queue_depth.load(Relaxed).max(0) as f64 + 1.0;
        let mean = self.metrics.mean_generation_seconds().unwrap_or(1.0);
        (depth * mean).ceil().clamp(1.0, 60.0) as u64
    }

    /// Segments `prompt` on `image` with SAM (the embedding is cached per image content).
    pub async fn segment(
        &self,
        image: Arc<image::RgbImage>,
        prompt: gar_sam::Prompt,
    ) -> Result<SamOutput, ApiError> {
        let Some(sam) = &self.sam else {
            return Err(ApiError::bad_request(
                "point, box-to-SAM and scribble prompts need SAM: start the server with --sam",
            ));
        };
        let (reply, rx) = oneshot::channel();
        sam.try_send(SamJob {
            image,
            prompt,
            reply,
        })
        .map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                self.metrics.queue_rejected.fetch_add(1, Relaxed);
                ApiError::queue_full(1)
            }
            mpsc::error::TrySendError::Closed(_) => {
                ApiError::unavailable("the SAM thread has stopped")
            }
        })?;
        rx.await
            .map_err(|_| ApiError::internal("the SAM thread dropped the request"))?
    }
}

fn engine_loop(engine: &Engine, mut jobs: mpsc::Receiver<GenJob>, metrics: &Metrics) {
    while let Some(job) = jobs.blocking_recv() {
        metrics.queue_depth.fetch_sub(1, Relaxed);
        if job.events.is_closed() {
            // The client left while waiting: nothing to compute.
            metrics.record_cancelled("disconnected_in_queue");
            continue;
        }
        if Instant::now() >= job.deadline {
            metrics.record_cancelled("timeout_in_queue");
            let _ = job.events.send(GenEvent::Done(Err(timeout_error(
                "the request timed out while waiting in the queue".into(),
            ))));
            continue;
        }
        metrics.engine_busy.store(1, Relaxed);
        // A panic in one request must not take the only engine thread down.
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| run_job(engine, &job, metrics)))
            .unwrap_or_else(|_| Err(ApiError::internal("the engine panicked on this request")));
        metrics.engine_busy.store(0, Relaxed);
        let _ = job.events.send(GenEvent::Done(result));
    }
}

fn run_job(engine: &Engine, job: &GenJob, metrics: &Metrics) -> Result<Answer, ApiError> {
    let queue_wait = job.enqueued.elapsed().as_secs_f64();
    let mut generation = engine.generation_config();
    generation.max_new_tokens = job.params.max_new_tokens;
    generation.sampling = job.params.sampling.clone();

    let start = Instant::now();
    let mut first_text: Option<Duration> = None;
    let mut timed_out = false;
    let _ = job.events.send(GenEvent::Started);
    let mut on_text = |piece: &str| {
        first_text.get_or_insert_with(|| start.elapsed());
        if Instant::now() >= job.deadline {
            timed_out = true;
            return ControlFlow::Break(());
        }
        // A closed channel means the client disconnected: stop generating.
        match job.events.send(GenEvent::Text(piece.to_string())) {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        }
    };
    let answer = match &job.images[..] {
        [image] => engine.answer(image, &job.regions, &job.request, &generation, &mut on_text)?,
        images => {
            let images: Vec<RgbImage> = images.iter().map(|i| RgbImage::clone(i)).collect();
            engine.answer_images(&images, &job.request, &generation, &mut on_text)?
        }
    };

    metrics.generations.fetch_add(1, Relaxed);
    metrics
        .generated_tokens
        .fetch_add(answer.tokens.len() as u64, Relaxed);
    metrics
        .prompt_tokens
        .fetch_add(answer.prompt_tokens as u64, Relaxed);
    metrics
        .cached_prompt_tokens
        .fetch_add(answer.cached_tokens as u64, Relaxed);
    metrics.record_generation(
        queue_wait,
        start.elapsed().as_secs_f64(),
        first_text.map(|d| d.as_secs_f64()),
    );
    if answer.stop_reason == "cancelled" {
        if timed_out {
            metrics.record_cancelled("timeout");
            return Err(timeout_error(format!(
                "generation exceeded the request timeout after {} tokens",
                answer.tokens.len()
            )));
        }
        metrics.record_cancelled("client_disconnected");
    }
    Ok(answer)
}

fn timeout_error(message: String) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::GATEWAY_TIMEOUT,
        "timeout_error",
        message,
    )
}

fn start_sam(
    dir: PathBuf,
    device: &candle_core::Device,
    metrics: Arc<Metrics>,
) -> Result<mpsc::Sender<SamJob>, String> {
    let (tx, mut rx) = mpsc::channel::<SamJob>(16);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let device = device.clone();
    std::thread::Builder::new()
        .name("gar-sam".into())
        .spawn(move || {
            let sam = match Sam::load(&dir, &device) {
                Ok(sam) => sam,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("cannot load SAM {}: {e}", dir.display())));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            let mut predictor = SamPredictor::new(sam);
            while let Some(job) = rx.blocking_recv() {
                if job.reply.is_closed() {
                    continue;
                }
                let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    segment(&mut predictor, &job.image, &job.prompt, &metrics)
                }))
                .unwrap_or_else(|_| Err(ApiError::internal("SAM panicked on this request")));
                let _ = job.reply.send(result);
            }
        })
        .map_err(|e| format!("cannot start the SAM thread: {e}"))?;
    ready_rx
        .recv()
        .map_err(|_| "the SAM thread died while loading".to_string())??;
    Ok(tx)
}

fn segment(
    predictor: &mut SamPredictor,
    image: &image::RgbImage,
    prompt: &gar_sam::Prompt,
    metrics: &Metrics,
) -> Result<SamOutput, ApiError> {
    prompt
        .validate(image.width() as usize, image.height() as usize)
        .map_err(sam_error)?;
    let runs = predictor.encoder_runs();
    let emb = predictor.embedding(image).map_err(sam_error)?;
    let prediction = predictor.sam().decode(&emb, prompt).map_err(sam_error)?;
    let best = prediction.best();
    let mask = predictor
        .sam()
        .mask(&emb, &prediction, best)
        .map_err(sam_error)?;
    let cached = predictor.encoder_runs() == runs;
    metrics.sam_requests.fetch_add(1, Relaxed);
    if !cached {
        metrics.sam_encoder_runs.fetch_add(1, Relaxed);
    }
    Ok(SamOutput {
        mask,
        scores: prediction.scores,
        best,
        cached,
    })
}

/// SAM's prompt and image errors are the caller's; the rest are the server's.
pub fn sam_error(e: SamError) -> ApiError {
    match e {
        SamError::Prompt(_) | SamError::Image { .. } => ApiError::bad_request(e.to_string()),
        other => ApiError::internal(other.to_string()),
    }
}
