//! Ctrl-C and SIGTERM: the first asks the run to stop between steps (it checkpoints and is
//! marked interrupted); a second exits at once (the next run resumes from the last checkpoint).

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};

/// Exit code of a run stopped by `signal` (the shell convention, 128 + signal).
pub fn exit_code(signal: usize) -> i32 {
    128 + signal as i32
}

/// A flag that holds the number of the first stop signal received (0 until then).
pub fn stop_flag() -> anyhow::Result<Arc<AtomicUsize>> {
    let which = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(
            sig,
            exit_code(sig as usize),
            seen.clone(),
        )?;
        signal_hook::flag::register(sig, seen.clone())?;
        signal_hook::flag::register_usize(sig, which.clone(), sig as usize)?;
    }
    Ok(which)
}

/// The signal's name for messages.
pub fn name(signal: usize) -> &'static str {
    match signal as i32 {
        SIGINT => "Ctrl-C (SIGINT)",
        SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}
