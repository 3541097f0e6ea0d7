//! The `chartrl` binary: everything lives in the library; this only installs the counting
//! allocator (which bounds a script's memory), tunes glibc's allocator, and hands over the
//! exit code.

#[global_allocator]
static ALLOCATOR: chartrl::memory::Counting = chartrl::memory::Counting;

fn main() {
    chartrl::memory::keep_freed_memory();
    std::process::exit(chartrl::cli::main());
}
