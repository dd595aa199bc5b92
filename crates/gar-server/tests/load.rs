//! Queueing behaviour: overflow is an explicit 429 with Retry-After, a client that disconnects
//! stops its generation, and a burst of concurrent clients gets only 200s and 429s.

mod common;

use std::io::BufReader;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// A cheap request (one tile, few tokens) on demo image 1.
fn small_request(data: &std::path::Path, max_new_tokens: usize, stream: bool) -> serde_json::Value {
    json!({
        "image": b64_file(&data.join("assets/demo_image_1.png")),
        "regions": [{"mask": b64_file(&data.join("assets/demo_mask_1.png"))}],
        "max_new_tokens": max_new_tokens,
        "max_tiles": 1,
        "stream": stream,
    })
}

#[test]
fn a_full_queue_answers_429_with_retry_after() {
    let Some(data) = shared_data() else { return };
    let s = start(
        gar_server::Limits {
            queue_size: 1,
            ..Default::default()
        },
        false,
    );
    let body = small_request(&data, 200, false).to_string();
    let addr = s.addr;
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let body = body.clone();
            std::thread::spawn(move || request(addr, "POST", "/v1/describe", body.as_bytes(), &[]))
        })
        .collect();
    let responses: Vec<Response> = handles
        .into_iter()
        .map(|h| h.join().expect("client"))
        .collect();
    let ok = responses.iter().filter(|r| r.status == 200).count();
    let full: Vec<_> = responses.iter().filter(|r| r.status == 429).collect();
    assert_eq!(
        ok + full.len(),
        6,
        "only 200 and 429: {:?}",
        responses.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(ok >= 2, "one running + one queued succeed");
    assert!(!full.is_empty(), "six at once overflow a queue of one");
    for r in full {
        assert!(r
            .header("retry-after")
            .and_then(|v| v.parse::<u64>().ok())
            .is_some());
        assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    }
    assert!(metric(addr, "gar_queue_rejected_total") >= 1.0);
}

fn wait_for(addr: std::net::SocketAddr, name: &str, at_least: f64) -> bool {
    let end = Instant::now() + Duration::from_secs(120);
    while Instant::now() < end {
        if metric(addr, name) >= at_least {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn disconnecting_stops_the_generation() {
    let Some(data) = shared_data() else { return };
    let s = start(gar_server::Limits::default(), false);
    let max = 3000;
    let cancelled = "gar_generations_cancelled_total{reason=\"client_disconnected\"}";

    // Streaming: read the first token, then hang up.
    let body = small_request(&data, max, true).to_string();
    let stream = send(s.addr, "POST", "/v1/describe", body.as_bytes(), &[]);
    let mut reader = BufReader::new(stream);
    let (status, _) = read_head(&mut reader);
    assert_eq!(status, 200);
    loop {
        let chunk = read_chunk(&mut reader).expect("a chunk before the end");
        if String::from_utf8_lossy(&chunk).contains("event: token") {
            break;
        }
    }
    drop(reader);
    assert!(
        wait_for(s.addr, cancelled, 1.0),
        "the streamed generation was not cancelled"
    );
    let generated = metric(s.addr, "gar_generated_tokens_total");
    assert!(
        generated < max as f64,
        "stopped early: {generated} tokens of {max}"
    );

    // Non-streaming: hang up while the engine is busy with it.
    let body = small_request(&data, max, false).to_string();
    let stream = send(s.addr, "POST", "/v1/describe", body.as_bytes(), &[]);
    assert!(wait_for(s.addr, "gar_engine_busy", 1.0));
    drop(stream);
    assert!(
        wait_for(s.addr, cancelled, 2.0),
        "the non-streaming generation was not cancelled"
    );
    let generated = metric(s.addr, "gar_generated_tokens_total");
    assert!(
        generated < 2.0 * max as f64,
        "both stopped early: {generated}"
    );
}

#[test]
fn bounded_load_only_200s_and_explicit_429s() {
    let Some(data) = shared_data() else { return };
    let s = start(
        gar_server::Limits {
            queue_size: 8,
            ..Default::default()
        },
        false,
    );
    let clients = 24;
    let per_client = 2;
    let body = small_request(&data, 8, false).to_string();
    let addr = s.addr;
    let start_all = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let body = body.clone();
            std::thread::spawn(move || {
                (0..per_client)
                    .map(|_| {
                        let t = Instant::now();
                        let r = request(addr, "POST", "/v1/describe", body.as_bytes(), &[]);
                        (r.status, t.elapsed())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let results: Vec<(u16, Duration)> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("client"))
        .collect();
    let wall = start_all.elapsed();
    let ok: Vec<Duration> = results
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, d)| *d)
        .collect();
    let rejected = results.iter().filter(|(s, _)| *s == 429).count();
    let other: Vec<u16> = results
        .iter()
        .map(|(s, _)| *s)
        .filter(|s| *s != 200 && *s != 429)
        .collect();
    let mut sorted = ok.clone();
    sorted.sort();
    let pct = |p: f64| {
        sorted
            .get(((sorted.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or_default()
    };
    eprintln!(
        "load: {clients} clients x {per_client} requests in {:.1}s: {} ok ({:.2} req/s), {rejected} x 429, latency p50 {:.2}s p95 {:.2}s max {:.2}s",
        wall.as_secs_f64(),
        ok.len(),
        ok.len() as f64 / wall.as_secs_f64(),
        pct(0.5).as_secs_f64(),
        pct(0.95).as_secs_f64(),
        pct(1.0).as_secs_f64(),
    );
    assert!(other.is_empty(), "unexpected statuses {other:?}");
    assert!(!ok.is_empty());
    assert!(wall < Duration::from_secs(300), "bounded in time");
    assert_eq!(metric(addr, "gar_queue_depth"), 0.0, "the queue drains");
}
