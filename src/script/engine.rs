//! The Rhai engine: limits, the module resolver that only reads `scripts/`, Ctrl-C through
//! the progress callback, and one execution of a script.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use rhai::module_resolvers::FileModuleResolver;
use rhai::{Engine, EvalAltResult, Module, ModuleResolver, Position, Shared};

use super::api::{self, Host};
use super::error::from_rhai;
use super::{ExecObserver, ExecOptions, ExecSummary, ScriptError};

/// Operations a script may run (a sweep declaration needs a few thousand; an accidental
/// infinite loop stops within a second or two).
const MAX_OPERATIONS: u64 = 50_000_000;

/// An engine with chartrl's limits and nothing registered.
fn limited_engine() -> Engine {
    let mut engine = Engine::new();
    engine.set_max_operations(MAX_OPERATIONS);
    engine.set_max_call_levels(64);
    engine.set_max_expr_depths(64, 64);
    engine.set_max_string_size(1 << 20);
    engine.set_max_array_size(1 << 20);
    engine.set_max_map_size(1 << 16);
    engine.disable_symbol("eval");
    engine
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
    let scripts = cwd.join("scripts");
    engine.set_module_resolver(ScriptsOnly {
        files: FileModuleResolver::new_with_path(&scripts),
        dir: scripts,
    });
    if let Some(stop) = opts.stop.clone() {
        engine.on_progress(move |_| {
            (stop.load(Ordering::Relaxed) != 0).then(|| "interrupted".into())
        });
    }
    let mut ast = engine
        .compile(source)
        .map_err(|e| from_rhai(&opts.script, source, &EvalAltResult::from(e)))?;
    ast.set_source(opts.script.display().to_string());
    let ast = Arc::new(ast);
    let host = Arc::new(Mutex::new(Host::new(opts, dry, cwd, obs, ast.clone())?));
    api::register(&mut engine, &host);
    let result = engine.run_ast(&ast);
    let summary = api::finish(&host);
    result.map_err(|e| from_rhai(&opts.script, source, &e))?;
    Ok(summary)
}
