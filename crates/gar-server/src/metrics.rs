//! Counters and histograms for `GET /metrics`, written in the Prometheus text format by hand
//! (a metrics crate would be the server's largest dependency for ~100 lines of formatting).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len()];
        }
        for (c, &b) in self.counts.iter_mut().zip(BUCKETS) {
            if v <= b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in BUCKETS.iter().enumerate() {
            let c = self.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// Shared by the HTTP handlers and the worker threads.
#[derive(Default)]
pub struct Metrics {
    /// Jobs accepted but not yet picked up by the engine thread.
    pub queue_depth: AtomicI64,
    /// 1 while the engine thread is generating.
    pub engine_busy: AtomicI64,
    pub queue_rejected: AtomicU64,
    pub generations: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub cached_prompt_tokens: AtomicU64,
    pub sam_requests: AtomicU64,
    pub sam_encoder_runs: AtomicU64,
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    request_seconds: Mutex<BTreeMap<String, Histogram>>,
    /// Generations stopped before their end, by reason (client_disconnected, timeout, ...).
    cancelled: Mutex<BTreeMap<&'static str, u64>>,
    queue_wait_seconds: Mutex<Histogram>,
    generation_seconds: Mutex<Histogram>,
    first_token_seconds: Mutex<Histogram>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere must not take the metrics down with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    pub fn record_request(&self, route: &str, status: u16, seconds: f64) {
        *lock(&self.requests)
            .entry((route.to_string(), status))
            .or_default() += 1;
        lock(&self.request_seconds)
            .entry(route.to_string())
            .or_default()
            .observe(seconds);
    }

    pub fn record_cancelled(&self, reason: &'static str) {
        *lock(&self.cancelled).entry(reason).or_default() += 1;
    }

    pub fn cancelled(&self, reason: &str) -> u64 {
        lock(&self.cancelled).get(reason).copied().unwrap_or(0)
    }

    pub fn record_generation(&self, queue_wait: f64, total: f64, first_token: Option<f64>) {
        lock(&self.queue_wait_seconds).observe(queue_wait);
        lock(&self.generation_seconds).observe(total);
        if let Some(t) = first_token {
            lock(&self.first_token_seconds).observe(t);
        }
    }

    /// The Prometheus exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, kind: &str, v: i64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        let q = self.queue_depth.load(Relaxed);
        gauge(
            &mut out,
            "gar_queue_depth",
            "Generation jobs waiting for the engine thread.",
            "gauge",
            q,
        );
        let busy = self.engine_busy.load(Relaxed);
        gauge(
            &mut out,
            "gar_engine_busy",
            "1 while the engine thread is generating.",
            "gauge",
            busy,
        );
        let counters = [
            (
                "gar_queue_rejected_total",
                "Requests refused with 429 because the queue was full.",
                &self.queue_rejected,
            ),
            (
                "gar_generations_total",
                "Generations run by the engine thread.",
                &self.generations,
            ),
            (
                "gar_generated_tokens_total",
                "Tokens generated.",
                &self.generated_tokens,
            ),
            (
                "gar_prompt_tokens_total",
                "Prompt tokens fed to the model.",
                &self.prompt_tokens,
            ),
            (
                "gar_cached_prompt_tokens_total",
                "Prompt tokens served from a kept KV cache.",
                &self.cached_prompt_tokens,
            ),
            (
                "gar_sam_requests_total",
                "SAM segmentations.",
                &self.sam_requests,
            ),
            (
                "gar_sam_encoder_runs_total",
                "SAM image-encoder runs (the rest hit the embedding cache).",
                &self.sam_encoder_runs,
            ),
        ];
        for (name, help, v) in counters {
            gauge(&mut out, name, help, "counter", v.load(Relaxed) as i64);
        }

        let _ = writeln!(out, "# HELP gar_generations_cancelled_total Generations stopped early, by reason.\n# TYPE gar_generations_cancelled_total counter");
        for (reason, n) in lock(&self.cancelled).iter() {
            let _ = writeln!(
                out,
                "gar_generations_cancelled_total{{reason=\"{reason}\"}} {n}"
            );
        }
        let _ = writeln!(out, "# HELP gar_http_requests_total HTTP requests by route and status.\n# TYPE gar_http_requests_total counter");
        for ((route, status), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "gar_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(out, "# HELP gar_http_request_seconds Time to the response head (streams: to the first byte).\n# TYPE gar_http_request_seconds histogram");
        for (route, h) in lock(&self.request_seconds).iter() {
            h.write(
                &mut out,
                "gar_http_request_seconds",
                &format!("route=\"{route}\""),
            );
        }
        let hists = [
            (
                "gar_queue_wait_seconds",
                "Time a generation waited in the queue.",
                &self.queue_wait_seconds,
            ),
            (
                "gar_generation_seconds",
                "Engine time of one generation (prefill + decode).",
                &self.generation_seconds,
            ),
            (
                "gar_first_token_seconds",
                "Time from dequeue to the first streamed text.",
                &self.first_token_seconds,
            ),
        ];
        for (name, help, h) in hists {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            lock(h).write(&mut out, name, "");
        }
        out
    }
}

impl Metrics {
    /// Mean engine time per generation so far (for `Retry-After`).
    pub fn mean_generation_seconds(&self) -> Option<f64> {
        let h = lock(&self.generation_seconds);
        (h.count > 0).then(|| h.sum / h.count as f64)
    }
}
