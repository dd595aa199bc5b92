//! The per-rank sample order (training.md §5.6): a seeded permutation per epoch (seed + epoch),
//! length-grouped in megabatches of `world × per_device`, rounded up to a multiple of
//! `per_device` per rank by repeating from the start, and dealt out round-robin to the ranks.
//! With GAR's constant lengths the grouping changes nothing and the order is a plain shuffle.
//! The permutation comes from our ChaCha RNG, not `torch.randperm`: same law, different numbers.

use crate::choices::{Choices, SeededChoices};

#[derive(Clone, Debug)]
pub struct DistributedSampler {
    pub len: usize,
    pub world: usize,
    pub rank: usize,
    /// Samples per rank per optimizer step (micro-batch × accumulation).
    pub per_device: usize,
    pub seed: u64,
    /// Optional per-row lengths for grouping (None = all equal).
    pub lengths: Option<Vec<usize>>,
}

impl DistributedSampler {
    /// Samples each rank sees per epoch (a multiple of `per_device`).
    pub fn samples_per_rank(&self) -> usize {
        let per = self.per_device.max(1);
        self.len.div_ceil(self.world.max(1)).div_ceil(per) * per
    }

    /// This rank's indices for one epoch.
    pub fn epoch_indices(&self, epoch: u64) -> Vec<usize> {
        if self.len == 0 {
            return Vec::new();
        }
        let mut ch = SeededChoices::new(self.seed.wrapping_add(epoch));
        let mut order = ch.permutation(self.len);
        if let Some(lengths) = &self.lengths {
            group_by_length(&mut order, lengths, self.world * self.per_device);
        }
        let total = self.samples_per_rank() * self.world;
        let global: Vec<usize> = order.iter().copied().cycle().take(total).collect();
        global
            .into_iter()
            .skip(self.rank)
            .step_by(self.world)
            .collect()
    }
}

/// Sort each megabatch by decreasing length and bring the longest sample to the very front (so a
/// run that will run out of memory does so at once).
fn group_by_length(order: &mut [usize], lengths: &[usize], megabatch: usize) {
    let len_of = |i: usize| lengths.get(i).copied().unwrap_or(0);
    for chunk in order.chunks_mut(megabatch.max(1)) {
        chunk.sort_by_key(|&i| std::cmp::Reverse(len_of(i)));
    }
    if let Some(longest) =
        (0..order.len()).max_by_key(|&p| (len_of(order[p]), std::cmp::Reverse(p)))
    {
        order.swap(0, longest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_partition_one_padded_permutation() {
        let mk = |rank| DistributedSampler {
            len: 10,
            world: 3,
            rank,
            per_device: 2,
            seed: 42,
            lengths: None,
        };
        assert_eq!(mk(0).samples_per_rank(), 4);
        let all: Vec<Vec<usize>> = (0..3).map(|r| mk(r).epoch_indices(0)).collect();
        let mut seen: Vec<usize> = all.iter().flatten().copied().collect();
        assert_eq!(seen.len(), 12);
        seen.sort();
        seen.dedup();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert_ne!(mk(0).epoch_indices(0), mk(0).epoch_indices(1));
        assert_eq!(mk(1).epoch_indices(3), mk(1).epoch_indices(3));
    }

    #[test]
    fn grouping_sorts_megabatches_longest_first() {
        let s = DistributedSampler {
            len: 8,
            world: 2,
            rank: 0,
            per_device: 2,
            seed: 1,
            lengths: Some(vec![5, 1, 7, 3, 9, 2, 8, 4]),
        };
        let mut order = SeededChoices::new(1).permutation(8);
        group_by_length(&mut order, s.lengths.as_ref().unwrap(), 4);
        assert_eq!(order[0], 4, "longest first: {order:?}");
        let idx = s.epoch_indices(0);
        assert_eq!(idx[0], 4);
    }
}
