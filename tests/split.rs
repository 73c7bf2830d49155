//! Version choice through the real gateway: weighted split, stickiness,
//! override header, blue/green, single-version backends, fallback and 503.

mod support;

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use support::*;

/// Counts how many of `n` fresh (cookie-less) requests the canary served.
async fn canary_share(gw: &TestGateway, n: usize) -> usize {
    let client = Client::new();
    let mut canary = 0;
    for _ in 0..n {
        let resp = client.get(&gw.url("/")).await;
        assert_eq!(resp.status, 200);
        if resp.header("x-switchyard-version") == Some("v2") {
            assert_eq!(resp.header(SERVED_BY), Some("v2"));
            canary += 1;
        }
    }
    canary
}

#[tokio::test]
async fn weight_10_sends_about_a_tenth_to_the_canary() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let gw = TestGateway::start(&canary(v1.addr(), v2.addr(), 10.0, ""));
    let canary = canary_share(&gw, 2000).await;
    // Binomial(2000, 0.1): mean 200, sd 13.4; 7–13 % is beyond ±4 sd.
    assert!(
        (140..=260).contains(&canary),
        "canary served {canary} of 2000"
    );
    assert_eq!(v1.hits() + v2.hits(), 2000);
}

#[tokio::test]
async fn weight_0_and_100_are_exact() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let gw = TestGateway::start(&canary(v1.addr(), v2.addr(), 0.0, ""));
    assert_eq!(canary_share(&gw, 300).await, 0);
    drop(gw);
    let gw = TestGateway::start(&canary(v1.addr(), v2.addr(), 100.0, ""));
    assert_eq!(canary_share(&gw, 300).await, 300);
}

#[tokio::test]
async fn a_sticky_cookie_is_given_once_and_keeps_the_client_on_its_version() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let gw = TestGateway::start(&canary(
        v1.addr(),
        v2.addr(),
        50.0,
        "sticky: { cookie: sy-app }",
    ));
    let client = Client::new();
    let mut seen_versions = HashSet::new();
    for _ in 0..20 {
        // A new client: gets a cookie, then 50 requests with it.
        let first = client.get(&gw.url("/")).await;
        let set_cookie = first
            .header("set-cookie")
            .expect("a new client gets a cookie")
            .to_string();
        assert!(
            set_cookie.starts_with("sy-app=") && set_cookie.contains("Path=/"),
            "{set_cookie}"
        );
        let cookie = set_cookie.split(';').next().unwrap_or_default().to_string();
        let version = first
            .header("x-switchyard-version")
            .expect("version header")
            .to_string();
        for _ in 0..50 {
            let resp = client
                .get_with(&gw.url("/"), &[("cookie", &format!("other=1; {cookie}"))])
                .await;
            assert_eq!(resp.header("x-switchyard-version"), Some(version.as_str()));
            assert_eq!(
                resp.header("set-cookie"),
                None,
                "a client with a cookie gets no new one"
            );
        }
        seen_versions.insert(version);
    }
    // 20 clients at 50 %: both versions show up (all one side: p = 2^-19).
    assert_eq!(seen_versions.len(), 2);
}

#[tokio::test]
async fn a_sticky_header_maps_the_same_key_to_the_same_version() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let gw = TestGateway::start(&canary(
        v1.addr(),
        v2.addr(),
        50.0,
        "sticky: { header: x-user-id }",
    ));
    let client = Client::new();
    let mut on_canary = 0;
    for user in 0..40 {
        let id = format!("user-{user}");
        let first = client.get_with(&gw.url("/"), &[("x-user-id", &id)]).await;
        let version = first
            .header("x-switchyard-version")
            .expect("version")
            .to_string();
        on_canary += usize::from(version == "v2");
        for _ in 0..50 {
            let resp = client.get_with(&gw.url("/"), &[("x-user-id", &id)]).await;
            assert_eq!(
                resp.header("x-switchyard-version"),
                Some(version.as_str()),
                "user {id} moved"
            );
        }
    }
    assert!(
        (5..=35).contains(&on_canary),
        "{on_canary} of 40 users on the canary at 50%"
    );
}

#[tokio::test]
async fn clients_on_the_canary_at_10_percent_stay_there_at_50_percent_on_another_replica() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let sticky = "sticky: { header: x-user-id }";
    let at_10 = TestGateway::start(&canary(v1.addr(), v2.addr(), 10.0, sticky));
    let at_50 = TestGateway::start(&canary(v1.addr(), v2.addr(), 50.0, sticky));
    let client = Client::new();
    let (mut canary_at_10, mut canary_at_50) = (0, 0);
    for user in 0..400 {
        let id = format!("u{user}");
        let low = client
            .get_with(&at_10.url("/"), &[("x-user-id", &id)])
            .await;
        let high = client
            .get_with(&at_50.url("/"), &[("x-user-id", &id)])
            .await;
        let low_canary = low.header("x-switchyard-version") == Some("v2");
        let high_canary = high.header("x-switchyard-version") == Some("v2");
        if low_canary {
            assert!(high_canary, "{id} was on the canary at 10% but not at 50%");
        }
        canary_at_10 += usize::from(low_canary);
        canary_at_50 += usize::from(high_canary);
    }
    assert!(
        (16..=72).contains(&canary_at_10),
        "{canary_at_10} of 400 at 10%"
    );
    assert!(
        (150..=250).contains(&canary_at_50),
        "{canary_at_50} of 400 at 50%"
    );
}

