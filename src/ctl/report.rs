//! What `ctl` prints: one line per replica (and backend, for `status`), or
//! one JSON document with `--output json`; and the exit status.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::outcome::{Command, Outcome, DISAGREE, FAILED, OK};

/// Prints the report of `outcomes`; returns the exit status.
pub fn print(command: &Command, outcomes: &[Outcome], json: bool) -> u8 {
    match command {
        Command::Status { backend } => status(outcomes, backend.as_deref(), json),
        Command::Action { .. } | Command::Reload => acted(outcomes, json),
    }
}

/// Why a replica's answer is not a success, in a few words.
fn failure(o: &Outcome) -> Option<String> {
    if let Some(error) = &o.error {
        return Some(error.clone());
    }
    let status = o.status?;
    if status.is_success() {
        return None;
    }
    let detail = o.body["error"]
        .as_str()
        .map(str::to_string)
        .or_else(|| o.body.as_str().map(str::to_string))
        .unwrap_or_default();
    Some(format!("HTTP {}: {detail}", status.as_u16()))
}

fn acted(outcomes: &[Outcome], json: bool) -> u8 {
    let failed = outcomes.iter().filter(|o| !o.ok()).count();
    if json {
        let replicas: Vec<Value> = outcomes
            .iter()
            .map(|o| {
                json!({
                    "admin": o.replica.base,
                    "ok": o.ok(),
                    "status": o.status.map(|s| s.as_u16()),
                    "answer": o.body,
                    "error": failure(o),
                })
            })
            .collect();
        println!("{}", json!({ "replicas": replicas, "failed": failed }));
    } else {
        for o in outcomes {
            match failure(o) {
                None => {
                    let result = o.body["result"].as_str().unwrap_or("done");
                    let phase = o.body["phase"]
                        .as_str()
                        .map(|p| format!(" (phase {p})"))
                        .unwrap_or_default();
                    println!("{}  ok: {result}{phase}", o.replica.base);
                }
                Some(why) => println!("{}  FAILED: {why}", o.replica.base),
            }
        }
        if failed > 0 {
            println!("{failed} of {} replica(s) failed", outcomes.len());
        }
    }
    if failed > 0 {
        FAILED
    } else {
        OK
    }
}

/// What replicas must agree on for one backend: phase, weights and step.
fn agreement(b: &Value) -> String {
    let weights: BTreeMap<&String, String> = b["weights"]
        .as_object()
        .map(|w| {
            w.iter()
                .map(|(v, x)| (v, format!("{:.2}", x.as_f64().unwrap_or(0.0))))
                .collect()
        })
        .unwrap_or_default();
    format!(
        "{} {:?} {}",
        b["phase"].as_str().unwrap_or("-"),
        weights,
        b["step"]
    )
}

