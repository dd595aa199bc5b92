//! The TCP all-reduce between threads on localhost: the mean is right and bit-identical on every
//! rank, and failures (mismatched tensors, a rank that exits, a rank that stalls) are errors on
//! every rank instead of hangs.

use candle_core::{Device, Tensor};
use gar_train::allreduce::{AllReduce, LocalGroup};
use gar_train::tcp::{Listener, TcpGroup};
use std::time::Duration;

/// Start `world` ranks as threads; `body` runs on each with its group.
fn run_ranks<T: Send + 'static>(
    world: usize,
    timeout: Duration,
    body: impl Fn(TcpGroup) -> T + Send + Sync + Clone + 'static,
) -> Vec<T> {
    let listener = Listener::bind("127.0.0.1", 0, world, timeout).unwrap();
    let port = listener.port().unwrap();
    let mut handles = Vec::new();
    for rank in 1..world {
        let body = body.clone();
        handles.push(std::thread::spawn(move || {
            body(TcpGroup::connect("127.0.0.1", port, rank, world, timeout).unwrap())
        }));
    }
    let root = listener.accept().unwrap();
    let mut out = vec![body(root)];
    out.extend(handles.into_iter().map(|h| h.join().unwrap()));
    out
}

fn grads_of(rank: usize) -> Vec<Tensor> {
    let d = Device::Cpu;
    let a: Vec<f32> = (0..6)
        .map(|i| (i as f32 + 0.1) * (rank as f32 + 1.3))
        .collect();
    let b: Vec<f32> = (0..3)
        .map(|i| 1.0 / (i as f32 + rank as f32 + 0.7))
        .collect();
    vec![
        Tensor::from_vec(a, (2, 3), &d).unwrap(),
        Tensor::from_vec(b, 3, &d).unwrap(),
    ]
}

fn values(ts: &[Tensor]) -> Vec<Vec<f32>> {
    ts.iter()
        .map(|t| t.flatten_all().unwrap().to_vec1().unwrap())
        .collect()
}

#[test]
fn mean_matches_local_group_bit_for_bit_on_every_rank() {
    const N: usize = 3;
    let got = run_ranks(N, Duration::from_secs(20), |g| {
        let mut gs = grads_of(g.rank());
        // Two rounds: the links are reused correctly.
        g.all_reduce_mean(&mut gs).unwrap();
        let first = values(&gs);
        let mut again = grads_of(g.rank());
        g.all_reduce_mean(&mut again).unwrap();
        assert_eq!(values(&again), first);
        (first, gs[0].dims().to_vec())
    });
    // The reference: threads meeting in memory (LocalGroup sums in the same rank order).
    let want: Vec<Vec<Vec<f32>>> = LocalGroup::new(N)
        .into_iter()
        .map(|g| {
            std::thread::spawn(move || {
                let mut gs = grads_of(g.rank());
                g.all_reduce_mean(&mut gs).unwrap();
                values(&gs)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    for (vals, dims) in &got {
        assert_eq!(dims, &vec![2, 3]);
        assert_eq!(vals, &got[0].0, "ranks disagree");
    }
    let hand: f32 = (0..N).map(|r| 2.1 * (r as f32 + 1.3)).sum::<f32>() / N as f32;
    assert!((got[0].0[0][2] - hand).abs() < 1e-6);
    for (a, b) in got[0].0.iter().flatten().zip(want[0].iter().flatten()) {
        assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{a} vs {b}");
    }
}

#[test]
fn mismatched_tensors_fail_on_every_rank() {
    let errors = run_ranks(3, Duration::from_secs(20), |g| {
        let mut gs = grads_of(g.rank());
        if g.rank() == 2 {
            gs.pop();
        }
        g.all_reduce_mean(&mut gs).unwrap_err().to_string()
    });
    for e in &errors {
        assert!(e.contains("rank 2 sent 1 tensors"), "{e}");
    }
}

#[test]
fn a_rank_that_exits_is_an_error_on_the_others() {
    let errors = run_ranks(3, Duration::from_secs(20), |g| {
        if g.rank() == 1 {
            drop(g); // exits before the first all-reduce
            return String::new();
        }
        let mut gs = grads_of(g.rank());
        g.all_reduce_mean(&mut gs).unwrap_err().to_string()
    });
    assert!(
        errors[0].contains("rank 1") && errors[0].contains("closed"),
        "{}",
        errors[0]
    );
    assert!(
        errors[2].contains("rank 0 reports") && errors[2].contains("rank 1"),
        "{}",
        errors[2]
    );
}

#[test]
fn a_stalled_rank_times_out() {
    let errors = run_ranks(2, Duration::from_millis(500), |g| {
        if g.rank() == 1 {
            std::thread::sleep(Duration::from_secs(2));
            return String::new();
        }
        let mut gs = grads_of(0);
        g.all_reduce_mean(&mut gs).unwrap_err().to_string()
    });
    assert!(
        errors[0].contains("rank 1") && errors[0].contains("timed out"),
        "{}",
        errors[0]
    );
}

#[test]
fn rendezvous_refuses_a_wrong_world_size_and_times_out_on_a_missing_rank() {
    let listener = Listener::bind("127.0.0.1", 0, 2, Duration::from_secs(10)).unwrap();
    let port = listener.port().unwrap();
    let leaf = std::thread::spawn(move || {
        TcpGroup::connect("127.0.0.1", port, 1, 3, Duration::from_secs(10))
            .err()
            .map(|e| e.to_string())
    });
    let root = listener.accept().err().map(|e| e.to_string()).unwrap();
    assert!(root.contains("WORLD_SIZE=3"), "{root}");
    let leaf = leaf.join().unwrap().unwrap();
    assert!(leaf.contains("WORLD_SIZE=3"), "{leaf}");

    let lonely = Listener::bind("127.0.0.1", 0, 2, Duration::from_millis(300)).unwrap();
    let e = lonely.accept().err().unwrap().to_string();
    assert!(e.contains("rank(s) 1 did not connect"), "{e}");
}

#[test]
fn broadcast_delivers_rank_zero_bytes() {
    let got = run_ranks(3, Duration::from_secs(20), |g| {
        let mine = vec![g.rank() as u8 + 7; 128];
        g.broadcast(&mine).unwrap()
    });
    for b in got {
        assert_eq!(b, vec![7u8; 128]);
    }
}
