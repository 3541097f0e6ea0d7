//! What a script sees: `param`, `experiment`, `log`, `model`, `chart_data`, `data`,
//! `warm_start`, `train`, `evaluate`, `report`, and the `Model`, `Data` and `Run` values they
//! pass around. Each binding turns script values into the request the CLI would build and
//! hands it to the library; nothing here decides how a run is done.

mod data;
mod results;
mod runs;
mod values;

use rhai::{Dynamic, Engine};

use super::host::{with, HostFailure, HostRef};

/// Registers `name` with `engine` (`register_fn` or `register_get`) as a function that runs
/// `body` with the host locked as `h` and the script's arguments.
macro_rules! host_fn {
    ($engine:ident . $method:ident, $host:expr, $name:expr, |$h:ident $(, $arg:ident : $ty:ty)*| $body:expr) => {{
        let shared = $host.clone();
        $engine.$method($name, move |$($arg: $ty),*| crate::script::host::with(&shared, |$h| $body));
    }};
}
pub(crate) use host_fn;

/// Registers every primitive and value type.
pub(crate) fn register(engine: &mut Engine, host: &HostRef) {
    engine
        .register_type_with_name::<HostFailure>("Error")
        .register_fn("to_string", |e: &mut HostFailure| e.to_string());
    session(engine, host);
    values::register(engine, host);
    data::register(engine, host);
    runs::register(engine, host);
    results::register(engine, host);
}

/// `print`, `log`, `param` and `experiment`.
fn session(engine: &mut Engine, host: &HostRef) {
    let h = host.clone();
    engine.on_print(move |s| {
        let _ = with(&h, |host| {
            // A dry run's values are placeholders; what it shows is the plan.
            if !host.dry {
                host.obs.on_log(s);
            }
            Ok(())
        });
    });
    host_fn!(engine.register_fn, host, "log", |h, s: &str| {
        h.obs.on_log(s);
        Ok(())
    });
    host_fn!(
        engine.register_fn,
        host,
        "param",
        |h, name: &str, default: Dynamic| h.param(name, default)
    );
    host_fn!(engine.register_fn, host, "experiment", |h, name: &str| {
        crate::runs::identity::check_name(name).map_err(|_| {
            format!("experiment(\"{name}\"): use letters, digits, `.`, `_` and `-` (not starting with `.`)")
        })?;
        h.experiment = name.to_string();
        Ok(())
    });
}
