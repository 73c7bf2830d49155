//! The routing table: host and path → route index, compiled once per config.
//!
//! Host specificity comes first (exact > wildcard, longest suffix first > any
//! host), then the longest path prefix on a segment boundary. A request whose
//! host tier has no matching path falls through to the next tier, so an
//! any-host catch-all still serves it.

use std::collections::HashMap;

use crate::config::{HostMatch, Route};

/// Index into the config's route list.
pub type RouteIdx = usize;

#[derive(Debug, Default)]
pub struct RouteTable {
    exact: HashMap<String, Vec<(String, RouteIdx)>>,
    /// (suffix such as ".example.com", prefixes), longest suffix first.
    wildcard: Vec<(String, Vec<(String, RouteIdx)>)>,
    any: Vec<(String, RouteIdx)>,
}

impl RouteTable {
    pub fn new(routes: &[Route]) -> Self {
        let mut table = RouteTable::default();
        for (idx, route) in routes.iter().enumerate() {
            let entry = (route.path_prefix.clone(), idx);
            match &route.host {
                HostMatch::Any => table.any.push(entry),
                HostMatch::Exact(host) => table.exact.entry(host.clone()).or_default().push(entry),
                HostMatch::Wildcard(suffix) => {
                    match table.wildcard.iter_mut().find(|(s, _)| s == suffix) {
                        Some((_, list)) => list.push(entry),
                        None => table.wildcard.push((suffix.clone(), vec![entry])),
                    }
                }
            }
        }
        let by_length =
            |list: &mut Vec<(String, RouteIdx)>| list.sort_by_key(|e| std::cmp::Reverse(e.0.len()));
        table.exact.values_mut().for_each(by_length);
        table
            .wildcard
            .iter_mut()
            .for_each(|(_, list)| by_length(list));
        table.wildcard.sort_by_key(|e| std::cmp::Reverse(e.0.len()));
        by_length(&mut table.any);
        table
    }

    /// The route for a request. `host` is the Host header or authority as sent
    /// (any case, maybe with a port); `path` is the request path.
    pub fn find(&self, host: &str, path: &str) -> Option<RouteIdx> {
        let host = strip_port(host);
        if !self.exact.is_empty() {
            let exact = if host.bytes().any(|b| b.is_ascii_uppercase()) {
                self.exact.get(&host.to_ascii_lowercase())
            } else {
                self.exact.get(host)
            };
            if let Some(found) = exact.and_then(|list| longest_prefix(list, path)) {
                return Some(found);
            }
        }
        for (suffix, list) in &self.wildcard {
            if host.len() > suffix.len() && ends_with_ignore_case(host, suffix) {
                if let Some(found) = longest_prefix(list, path) {
                    return Some(found);
                }
            }
        }
        longest_prefix(&self.any, path)
    }
}

fn longest_prefix(list: &[(String, RouteIdx)], path: &str) -> Option<RouteIdx> {
    list.iter()
        .find(|(prefix, _)| prefix_matches(prefix, path))
        .map(|&(_, idx)| idx)
}

/// `/users` matches `/users`, `/users/1` and `/users?x`, not `/usersx`.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

fn ends_with_ignore_case(host: &str, suffix: &str) -> bool {
    let start = host.len() - suffix.len();
    host.as_bytes()[start..].eq_ignore_ascii_case(suffix.as_bytes())
}

/// `api.example.com:8443` → `api.example.com`; `[::1]:80` → `[::1]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rfind(':') {
        Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, host: HostMatch, prefix: &str) -> Route {
        Route {
            name: name.into(),
            host,
            path_prefix: prefix.into(),
            backend: "b".into(),
            timeout: std::time::Duration::from_secs(60),
        }
    }

    fn table() -> (RouteTable, Vec<Route>) {
        let routes = vec![
            route("any-root", HostMatch::Any, "/"),
            route("any-users", HostMatch::Any, "/users"),
            route(
                "exact-root",
                HostMatch::Exact("api.example.com".into()),
                "/",
            ),
            route(
                "exact-users",
                HostMatch::Exact("api.example.com".into()),
                "/users",
            ),
            route("wild", HostMatch::Wildcard(".example.com".into()), "/"),
            route(
                "wild-deep",
                HostMatch::Wildcard(".eu.example.com".into()),
                "/",
            ),
            route(
                "exact-only-admin",
                HostMatch::Exact("admin.example.org".into()),
                "/admin",
            ),
        ];
        (RouteTable::new(&routes), routes)
    }

    fn name(host: &str, path: &str) -> Option<String> {
        let (table, routes) = table();
        table.find(host, path).map(|i| routes[i].name.clone())
    }

    #[test]
    fn exact_host_beats_wildcard_beats_any() {
        assert_eq!(name("api.example.com", "/x").as_deref(), Some("exact-root"));
        assert_eq!(name("web.example.com", "/x").as_deref(), Some("wild"));
        assert_eq!(name("other.org", "/x").as_deref(), Some("any-root"));
    }

    #[test]
    fn host_is_matched_without_case_or_port() {
        assert_eq!(
            name("API.Example.COM:8443", "/users/7").as_deref(),
            Some("exact-users")
        );
        assert_eq!(name("Web.Example.com:80", "/").as_deref(), Some("wild"));
    }

    #[test]
    fn wildcard_needs_at_least_one_label_and_prefers_the_longest_suffix() {
        assert_eq!(name("example.com", "/").as_deref(), Some("any-root"));
        assert_eq!(name("a.b.example.com", "/").as_deref(), Some("wild"));
        assert_eq!(name("x.eu.example.com", "/").as_deref(), Some("wild-deep"));
    }

    #[test]
    fn longest_prefix_wins_on_segment_boundaries() {
        assert_eq!(name("other", "/users").as_deref(), Some("any-users"));
        assert_eq!(name("other", "/users/1").as_deref(), Some("any-users"));
        assert_eq!(name("other", "/usersx").as_deref(), Some("any-root"));
    }

    #[test]
    fn a_host_tier_without_a_matching_path_falls_through() {
        assert_eq!(
            name("admin.example.org", "/admin/x").as_deref(),
            Some("exact-only-admin")
        );
        assert_eq!(
            name("admin.example.org", "/other").as_deref(),
            Some("any-root")
        );
    }

    #[test]
    fn no_match_is_none() {
        let routes = vec![route("users", HostMatch::Exact("a.com".into()), "/users")];
        let table = RouteTable::new(&routes);
        assert_eq!(table.find("b.com", "/users"), None);
        assert_eq!(table.find("a.com", "/orders"), None);
    }

    #[test]
    fn ports_and_ipv6_literals_are_stripped_correctly() {
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("host:80"), "host");
        assert_eq!(strip_port("host"), "host");
    }
}
