//! The Rhai engine: limits, the module resolver that only reads `scripts/`, Ctrl-C through
//! the progress callback, and one execution of a script.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rhai::module_resolvers::FileModuleResolver;
use rhai::{Engine, EvalAltResult, Module, ModuleResolver, Position, Shared};

use super::bind;
use super::error::from_rhai;
use super::host::{self, Host};
use super::{ExecObserver, ExecOptions, ExecSummary, ScriptError};

/// Operations a script may run (a sweep declaration needs a few thousand; an accidental
/// infinite loop stops within a second or two).
pub(crate) const MAX_OPERATIONS: u64 = 50_000_000;
/// How deep script functions may call each other.
pub(crate) const MAX_CALL_LEVELS: usize = 64;

/// An engine with chartrl's limits and nothing registered.
///
/// No limit on the size of strings, arrays or maps: with any such limit set, Rhai re-measures
/// a value after every call that may grow it, walking the whole array, so `a.push(x)` in a
/// loop costs O(n) each and O(n²) in all (2 million pushes: about 20 minutes). Operations and
/// wall time bound a script instead.
fn limited_engine() -> Engine {
    let mut engine = Engine::new();
    engine.set_max_operations(MAX_OPERATIONS);
    engine.set_max_call_levels(MAX_CALL_LEVELS);
    engine.set_max_expr_depths(64, 64);
    engine.disable_symbol("eval");
    engine
}

/// The marker a script stopped by its time or memory limit ends with (a signal ends with a
/// string).
#[derive(Debug, Clone)]
pub(crate) struct TimeLimit(pub String);

/// How many more bytes than after the last host call a script's own values may hold (a
/// string or an array doubled in a loop).
const MAX_SCRIPT_MEMORY: usize = 2 << 30;

/// How long a script has run outside the host's own work (training, evaluation, reports),
/// which is what its time limit bounds, and the memory it started from.
#[derive(Debug)]
pub(crate) struct ScriptClock {
    start: Instant,
    /// Nanoseconds spent inside host calls.
    host: AtomicU64,
    /// Bytes allocated after the latest host call (or at the start).
    baseline: AtomicUsize,
}

impl ScriptClock {
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
            host: AtomicU64::new(0),
            baseline: AtomicUsize::new(crate::memory::live_bytes()),
        }
    }

    /// Adds the time of one host call; its memory becomes the new baseline.
    pub(crate) fn add_host(&self, d: Duration) {
        self.host
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
        self.baseline
            .fetch_max(crate::memory::live_bytes(), Ordering::Relaxed);
    }

    /// Bytes allocated above the baseline: what the script's own values hold.
    fn script_memory(&self) -> usize {
        crate::memory::live_bytes().saturating_sub(self.baseline.load(Ordering::Relaxed))
    }

    /// Wall time outside host calls.
    pub(crate) fn script_time(&self) -> Duration {
        self.start
            .elapsed()
            .saturating_sub(Duration::from_nanos(self.host.load(Ordering::Relaxed)))
    }
}

/// The engine that runs reward closures: the limits, no host functions, no imports.
pub(crate) fn reward_engine() -> Engine {
    let mut engine = limited_engine();
    engine.set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
    engine
}

/// Imports resolve only to `.rhai` files under the project's `scripts/` folder.
struct ScriptsOnly {
    dir: PathBuf,
    files: FileModuleResolver,
}

impl ModuleResolver for ScriptsOnly {
    fn resolve(
        &self,
        engine: &Engine,
        source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<Shared<Module>, Box<EvalAltResult>> {
        let outside = || {
            Box::new(EvalAltResult::ErrorRuntime(
                format!(
                    "import \"{path}\": scripts may only import modules from {}/",
                    self.dir.display()
                )
                .into(),
                pos,
            ))
        };
        let target =
            super::options::inside(&self.dir, &format!("{path}.rhai")).map_err(|_| outside())?;
        if Path::new(path).is_absolute() || target.components().any(|c| c.as_os_str() == "..") {
            return Err(outside());
        }
        self.files.resolve(engine, source, path, pos)
    }
}

/// Runs `source` (the text of `opts.script`) once; `dry` plans without training.
pub(crate) fn run(
    opts: &ExecOptions,
    source: &str,
    dry: bool,
    obs: Box<dyn ExecObserver>,
) -> Result<ExecSummary, ScriptError> {
    let cwd = std::env::current_dir().map_err(|e| ScriptError::Read {
        path: PathBuf::from("."),
        source: e,
    })?;
    let mut engine = limited_engine();
    let scripts = opts.modules.clone().unwrap_or_else(|| cwd.join("scripts"));
    engine.set_module_resolver(ScriptsOnly {
        files: FileModuleResolver::new_with_path(&scripts),
        dir: scripts,
    });
    let clock = Arc::new(ScriptClock::new());
    let (stop, limit, ticking) = (opts.stop.clone(), opts.time_limit, clock.clone());
    engine.on_progress(move |ops| {
        if stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed) != 0) {
            return Some("interrupted".into());
        }
        if ticking.script_memory() > MAX_SCRIPT_MEMORY {
            return Some(rhai::Dynamic::from(TimeLimit(format!(
                "the script's own values took more than {} GiB of memory (a string or array that keeps growing?)",
                MAX_SCRIPT_MEMORY >> 30
            ))));
        }
        if ops % 4096 == 0 && ticking.script_time() > limit {
            return Some(rhai::Dynamic::from(TimeLimit(format!(
                "the script ran for more than {} s outside training and evaluation (a loop that never ends?); raise the limit with --time-limit",
                limit.as_secs()
            ))));
        }
        None
    });
    let mut ast = engine
        .compile(source)
        .map_err(|e| from_rhai(&opts.script, source, &EvalAltResult::from(e)))?;
    ast.set_source(opts.script.display().to_string());
    let ast = Arc::new(ast);
    let host = Arc::new(Mutex::new(Host::new(
        opts,
        dry,
        cwd,
        obs,
        ast.clone(),
        clock,
    )?));
    bind::register(&mut engine, &host);
    let result = engine.run_ast(&ast);
    let summary = host::finish(&host);
    result.map_err(|e| from_rhai(&opts.script, source, &e))?;
    Ok(summary)
}
