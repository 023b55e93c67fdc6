//! Criterion's results: read from its `estimates.json` files, merged (the lower median
//! of a benchmark run twice), saved and loaded as one JSON file.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::SystemTime;

use serde_json::Value;

/// One criterion result.
#[derive(Clone, Debug)]
pub(crate) struct Estimate {
    /// Median time per iteration, ns.
    pub(crate) median: f64,
    /// Its 95% confidence interval, ns.
    pub(crate) low: f64,
    pub(crate) high: f64,
}

/// Adds `new` to `into` under `prefix`, keeping the lower median of a benchmark seen
/// twice.
pub(crate) fn keep_lower(
    into: &mut BTreeMap<String, Estimate>,
    new: BTreeMap<String, Estimate>,
    prefix: &str,
) {
    for (id, e) in new {
        let id = format!("{prefix}{id}");
        match into.get(&id) {
            Some(old) if old.median <= e.median => {}
            _ => {
                into.insert(id, e);
            }
        }
    }
}

pub(crate) fn estimates_to_json(results: &BTreeMap<String, Estimate>) -> Value {
    results
        .iter()
        .map(|(id, e)| (id.clone(), serde_json::json!([e.median, e.low, e.high])))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

pub(crate) fn estimates_from_json(v: &Value) -> BTreeMap<String, Estimate> {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(id, e)| {
            Some((
                id.clone(),
                Estimate {
                    median: e[0].as_f64()?,
                    low: e[1].as_f64()?,
                    high: e[2].as_f64()?,
                },
            ))
        })
        .collect()
}

/// Every `new/estimates.json` under `home`, by "group/function" id; with `since`, only
/// those written after it (results of benchmarks removed since are left out).
pub(crate) fn read_estimates(home: &Path, since: Option<SystemTime>) -> BTreeMap<String, Estimate> {
    let mut out = BTreeMap::new();
    let mut stack = vec![home.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.file_name().and_then(|n| n.to_str()) != Some("estimates.json")
                || path
                    .parent()
                    .and_then(Path::file_name)
                    .and_then(|n| n.to_str())
                    != Some("new")
            {
                continue;
            }
            if let Some(since) = since {
                let written = entry.metadata().and_then(|m| m.modified());
                if written.map_or(true, |w| w < since) {
                    continue;
                }
            }
            let Some(id) = fs::read_to_string(path.with_file_name("benchmark.json"))
                .ok()
                .and_then(|s| serde_json::from_str::<Value>(&s).ok())
                .and_then(|v| v["full_id"].as_str().map(str::to_string))
            else {
                continue;
            };
            let Some(est) = fs::read_to_string(&path)
                .ok()
                .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            else {
                continue;
            };
            let median = &est["median"];
            let (Some(median), Some(low), Some(high)) = (
                median["point_estimate"].as_f64(),
                median["confidence_interval"]["lower_bound"].as_f64(),
                median["confidence_interval"]["upper_bound"].as_f64(),
            ) else {
                continue;
            };
            out.insert(id, Estimate { median, low, high });
        }
    }
    out
}
