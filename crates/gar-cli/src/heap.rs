//! Keep freed tensor memory in the process heap instead of returning it to the OS.
//!
//! Every candle op allocates a fresh output buffer. With glibc's defaults a buffer above 128 KiB–32 MiB
//! (the threshold adapts) is mapped on allocation and unmapped on free, so each op of a vision block or a
//! prefill layer page-faults and zeroes its megabytes of output again: ≈ 15 % of a GAR-1B vision tile in
//! kernel page handling (docs/performance.md, round 6). Serving every size from the heap and never trimming
//! it lets the next op reuse the pages; the cost is that the process keeps its peak working set (+60 MiB of
//! peak RSS at GAR-1B shapes, measured).

/// Applies the malloc settings; call first thing in `main`, before the allocations it is meant for.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; it is called before any thread is spawned.
        // A refusal (return 0) just leaves glibc's defaults, so the results are ignored.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        }
    }
}
