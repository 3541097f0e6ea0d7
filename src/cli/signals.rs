//! Ctrl-C and SIGTERM: the first asks the run to stop between steps (it checkpoints and is
//! marked interrupted); a second exits at once (the next run resumes from the last checkpoint).

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};

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

/// [`stop_flag`], and Slurm's warning before the time limit (`--signal=B:USR1@120`) also
/// asks the run to stop between steps and checkpoint; the task then requeues itself.
pub fn stop_flag_with_warning() -> anyhow::Result<Arc<AtomicUsize>> {
    let which = stop_flag()?;
    signal_hook::flag::register_usize(SIGUSR1, which.clone(), SIGUSR1 as usize)?;
    Ok(which)
}

/// Whether `signal` is Slurm's warning (SIGUSR1).
pub fn is_warning(signal: usize) -> bool {
    signal as i32 == SIGUSR1
}

/// The signal's name for messages.
pub fn name(signal: usize) -> &'static str {
    match signal as i32 {
        SIGINT => "Ctrl-C (SIGINT)",
        SIGTERM => "SIGTERM",
        SIGUSR1 => "Slurm's warning signal (SIGUSR1)",
        _ => "a signal",
    }
}