/// `phase progressing  weights v1 90% v2 10%  step 1  v1 0.20% p99 12ms (1200)  ...`
fn describe(b: &Value) -> String {
    let weights: Vec<String> = b["weights"]
        .as_object()
        .map(|w| {
            w.iter()
                .map(|(v, x)| format!("{v} {}%", x.as_f64().unwrap_or(0.0)))
                .collect()
        })
        .unwrap_or_default();
    let windows: Vec<String> = b["versions"]
        .as_object()
        .map(|vs| {
            vs.iter()
                .map(|(v, s)| {
                    let w = &s["window"];
                    let p99 = w["p99_ms"]
                        .as_f64()
                        .map_or("-".to_string(), |p| format!("{p:.1}ms"));
                    format!(
                        "{v} {:.2}% p99 {p99} ({})",
                        w["error_rate"].as_f64().unwrap_or(0.0) * 100.0,
                        w["requests"].as_u64().unwrap_or(0)
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let step = match b["step"].as_u64() {
        Some(s) => format!("  step {s}"),
        None => String::new(),
    };
    format!(
        "{:<12} weights {}{step}  {}",
        b["phase"].as_str().unwrap_or("-"),
        weights.join(" "),
        windows.join("  ")
    )
}

fn status(outcomes: &[Outcome], only: Option<&str>, json: bool) -> u8 {
    // backend -> [(replica index, its document for the backend)]
    let mut backends: BTreeMap<String, Vec<(usize, Value)>> = BTreeMap::new();
    for (i, o) in outcomes.iter().enumerate() {
        if !o.ok() {
            continue;
        }
        if let Some(map) = o.body["backends"].as_object() {
            for (name, b) in map {
                if only.is_none_or(|n| n == name) {
                    backends
                        .entry(name.clone())
                        .or_default()
                        .push((i, b.clone()));
                }
            }
        }
    }
    let failed = outcomes.iter().filter(|o| !o.ok()).count();
    let unknown = only.filter(|n| failed < outcomes.len() && !backends.contains_key(*n));
    // Per backend: the majority's view, and who differs from it.
    let mut disagreements: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut dissenters: Vec<(usize, String)> = Vec::new();
    for (name, views) in &backends {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for (_, b) in views {
            *counts.entry(agreement(b)).or_default() += 1;
        }
        let seen_on = views.len();
        let missing = outcomes.len() - failed - seen_on;
        if counts.len() > 1 || missing > 0 {
            let mut by_phase: BTreeMap<String, usize> = BTreeMap::new();
            for (_, b) in views {
                let key = format!(
                    "{} at {}",
                    b["phase"].as_str().unwrap_or("-"),
                    describe_weights(b)
                );
                *by_phase.entry(key).or_default() += 1;
            }
            let mut parts: Vec<String> = by_phase
                .iter()
                .map(|(k, n)| format!("{k} on {n}"))
                .collect();
            if missing > 0 {
                parts.push(format!("unknown on {missing}"));
            }
            disagreements.insert(name.clone(), parts);
            let majority = counts
                .iter()
                .max_by_key(|(_, n)| **n)
                .map(|(k, _)| k.clone())
                .unwrap_or_default();
            for (i, b) in views {
                if agreement(b) != majority {
                    dissenters.push((*i, name.clone()));
                }
            }
        }
    }
    if json {
        let replicas: Vec<Value> = outcomes
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let mut doc = Map::new();
                doc.insert("admin".into(), json!(o.replica.base));
                doc.insert("ok".into(), json!(o.ok()));
                doc.insert("error".into(), json!(failure(o)));
                let mine: Map<String, Value> = backends
                    .iter()
                    .filter_map(|(name, views)| {
                        views
                            .iter()
                            .find(|(j, _)| *j == i)
                            .map(|(_, b)| (name.clone(), b.clone()))
                    })
                    .collect();
                doc.insert("backends".into(), Value::Object(mine));
                let differs: Vec<&String> = dissenters
                    .iter()
                    .filter(|(j, _)| *j == i)
                    .map(|(_, b)| b)
                    .collect();
                doc.insert("disagrees".into(), json!(differs));
                Value::Object(doc)
            })
            .collect();
        println!(
            "{}",
            json!({ "replicas": replicas, "disagreements": disagreements, "failed": failed })
        );
    } else {
        for (i, o) in outcomes.iter().enumerate() {
            if let Some(why) = failure(o) {
                println!("{}  FAILED: {why}", o.replica.base);
                continue;
            }
            for (name, views) in &backends {
                if let Some((_, b)) = views.iter().find(|(j, _)| *j == i) {
                    let flag = if dissenters.contains(&(i, name.clone())) {
                        "  <- DISAGREES"
                    } else {
                        ""
                    };
                    println!("{}  {name}  {}{flag}", o.replica.base, describe(b));
                }
            }
        }
        for (name, parts) in &disagreements {
            println!("{name}: replicas disagree: {}", parts.join(", "));
        }
        if let Some(name) = unknown {
            println!("no backend {name:?} on any replica that answered");
        }
        if failed > 0 {
            println!("{failed} of {} replica(s) failed", outcomes.len());
        }
    }
    if failed > 0 || unknown.is_some() {
        FAILED
    } else if !disagreements.is_empty() {
        DISAGREE
    } else {
        OK
    }
}

fn describe_weights(b: &Value) -> String {
    b["weights"]
        .as_object()
        .map(|w| {
            w.iter()
                .map(|(v, x)| format!("{v} {}%", x.as_f64().unwrap_or(0.0)))
                .collect::<Vec<_>>()
                .join("/")
        })
        .unwrap_or_default()
}
