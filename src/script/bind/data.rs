//! `model(...)`, `chart_data(...)` and `data(...)`: the inputs of runs.

use rhai::{Dynamic, Engine, Map};

use super::host_fn;
use super::values::{DataRef, ModelRef};
use crate::data::{Difficulty, Split};
use crate::runs::{layout, DataSpec};
use crate::script::host::{Host, HostError, HostRef};
use crate::script::options::take;

pub(super) fn register(engine: &mut Engine, host: &HostRef) {
    host_fn!(engine.register_fn, host, "model", |h, spec: &str| h
        .model(spec));
    host_fn!(
        engine.register_fn,
        host,
        "save_model",
        |h, m: Dynamic, to: &str| h.save_model(m, to)
    );
    host_fn!(engine.register_fn, host, "chart_data", |h, opts: Map| h
        .chart_data(opts));
    host_fn!(engine.register_fn, host, "chart_data", |h| h
        .chart_data(Map::new()));
    host_fn!(engine.register_fn, host, "data", |h, path: &str| h
        .data(path));
}

impl Host {
    /// A model directory, or a built-in preset created (once) under `ROOT/models/`.
    fn model(&mut self, spec: &str) -> Result<ModelRef, HostError> {
        let dir = self.path(spec)?;
        if dir.join("config.json").is_file() {
            return Ok(ModelRef {
                dir,
                ready: true,
                made_by: None,
            });
        }
        let preset = self.workspace.preset(spec).map_err(|_| {
            format!("model(\"{spec}\"): no model directory there and no preset of that name (presets: tiny, small)")
        })?;
        let dir = layout::preset_model(&self.root, spec);
        // A plan needs the preset's identity, so it creates it (a deterministic, built-in
        // model) where the runs will find it; a dry run creates nothing.
        if self.dry && self.planner.is_none() {
            return Ok(ModelRef::at(dir));
        }
        let created =
            layout::ensure_preset_model(&dir, &preset).map_err(|source| HostError::In {
                call: format!("model(\"{spec}\")"),
                source: Box::new(source),
            })?;
        if created {
            self.obs.on_log(&format!(
                "created the {spec} preset model in {}",
                dir.display()
            ));
        }
        Ok(ModelRef {
            dir,
            ready: true,
            made_by: None,
        })
    }

    /// `save_model(model_or_run, "dir")`: the model's files copied into `dir`, where other
    /// files (a README) stay. A dry run copies nothing.
    fn save_model(&mut self, m: Dynamic, to: &str) -> Result<ModelRef, HostError> {
        let from = super::runs::model_of(m, "save_model")?;
        let dir = self.path(to)?;
        if self.dry {
            return Ok(ModelRef::at(dir));
        }
        let copied =
            crate::model::copy_model_files(&from.dir, &dir).map_err(|source| HostError::In {
                call: format!("save_model(.., \"{to}\")"),
                source: Box::new(source.into()),
            })?;
        self.obs.on_log(&format!(
            "saved {} ({} files) to {}",
            from.dir.display(),
            copied.len(),
            dir.display()
        ));
        Ok(ModelRef {
            dir,
            ready: true,
            made_by: None,
        })
    }

    /// `chart_data(#{split, size, seed, difficulty})`: the built-in generator's samples.
    pub(super) fn chart_data(&mut self, mut opts: Map) -> Result<DataRef, HostError> {
        let split = match take(&mut opts, "split") {
            Some(v) => {
                let s = v.to_string();
                Split::parse(&s)
                    .ok_or_else(|| format!("chart_data: split `{s}` (use train, test or warmup)"))?
            }
            None => Split::Train,
        };
        let seed = int_option(&mut opts, "seed", crate::runs::SYNTHETIC_SEED as i64)?;
        let size = int_option(&mut opts, "size", crate::data::FULL_TRAIN_SIZE as i64)?;
        let difficulty = match take(&mut opts, "difficulty") {
            Some(v) => v
                .to_string()
                .parse::<Difficulty>()
                .map_err(|e| format!("chart_data: {e}"))?,
            None => Difficulty::default(),
        };
        if let Some(k) = opts.keys().next() {
            return Err(format!(
                "unknown chart_data option `{k}` (valid: split, size, seed, difficulty)"
            )
            .into());
        }
        if seed < 0 || size <= 0 {
            return Err("chart_data: size must be positive and seed not negative"
                .to_string()
                .into());
        }
        Ok(DataRef {
            spec: DataSpec::Synthetic {
                split,
                seed: seed as u64,
                difficulty,
            },
            size: size as usize,
        })
    }

    /// `data("file.jsonl")`: every sample of a chartrl JSONL or ChartQA JSON file.
    fn data(&mut self, path: &str) -> Result<DataRef, HostError> {
        let spec = DataSpec::File(self.path(path)?);
        let size = spec.samples(usize::MAX)?.len();
        Ok(DataRef { spec, size })
    }
}

/// The integer option `key` of `chart_data`, or `default`.
fn int_option(opts: &mut Map, key: &str, default: i64) -> Result<i64, String> {
    match take(opts, key) {
        Some(v) => v
            .as_int()
            .map_err(|t| format!("chart_data: `{key}` must be an integer, not {t}")),
        None => Ok(default),
    }
}
