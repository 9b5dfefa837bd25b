//! The `mlambda` command: parses the command line and hands over to the library.

fn main() -> std::process::ExitCode {
    keep_big_allocations_out_of_the_heap();
    mlambda::cli::main()
}

/// glibc serves an allocation from its heap, not a mapping of its own, once one of that size
/// was freed (its mmap threshold rises up to 32 MiB as big blocks come and go). Layers are
/// written by several threads at once (gzip workers, up to four package layers), each with an
/// arena of its own, and blocks of a few hundred KiB freed there stayed as holes: installing
/// the TensorFlow packages peaked at 84–100 MiB of RSS, 51 MiB with the threshold held at its
/// default (and no slower: the big buffers are reused, so few blocks are mapped).
fn keep_big_allocations_out_of_the_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable; it is called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
