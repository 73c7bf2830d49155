//! Reading the gateway's `/metrics` in tests.

use std::collections::HashMap;

use super::client::Client;

/// Parses the text exposition into `name{labels}` → value.
pub fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The sum of `name`'s series whose labels include every one of `labels`.
pub fn sample(all: &HashMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    all.iter()
        .filter(|(key, _)| {
            key.starts_with(&format!("{name}{{"))
                && labels
                    .iter()
                    .all(|(k, v)| key.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| *v)
        .sum()
}

/// Scrapes `metrics_url` and sums `name` over the series with `labels`.
pub async fn metric(
    client: &Client,
    metrics_url: &str,
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    sample(
        &samples(&client.get(metrics_url).await.text()),
        name,
        labels,
    )
}
