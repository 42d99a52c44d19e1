//! What the server's `/metrics` says happened during a run: the page is read before and after,
//! and the difference explains the bench's figures (how big the group commits were, whether a
//! connection was closed as too slow, which errors the server sent).

use std::collections::BTreeMap;

use serde::Serialize;

/// One reading of `/metrics`: every sample, keyed by its name and labels as written.
#[derive(Clone, Debug, Default)]
pub struct Reading(BTreeMap<String, f64>);

impl Reading {
    /// Parses the Prometheus text format (comments skipped, `NaN`/`+Inf` values ignored).
    pub fn parse(text: &str) -> Reading {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (key, value) = l.rsplit_once(' ')?;
                Some((key.trim().to_string(), value.parse::<f64>().ok().filter(|v| v.is_finite())?))
            })
            .collect();
        Reading(samples)
    }

    pub async fn fetch(server: &str) -> crate::Result<Reading> {
        Ok(Reading::parse(&parley_client::Client::new(server).metrics_text().await?))
    }

    fn get(&self, key: &str) -> f64 {
        self.0.get(key).copied().unwrap_or(0.0)
    }
}

/// The server's side of a run, from two readings.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct ServerSide {
    pub sends: f64,
    pub duplicate_sends: f64,
    pub messages_persisted: f64,
    pub deliveries: f64,
    pub replayed: f64,
    pub connections_opened: f64,
    pub too_slow_closes: f64,
    pub rate_limited: f64,
    pub commits: f64,
    pub mean_jobs_per_commit: Option<f64>,
    pub mean_commit_ms: Option<f64>,
    pub mean_send_to_persist_ms: Option<f64>,
    pub mean_fanout_ms: Option<f64>,
    /// Error frames and responses the server sent, by code (only codes that occurred).
    pub errors: BTreeMap<String, f64>,
}

impl ServerSide {
    pub fn between(before: &Reading, after: &Reading) -> ServerSide {
        let d = |k: &str| after.get(k) - before.get(k);
        let mean = |sum: &str, count: &str, scale: f64| {
            let n = d(count);
            (n > 0.0).then(|| d(sum) / n * scale)
        };
        let mut errors = BTreeMap::new();
        for key in after.0.keys() {
            let code = ["parley_errors_total{code=\"", "parley_http_errors_total{code=\""]
                .iter()
                .find_map(|p| key.strip_prefix(p))
                .and_then(|rest| rest.strip_suffix("\"}"));
            if let Some(code) = code
                && d(key) > 0.0
            {
                *errors.entry(code.to_string()).or_insert(0.0) += d(key);
            }
        }
        ServerSide {
            sends: d("parley_sends_total"),
            duplicate_sends: d("parley_sends_duplicate_total"),
            messages_persisted: d("parley_messages_persisted_total"),
            deliveries: d("parley_deliveries_total"),
            replayed: d("parley_replayed_total"),
            connections_opened: d("parley_connections_opened_total"),
            too_slow_closes: d("parley_too_slow_closes_total"),
            rate_limited: d("parley_rate_limited_total"),
            commits: d("parley_commit_batch_size_count"),
            mean_jobs_per_commit: mean("parley_commit_batch_size_sum", "parley_commit_batch_size_count", 1.0),
            mean_commit_ms: mean("parley_commit_seconds_sum", "parley_commit_seconds_count", 1e3),
            mean_send_to_persist_ms: mean(
                "parley_send_to_persist_seconds_sum",
                "parley_send_to_persist_seconds_count",
                1e3,
            ),
            mean_fanout_ms: mean("parley_fanout_seconds_sum", "parley_fanout_seconds_count", 1e3),
            errors,
        }
    }

    /// The human lines: what the server did, and anything that needs explaining.
    pub fn describe(&self) -> Vec<String> {
        let opt = |v: Option<f64>, unit: &str| v.map_or("-".to_string(), |v| format!("{v:.2}{unit}"));
        let mut lines = vec![format!(
            "server: {:.0} sends, {:.0} persisted, {:.0} live deliveries, {:.0} replayed; {:.0} commits of {} jobs \
             on average, {} each; send→persist {}, fanout {}",
            self.sends,
            self.messages_persisted,
            self.deliveries,
            self.replayed,
            self.commits,
            opt(self.mean_jobs_per_commit, ""),
            opt(self.mean_commit_ms, " ms"),
            opt(self.mean_send_to_persist_ms, " ms"),
            opt(self.mean_fanout_ms, " ms"),
        )];
        if self.too_slow_closes > 0.0 {
            lines.push(format!(
                "server: closed {:.0} connection(s) as too slow (4009): this process did not read fast enough",
                self.too_slow_closes
            ));
        }
        if self.rate_limited > 0.0 {
            lines.push(format!(
                "server: refused {:.0} request(s) as rate limited: start it with a higher --send-rate-per-sec",
                self.rate_limited
            ));
        }
        if !self.errors.is_empty() {
            let list: Vec<String> = self.errors.iter().map(|(c, n)| format!("{c} {n:.0}")).collect();
            lines.push(format!("server: errors sent: {}", list.join(", ")));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "# HELP parley_sends_total x\nparley_sends_total 10\nparley_commit_batch_size_sum 30\n\
        parley_commit_batch_size_count 3\nparley_errors_total{code=\"not_member\"} 1\n\
        parley_commit_batch_size_bucket{le=\"+Inf\"} 3\n";
    const AFTER: &str = "parley_sends_total 110\nparley_commit_batch_size_sum 230\nparley_commit_batch_size_count 13\n\
        parley_errors_total{code=\"not_member\"} 3\nparley_http_errors_total{code=\"not_member\"} 1\n\
        parley_errors_total{code=\"bad_request\"} 0\nparley_too_slow_closes_total 2\n";

    #[test]
    fn differences_explain_the_run() {
        let side = ServerSide::between(&Reading::parse(BEFORE), &Reading::parse(AFTER));
        assert_eq!(side.sends, 100.0);
        assert_eq!(side.commits, 10.0);
        assert_eq!(side.mean_jobs_per_commit, Some(20.0));
        assert_eq!(side.mean_commit_ms, None);
        assert_eq!(side.errors.get("not_member"), Some(&3.0));
        assert_eq!(side.errors.get("bad_request"), None);
        let lines = side.describe();
        assert!(lines.iter().any(|l| l.contains("too slow")), "{lines:?}");
        assert!(lines.iter().any(|l| l.contains("not_member 3")), "{lines:?}");
    }
}
