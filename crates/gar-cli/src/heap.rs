//! Keep freed tensor memory in the process heap instead of returning it to the OS.
//!
//! Every candle op allocates a fresh output buffer. With glibc's defaults a buffer above 128 KiB–32 MiB
//! (the threshold adapts) is mapped on allocation and unmapped on free, so each op of a vision block or a
//! prefill layer page-faults and zeroes its megabytes of output again: ≈ 15 % of a GAR-1B vision tile in
//! kernel page handling (docs/performance.md, round 6). Serving every size from the heap and never trimming
//! it lets the next op reuse the pages; the cost is that the process keeps its peak working set (+60 MiB of
//! peak RSS at GAR-1B shapes, measured).
//!
//! How: `M_MMAP_MAX = 0`, no chunk mapped on its own at all. Rounds 6–11 raised `M_MMAP_THRESHOLD` to
//! 1 GiB instead, which glibc 2.36 accepts, yet a 4.6k-token prefill still spent 3.4 % of its time in the
//! kernel's page clearing (its MLP buffers are 150 MiB); with `M_MMAP_MAX = 0` that share is gone (perf,
//! round 12).

/// Applies the malloc settings; call first thing in `main`, before the allocations it is meant for.
/// Returns whether the allocator took them (always `false` off glibc, where nothing is changed).
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; it is called before any thread is spawned.
        // A refusal (return 0) leaves glibc's defaults, which still work, only slower.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_takes_the_settings() {
        assert!(super::keep_freed_memory());
        // A buffer far above any mmap threshold still allocates, is usable, and frees.
        let big = vec![1u8; 200 << 20];
        assert_eq!(big[big.len() - 1], 1);
    }
}
