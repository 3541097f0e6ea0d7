//! The `chartrl` binary: everything lives in the library; this only installs the counting
//! allocator (which bounds a script's memory) and hands over the exit code.

#[global_allocator]
static ALLOCATOR: chartrl::memory::Counting = chartrl::memory::Counting;

fn main() {
    std::process::exit(chartrl::cli::main());
}
