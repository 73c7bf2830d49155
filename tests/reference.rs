//! The config reference (`config/switchyard.yaml`) against the code: every
//! key the parser accepts, at every level, and every enum value must be
//! documented there. The accepted keys are read from the parser itself — an
//! unknown key at each level makes serde list the ones it expects — so a key
//! added to the code without documentation fails this test.

use std::collections::BTreeSet;

/// YAML that puts an unknown key first at each level of the file format.
const LEVELS: &[(&str, &str)] = &[
    ("top level", "zz_probe: 1\n"),
    ("listeners[]", "listeners: [{zz_probe: 1}]\n"),
    ("listeners[].tls", "listeners: [{tls: {zz_probe: 1}}]\n"),
    (
        "listeners[].tls.certs[]",
        "listeners: [{tls: {certs: [{zz_probe: 1}]}}]\n",
    ),
    ("admin", "admin: {zz_probe: 1}\n"),
    ("limits", "limits: {zz_probe: 1}\n"),
    ("shutdown", "shutdown: {zz_probe: 1}\n"),
    ("routes[]", "routes: [{zz_probe: 1}]\n"),
    ("routes[].match", "routes: [{match: {zz_probe: 1}}]\n"),
    ("backends.NAME", "backends: {b: {zz_probe: 1}}\n"),
    (
        "versions.NAME",
        "backends: {b: {versions: {v: {zz_probe: 1}}}}\n",
    ),
    (
        "versions.NAME.discover",
        "backends: {b: {versions: {v: {discover: {zz_probe: 1}}}}}\n",
    ),
    (
        "versions.NAME.tls",
        "backends: {b: {versions: {v: {tls: {zz_probe: 1}}}}}\n",
    ),
    (
        "health_check",
        "backends: {b: {health_check: {zz_probe: 1}}}\n",
    ),
    ("outlier", "backends: {b: {outlier: {zz_probe: 1}}}\n"),
    ("release", "backends: {b: {release: {zz_probe: 1}}}\n"),
    (
        "release.sticky",
        "backends: {b: {release: {sticky: {zz_probe: 1}}}}\n",
    ),
    (
        "release.analysis",
        "backends: {b: {release: {analysis: {zz_probe: 1}}}}\n",
    ),
    (
        "analysis.source.prometheus",
        "backends: {b: {release: {analysis: {source: {prometheus: {zz_probe: 1}}}}}}\n",
    ),
];

/// YAML with an unknown value of each enum.
const ENUMS: &[(&str, &str)] = &[
    (
        "load_balancing",
        "backends: {b: {load_balancing: zz_probe}}\n",
    ),
    (
        "release.strategy",
        "backends: {b: {release: {strategy: zz_probe}}}\n",
    ),
    (
        "analysis.source",
        "backends: {b: {release: {analysis: {source: zz_probe}}}}\n",
    ),
];

/// The names serde lists in "expected one of a, b, c" (or "expected `a`").
fn expected_names(yaml: &str) -> BTreeSet<String> {
    let error = match switchyard::config::parse(yaml, "probe.yaml") {
        Ok(_) => panic!("the probe was accepted: {yaml}"),
        Err(e) => e.to_string(),
    };
    let Some((_, list)) = error.split_once("expected ") else {
        panic!("no expected list in {error:?} for {yaml}")
    };
    let list = list.trim_start_matches("one of ");
    list.split(',')
        .map(|name| name.trim().trim_matches('`').trim().to_string())
        .filter(|name| !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .collect()
}

fn reference() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/switchyard.yaml"
    ))
    .expect("read the reference")
}

#[test]
fn every_accepted_key_is_in_the_reference() {
    let reference = reference();
    let mut missing = Vec::new();
    let mut total = 0;
    for (level, yaml) in LEVELS {
        let names = expected_names(yaml);
        assert!(!names.is_empty(), "no keys found at {level}");
        for name in names {
            total += 1;
            if !reference.contains(&format!("{name}:")) {
                missing.push(format!("{level}: {name}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "config/switchyard.yaml does not document: {missing:?}"
    );
    assert!(
        total > 60,
        "only {total} keys found: the probes no longer reach every level"
    );
}

#[test]
fn every_enum_value_is_in_the_reference() {
    let reference = reference();
    for (level, yaml) in ENUMS {
        for value in expected_names(yaml) {
            assert!(
                reference.contains(&value),
                "{level}: value {value} is not documented"
            );
        }
    }
}
