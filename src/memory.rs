//! Handing freed heap memory back to the system.
//!
//! glibc's allocator keeps what a program frees for later allocations and returns memory to
//! the kernel only from the top of its heap. The daemon maps large blocks on their own
//! (`M_MMAP_THRESHOLD`, set at start in `main.rs`), so those go back when freed; what a
//! large listing leaves behind is its many small blocks (names, ids, contexts of thousands
//! of volumes) scattered between long-lived ones. `malloc_trim` releases the free pages
//! wherever they are (`madvise(MADV_DONTNEED)`). Measured with `cargo bench --bench scale`
//! (10,000 volumes, three ListVolumes walks): the listing's lasting share of the resident
//! size drops from 1.15 to 0.7 MiB.

/// Returns the allocator's free pages to the system. Costs a walk over the free lists (well
/// under a millisecond for the daemon's heap): call it after large, rare frees, not per
/// request.
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only inspects and releases the allocator's own free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}
