//! The random choices of sample construction (training.md §2.11), behind a trait so that tests can
//! inject them. `SeededChoices` draws from a ChaCha RNG; `ScriptedChoices` replays a recorded list
//! and checks that every draw is of the recorded kind and range (so the draw *order* is tested too).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub trait Choices {
    /// A uniformly random permutation of `0..n` (Python `random.shuffle(list(range(n)))`).
    fn permutation(&mut self, n: usize) -> Vec<usize>;
    /// Uniform in [0, 1) (Python `random.random()`).
    fn random(&mut self) -> f64;
    /// Uniform in `lo..=hi` (Python `random.randint`).
    fn randint(&mut self, lo: usize, hi: usize) -> usize;
    /// Index of a uniform choice among `n` options (Python `random.choice`).
    fn choice(&mut self, n: usize) -> usize;
}

pub struct SeededChoices(pub ChaCha8Rng);

impl SeededChoices {
    pub fn new(seed: u64) -> Self {
        Self(ChaCha8Rng::seed_from_u64(seed))
    }
}

impl Choices for SeededChoices {
    fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        // Fisher–Yates from the back, like Python's shuffle.
        for i in (1..n).rev() {
            let j = self.0.random_range(0..=i);
            p.swap(i, j);
        }
        p
    }
    fn random(&mut self) -> f64 {
        self.0.random::<f64>()
    }
    fn randint(&mut self, lo: usize, hi: usize) -> usize {
        self.0.random_range(lo..=hi)
    }
    fn choice(&mut self, n: usize) -> usize {
        self.0.random_range(0..n)
    }
}

/// One recorded draw.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Draw {
    Permutation { value: Vec<usize> },
    Random { value: f64 },
    Randint { lo: usize, hi: usize, value: usize },
    Choice { n: usize, value: usize },
}

/// Replays recorded draws; a draw of another kind or range than recorded panics with a message
/// naming both (a test helper: the mismatch *is* the test failure).
pub struct ScriptedChoices {
    draws: std::vec::IntoIter<Draw>,
}

impl ScriptedChoices {
    pub fn new(draws: Vec<Draw>) -> Self {
        Self {
            draws: draws.into_iter(),
        }
    }
    pub fn remaining(&self) -> usize {
        self.draws.len()
    }
    fn next(&mut self, asked: &str) -> Draw {
        self.draws
            .next()
            .unwrap_or_else(|| panic!("no recorded draw left for {asked}"))
    }
}

impl Choices for ScriptedChoices {
    fn permutation(&mut self, n: usize) -> Vec<usize> {
        match self.next("permutation") {
            Draw::Permutation { value } if value.len() == n => value,
            d => panic!("asked permutation({n}), recorded {d:?}"),
        }
    }
    fn random(&mut self) -> f64 {
        match self.next("random") {
            Draw::Random { value } => value,
            d => panic!("asked random(), recorded {d:?}"),
        }
    }
    fn randint(&mut self, lo: usize, hi: usize) -> usize {
        match self.next("randint") {
            Draw::Randint {
                lo: l,
                hi: h,
                value,
            } if (l, h) == (lo, hi) => value,
            d => panic!("asked randint({lo}, {hi}), recorded {d:?}"),
        }
    }
    fn choice(&mut self, n: usize) -> usize {
        match self.next("choice") {
            Draw::Choice { n: m, value } if m == n => value,
            d => panic!("asked choice({n}), recorded {d:?}"),
        }
    }
}
