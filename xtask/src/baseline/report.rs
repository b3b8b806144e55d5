//! The baseline's results: summary rows merged into `target/bench/summary.json`, and the
//! latency plot.

use super::*;

/// The summary rows: each figure for both systems, and `vs_spark_*` = ours / Spark.
pub(super) fn summary(ours: &Run, spark: &Run, latency: &[(u64, Run, Run)]) -> Vec<Metric> {
    let m = |name: String, value: f64, unit: &'static str, ceiling: Option<f64>| Metric {
        name,
        value,
        unit,
        ceiling,
    };
    let mut out = Vec::new();
    let mut both = |name: &str, unit: &'static str, f: &dyn Fn(&Run) -> f64, o: &Run, s: &Run| {
        out.push(m(format!("baseline_{name}_ours"), f(o), unit, None));
        out.push(m(format!("baseline_{name}_spark"), f(s), unit, None));
    };
    both(
        "drain_records_per_s",
        "records/s",
        &|r| r.records_per_s,
        ours,
        spark,
    );
    both("drain_rows", "rows", &|r| r.rows as f64, ours, spark);
    both(
        "drain_expected_rows",
        "rows",
        &|r| r.expected as f64,
        ours,
        spark,
    );
    both("cpu_s_per_1m", "s", &|r| r.cpu[0], ours, spark);
    both("broker_cpu_s_per_1m", "s", &|r| r.cpu[1], ours, spark);
    both("cql_cpu_s_per_1m", "s", &|r| r.cpu[2], ours, spark);
    both("peak_rss_mb", "MB", &|r| r.peak_rss_mb, ours, spark);
    for (k, o, s) in latency {
        for (q, p) in [("p50", 0.5), ("p99", 0.99), ("max", 1.0)] {
            both(&format!("{k}k_{q}_ms"), "ms", &|r| r.quantile(p), o, s);
        }
        both(&format!("{k}k_rows"), "rows", &|r| r.rows as f64, o, s);
        both(
            &format!("{k}k_expected_rows"),
            "rows",
            &|r| r.expected as f64,
            o,
            s,
        );
    }
    let ratio = |name: &str, a: f64, b: f64| m(format!("vs_spark_{name}"), a / b, "x", None);
    out.push(ratio("throughput", ours.records_per_s, spark.records_per_s));
    out.push(ratio("cpu", ours.cpu[0], spark.cpu[0]));
    out.push(ratio("memory", ours.peak_rss_mb, spark.peak_rss_mb));
    for (k, o, s) in latency {
        out.push(ratio(
            &format!("p99_{k}k"),
            o.quantile(0.99),
            s.quantile(0.99),
        ));
    }
    for r in &out {
        println!("  {:<40} {:>14.3} {}", r.name, r.value, r.unit);
    }
    out
}

/// Merges `metrics` into `summary.json`: each replaces the row of its name, and a baseline run
/// replaces every `baseline_*` and `vs_spark_*` row.
pub(crate) fn merge_summary(path: &Path, metrics: &[Metric]) -> anyhow::Result<()> {
    let mut rows: Vec<serde_json::Value> = fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    // A metric measured again replaces its earlier value; a baseline run replaces all of its own.
    let baseline = metrics.iter().any(|m| m.name.starts_with("vs_spark_"));
    rows.retain(|r| {
        let name = r["name"].as_str().unwrap_or_default();
        !(metrics.iter().any(|m| m.name == name)
            || baseline && (name.starts_with("baseline_") || name.starts_with("vs_spark_")))
    });
    for m in metrics {
        rows.push(serde_json::from_str(&m.json())?);
    }
    // One row per name: the last (a summary written before merging replaced rows may repeat).
    let mut seen = std::collections::HashSet::new();
    rows.reverse();
    rows.retain(|r| seen.insert(r["name"].as_str().unwrap_or_default().to_owned()));
    rows.reverse();
    fs::write(path, serde_json::to_string_pretty(&rows)? + "\n")?;
    println!("\nwrote {}", path.display());
    Ok(())
}

/// Latency percentiles against rate for both systems (matplotlib, from PyPI into a venv).
pub(super) fn plot(out_dir: &Path, latency: &[(u64, Run, Run)]) -> anyhow::Result<()> {
    let data: Vec<serde_json::Value> = latency
        .iter()
        .map(|(k, o, s)| {
            let q = |r: &Run| [0.5, 0.99, 1.0].map(|p| r.quantile(p));
            serde_json::json!({"rate": k * 1_000, "ours": q(o), "spark": q(s)})
        })
        .collect();
    let python = crate::python_tool("matplotlib", "python")?;
    let png = out_dir.join("baseline_latency.png");
    let status = Command::new(python)
        .arg(crate::project_root().join("xtask/baseline/plot.py"))
        .arg(serde_json::to_string(&data)?)
        .arg(&png)
        .status()?;
    if !status.success() {
        bail!("plot.py failed ({status})");
    }
    println!("wrote {}", png.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(name: &str, value: f64) -> Metric {
        Metric {
            name: name.into(),
            value,
            unit: "x",
            ceiling: None,
        }
    }

    fn names_values(path: &Path) -> Vec<(String, f64)> {
        let rows: Vec<serde_json::Value> =
            serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
        rows.iter()
            .map(|r| {
                (
                    r["name"].as_str().unwrap().to_owned(),
                    r["value"].as_f64().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn merging_replaces_rows_by_name_and_baseline_rows_as_a_set() {
        let dir = std::env::temp_dir().join(format!("xtask-summary-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("summary.json");
        let _ = fs::remove_file(&path);
        merge_summary(&path, &[metric("a", 1.0), metric("writes_w", 2.0)]).unwrap();
        merge_summary(
            &path,
            &[
                metric("vs_spark_throughput", 3.0),
                metric("baseline_x", 4.0),
            ],
        )
        .unwrap();
        // A stage run measured `a` again: its row is replaced, the others stay.
        merge_summary(&path, &[metric("a", 5.0)]).unwrap();
        // A new baseline run drops the old run's baseline rows it did not measure.
        merge_summary(&path, &[metric("vs_spark_throughput", 6.0)]).unwrap();
        let mut got = names_values(&path);
        got.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(
            got,
            vec![
                ("a".to_owned(), 5.0),
                ("vs_spark_throughput".to_owned(), 6.0),
                ("writes_w".to_owned(), 2.0),
            ]
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
