//! Configuration: the file format (`file`), validation (`validate`), the
//! validated model (`model`) and its errors (`error`).

mod error;
mod file;
mod model;
mod validate;

use std::path::Path;

pub use error::{ConfigError, Diagnostic};
pub use model::*;

/// Parses and validates config text; `name` is the file name used in errors.
pub fn parse(text: &str, name: &str) -> Result<Config, ConfigError> {
    let invalid = |diagnostics| ConfigError::Invalid {
        file: name.to_string(),
        diagnostics,
    };
    let file: file::ConfigFile =
        serde_saphyr::from_str(text).map_err(|e| invalid(vec![syntax(&e)]))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    validate::validate(file, cores).map_err(invalid)
}

/// Reads a config file's text: the one place the file is read (at start,
/// by `check`, and on every reload).
pub fn read(path: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

/// Reads, parses and validates a config file; also returns its text.
pub fn load(path: &Path) -> Result<(Config, String), ConfigError> {
    let name = path.display().to_string();
    let text = read(path).map_err(|e| ConfigError::Read {
        file: name.clone(),
        reason: e.to_string(),
    })?;
    Ok((parse(&text, &name)?, text))
}

/// A YAML or type error from the deserializer, as one positioned diagnostic.
fn syntax(e: &serde_saphyr::Error) -> Diagnostic {
    let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    let rendered = e.without_snippet().to_string();
    // The message may end with its own "at line X column Y"; we print the
    // position in front, so keep only the first line of the message.
    let first = rendered.lines().next().unwrap_or("invalid YAML");
    let message = first
        .rfind(" at line ")
        .map_or(first, |i| &first[..i])
        .trim()
        .to_string();
    Diagnostic::new(line, column, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "listeners:\n  - name: http\n    bind: \"127.0.0.1:8080\"\nroutes:\n  - name: all\n    backend: app\n";

    fn backend(body: &str) -> String {
        format!("{BASE}backends:\n  app:\n{body}")
    }

    /// The messages of every problem in `yaml`, with their line numbers.
    fn problems(yaml: &str) -> Vec<(u64, String)> {
        match parse(yaml, "t.yaml") {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid { diagnostics, .. }) => diagnostics
                .into_iter()
                .map(|d| (d.line, d.message))
                .collect(),
            Err(e) => panic!("{e}"),
        }
    }

    fn assert_problem(yaml: &str, line: u64, fragment: &str) {
        let found = problems(yaml);
        assert!(
            found
                .iter()
                .any(|(l, m)| *l == line && m.contains(fragment)),
            "expected line {line} containing {fragment:?}, got {found:?}"
        );
    }

    const TWO_VERSIONS: &str = "    versions:\n      v1: { endpoints: [\"127.0.0.1:1\"] }\n      v2: { endpoints: [\"127.0.0.1:2\"] }\n";

    #[test]
    fn a_minimal_config_gets_every_default() {
        let config = parse(
            &backend("    versions:\n      v1: { endpoints: [\"127.0.0.1:1\"] }\n"),
            "t",
        )
        .expect("valid");
        assert_eq!(config.limits, Limits::default());
        assert_eq!(config.shutdown, Shutdown::default());
        assert_eq!(config.admin.bind.to_string(), "127.0.0.1:9901");
        assert!(config.access_log);
        assert_eq!(config.routes[0].path_prefix, "/");
        assert_eq!(config.routes[0].timeout, std::time::Duration::from_secs(60));
        let app = &config.backends["app"];
        assert_eq!(
            app.release,
            Release::Single {
                version: "v1".into()
            }
        );
        assert_eq!(app.load_balancing, LoadBalancing::RoundRobin);
        assert_eq!(app.outlier, Outlier::default());
    }

    #[test]
    fn several_versions_need_a_release_block() {
        assert_problem(&backend(TWO_VERSIONS), 10, "needs a `release:` block");
    }

    #[test]
    fn canary_keys_under_blue_green_are_rejected() {
        let yaml = backend(&format!(
            "{TWO_VERSIONS}    release: {{ strategy: blue_green, active: v1, weight: 5 }}\n"
        ));
        assert_problem(&yaml, 12, "`weight` belongs to strategy canary");
    }

    #[test]
    fn steps_must_increase_and_stay_within_0_to_100() {
        let yaml = backend(&format!(
            "{TWO_VERSIONS}    release:\n      strategy: canary\n      stable: v1\n      canary: v2\n      steps: [10, 5, 120]\n"
        ));
        let found = problems(&yaml);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].1.contains("steps must increase"), "{found:?}");
        assert!(found[1].1.contains("between 0 and 100"), "{found:?}");
    }

    #[test]
    fn sticky_needs_exactly_one_key() {
        let yaml = backend(&format!(
            "{TWO_VERSIONS}    release:\n      strategy: canary\n      stable: v1\n      canary: v2\n      sticky: {{ cookie: a, header: b }}\n"
        ));
        assert_problem(&yaml, 16, "exactly one of `cookie` or `header`");
    }

    #[test]
    fn stable_and_canary_must_differ() {
        let yaml = backend(&format!(
            "{TWO_VERSIONS}    release: {{ strategy: canary, stable: v1, canary: v1 }}\n"
        ));
        assert_problem(&yaml, 12, "canary must differ from stable");
    }

    #[test]
    fn duplicate_route_names_and_matches_are_rejected() {
        let yaml = "listeners:\n  - name: http\n    bind: \"127.0.0.1:8080\"\nroutes:\n  - name: a\n    backend: app\n  - name: a\n    backend: app\nbackends:\n  app:\n    versions:\n      v1: { endpoints: [\"127.0.0.1:1\"] }\n";
        assert_problem(yaml, 7, "duplicate route name");
        assert_problem(yaml, 7, "same host and path_prefix");
    }

    #[test]
    fn hosts_endpoints_and_prefixes_are_checked() {
        let yaml = "listeners:\n  - name: http\n    bind: \"127.0.0.1:8080\"\nroutes:\n  - name: a\n    match: { host: \"api.*.com\", path_prefix: users }\n    backend: app\nbackends:\n  app:\n    versions:\n      v1: { endpoints: [\"no-port\", \"10.0.0.1:0\", \"[::1]:80\", \"svc.ns:8080\"] }\n";
        let found = problems(yaml);
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(found
            .iter()
            .any(|(l, m)| *l == 6 && m.contains("host \"api.*.com\"")));
        assert!(found
            .iter()
            .any(|(l, m)| *l == 6 && m.contains("path_prefix \"users\"")));
        assert!(found
            .iter()
            .any(|(l, m)| *l == 11 && m.contains("\"no-port\"")));
        assert!(found
            .iter()
            .any(|(l, m)| *l == 11 && m.contains("\"10.0.0.1:0\"")));
    }

    #[test]
    fn wildcard_and_trailing_slashes_are_normalised() {
        let yaml = "listeners:\n  - name: http\n    bind: \"127.0.0.1:8080\"\nroutes:\n  - name: a\n    match: { host: \"*.Example.com\", path_prefix: /api/ }\n    backend: app\nbackends:\n  app:\n    versions:\n      v1: { endpoints: [\"127.0.0.1:1\"] }\n";
        let config = parse(yaml, "t").expect("valid");
        assert_eq!(
            config.routes[0].host,
            HostMatch::Wildcard(".example.com".into())
        );
        assert_eq!(config.routes[0].path_prefix, "/api");
    }

    #[test]
    fn workers_accepts_auto_or_a_count() {
        let ok = |w: &str| {
            parse(
                &format!(
                    "workers: {w}\n{}",
                    backend("    versions:\n      v1: { endpoints: [\"127.0.0.1:1\"] }\n")
                ),
                "t",
            )
        };
        assert!(ok("auto").is_ok());
        assert_eq!(ok("3").map(|c| c.workers).ok(), Some(3));
        assert!(ok("0").is_err());
        assert!(ok("many").is_err());
    }

    #[test]
    fn missing_sections_are_reported_not_panicked_on() {
        for text in ["", "{}", "listeners: []", "routes: 5", "- a\n- b", "\u{0}"] {
            let result = parse(text, "t");
            assert!(result.is_err(), "{text:?} should be invalid");
        }
    }

    #[test]
    fn discover_blocks_are_checked_with_positions() {
        let v = |version: &str| backend(&format!("    versions:\n{version}"));
        // Lines: 7 backends, 8 app, 9 versions, 10 v1.
        let both = "      v1:\n        endpoints: [\"127.0.0.1:1\"]\n        discover: { dns: app.ns.svc, port: 80 }\n";
        assert_problem(&v(both), 12, "exclude each other");
        assert_problem(
            &v("      v1: { protocol: h2 }\n"),
            10,
            "add `endpoints: [host:port, ...]` or a `discover:` block",
        );
        let no_port = "      v1:\n        discover: { dns: app.ns.svc }\n";
        assert_problem(&v(no_port), 11, "discover needs `port`");
        let zero = "      v1:\n        discover: { dns: app.ns.svc, port: 0 }\n";
        assert_problem(&v(zero), 11, "discover.port must be 1..65535");
        let big =
            "      v1:\n        discover:\n          dns: app.ns.svc\n          port: 70000\n";
        assert_problem(&v(big), 13, "discover.port must be 1..65535, got 70000");
        let name = "      v1:\n        discover:\n          dns: \"app ns\"\n          port: 80\n";
        assert_problem(&v(name), 12, "is not a DNS name");
        let ip = "      v1:\n        discover:\n          dns: 10.0.0.1\n          port: 80\n";
        assert_problem(&v(ip), 12, "list it under `endpoints`");
        let resolver = "      v1:\n        discover:\n          dns: app.ns.svc\n          port: 80\n          resolver: \"dns.local:53\"\n";
        assert_problem(&v(resolver), 14, "is not a DNS server address");
        let unknown = "      v1:\n        discover:\n          dns: app.ns.svc\n          port: 80\n          ttl: 5s\n";
        assert!(
            !problems(&v(unknown)).is_empty(),
            "unknown keys are refused"
        );
        let interval = "      v1:\n        discover:\n          dns: app.ns.svc\n          port: 80\n          interval: 0s\n";
        assert_problem(
            &v(interval),
            14,
            "discover.interval must be greater than zero",
        );
    }

    #[test]
    fn a_discover_block_gets_its_defaults() {
        let yaml = backend("    versions:\n      v1:\n        discover: { dns: app-v1.shop.svc.cluster.local., port: 8080, resolver: \"10.96.0.10\" }\n");
        let config = parse(&yaml, "t").expect("valid");
        let v1 = &config.backends["app"].versions["v1"];
        assert!(v1.endpoints.is_empty());
        let d = v1.discover.as_ref().expect("discover");
        assert_eq!(d.dns, "app-v1.shop.svc.cluster.local.");
        assert_eq!(d.port, 8080);
        assert_eq!(d.interval, std::time::Duration::from_secs(5));
        assert_eq!(d.hold_empty, std::time::Duration::from_secs(30));
        assert_eq!(d.resolver, Some("10.96.0.10:53".parse().expect("addr")));
        let yaml = backend("    versions:\n      v1:\n        discover: { dns: app, port: 1, resolver: \"[fd00::10]:5353\", hold_empty: 0s }\n");
        let d = parse(&yaml, "t").expect("valid").backends["app"].versions["v1"]
            .discover
            .clone()
            .expect("discover");
        assert_eq!(d.resolver, Some("[fd00::10]:5353".parse().expect("addr")));
        assert_eq!(d.hold_empty, std::time::Duration::ZERO);
    }
}