#[tokio::test]
async fn the_override_header_forces_a_known_version_and_ignores_unknown_ones() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let gw = TestGateway::start(&canary(
        v1.addr(),
        v2.addr(),
        0.0,
        "override_header: x-version",
    ));
    let client = Client::new();
    for _ in 0..20 {
        let resp = client.get_with(&gw.url("/"), &[("x-version", "v2")]).await;
        assert_eq!(resp.header(SERVED_BY), Some("v2"));
        let resp = client.get_with(&gw.url("/"), &[("x-version", "v9")]).await;
        assert_eq!(resp.header(SERVED_BY), Some("v1"));
    }
}

#[tokio::test]
async fn blue_green_sends_all_to_active_and_preview_only_by_override() {
    let (blue, green) = (Backend::start("blue").await, Backend::start("green").await);
    let yaml = format!(
        "{}routes:\n  - name: all\n    backend: app\nbackends:\n  app:\n    versions:\n      blue: {{ endpoints: [\"{}\"] }}\n      green: {{ endpoints: [\"{}\"] }}\n    release: {{ strategy: blue_green, active: blue, preview: green, override_header: x-version }}\n",
        head(1),
        blue.addr(),
        green.addr()
    );
    let gw = TestGateway::start(&yaml);
    let client = Client::new();
    for _ in 0..200 {
        assert_eq!(
            client.get(&gw.url("/")).await.header(SERVED_BY),
            Some("blue")
        );
    }
    let preview = client
        .get_with(&gw.url("/"), &[("x-version", "green")])
        .await;
    assert_eq!(preview.header(SERVED_BY), Some("green"));
    assert_eq!(preview.header("x-switchyard-version"), Some("green"));
    assert_eq!(green.hits(), 1);
}

#[tokio::test]
async fn a_single_version_backend_needs_no_release() {
    let v1 = Backend::start("only").await;
    let gw = TestGateway::start(&single(&[v1.addr()], "", ""));
    let resp = Client::new().get(&gw.url("/")).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-switchyard-version"), Some("v1"));
    assert_eq!(resp.text(), "only");
}

/// Takes every endpoint of `version` in backend `app` out of rotation (as an
/// outlier ejection does) or puts it back.
fn set_health(gw: &TestGateway, version: &str, healthy: bool) {
    let snapshot = gw.gateway.shared().snapshot.load();
    let backend = snapshot
        .backends
        .iter()
        .find(|b| b.name == "app")
        .expect("backend app");
    let v = backend
        .versions
        .iter()
        .find(|v| v.name == version)
        .expect("version");
    for endpoint in &v.endpoints {
        endpoint.healthy.store(healthy, Ordering::Relaxed);
    }
}

#[tokio::test]
async fn an_unhealthy_version_falls_back_to_the_other_and_none_healthy_is_503() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let gw = TestGateway::start(&canary(v1.addr(), v2.addr(), 100.0, ""));
    let client = Client::new();
    set_health(&gw, "v2", false);
    for _ in 0..20 {
        let resp = client.get(&gw.url("/")).await;
        assert_eq!(resp.status, 200);
        assert_eq!(
            resp.header(SERVED_BY),
            Some("v1"),
            "canary unhealthy: stable serves"
        );
    }
    set_health(&gw, "v1", false);
    let resp = client.get(&gw.url("/")).await;
    assert_eq!(resp.status, 503);
    let id = resp.header("x-request-id").expect("request id").to_string();
    assert!(
        resp.text().contains(&id),
        "error body carries the request id: {}",
        resp.text()
    );
    set_health(&gw, "v2", true);
    assert_eq!(client.get(&gw.url("/")).await.header(SERVED_BY), Some("v2"));
}

#[tokio::test]
async fn a_thousand_requests_at_weight_10_send_within_half_a_percent_of_100_to_the_canary() {
    // The split roll is a randomized low-discrepancy sequence: short runs hit
    // the weight as closely as a weighted round robin would.
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let gw = TestGateway::start(&canary(v1.addr(), v2.addr(), 10.0, ""));
    for _ in 0..3 {
        let canary = canary_share(&gw, 1000).await;
        assert!(
            (95..=105).contains(&canary),
            "canary served {canary} of 1000"
        );
    }
}

#[tokio::test]
async fn when_every_healthy_endpoint_is_ejected_they_serve_rather_than_503() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let gw = TestGateway::start(&canary(v1.addr(), v2.addr(), 0.0, ""));
    {
        let snapshot = gw.gateway.shared().snapshot.load();
        for v in &snapshot.backends[0].versions {
            for endpoint in &v.endpoints {
                endpoint.ejected_until.store(u64::MAX, Ordering::Relaxed);
            }
        }
    }
    let client = Client::new();
    for _ in 0..10 {
        let resp = client.get(&gw.url("/")).await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        // Still by the split: weight 0 keeps the stable version.
        assert_eq!(resp.header(SERVED_BY), Some("v1"));
    }
}
