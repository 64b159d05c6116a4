//! What `herald top` shows, computed from two scrapes of every component's metrics a moment
//! apart: per stage runner its lag, records in and out per second, dead letters and the p99 of
//! its batch time; per channel deliveries per second and the p50/p99 of the delay from
//! acceptance to the final outcome over the interval; the ingress's requests per second and
//! errors. Pure: the scrapes and the interval are given.

use std::collections::BTreeMap;

use herald_telemetry::metrics as m;
use herald_telemetry::scrape::{Sample, buckets, quantile};

/// Every component's samples at one moment (a component that did not answer is absent).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Samples by component.
    pub pages: BTreeMap<String, Vec<Sample>>,
}

impl Snapshot {
    fn all(&self) -> impl Iterator<Item = &Sample> {
        self.pages.values().flatten()
    }

    /// Sum of `name` by the value of label `by`, over every component, samples filtered by
    /// `with`.
    fn by(&self, name: &str, by: &str, with: &[(&str, &str)]) -> BTreeMap<String, f64> {
        let mut sums = BTreeMap::new();
        for s in self
            .all()
            .filter(|s| s.name == name && with.iter().all(|(k, v)| s.label(k) == *v))
        {
            *sums.entry(s.label(by).to_owned()).or_insert(0.0) += s.value;
        }
        sums
    }

    /// Cumulative bucket counts of histogram `name` for samples whose label `by` is `key`.
    fn buckets(&self, name: &str, by: &str, key: &str) -> Vec<(f64, f64)> {
        buckets(self.all(), name, &[(by, key)])
    }
}

/// One stage runner's row, both lanes together (the bulk lane's runners are `<runner>.bulk`).
#[derive(Debug, Clone, PartialEq)]
pub struct StageRow {
    /// The runner (`enrich`, `deliver.sms`, …).
    pub stage: String,
    /// Records not yet consumed on the main lane (from the lag exporter), if known.
    pub lag: Option<f64>,
    /// The same on the bulk lane, if the runner has one and it is known.
    pub bulk_lag: Option<f64>,
    /// Records in per second over the interval (both lanes).
    pub in_per_s: f64,
    /// Records out per second.
    pub out_per_s: f64,
    /// Dead letters so far.
    pub dead_letters: f64,
    /// p99 of the batch time over the interval, in seconds, if any batch ran.
    pub batch_p99_s: Option<f64>,
}

/// One channel's row.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelRow {
    /// The channel.
    pub channel: String,
    /// Final outcomes per second over the interval.
    pub done_per_s: f64,
    /// p50 and p99 of acceptance → final outcome over the interval, in seconds.
    pub p50_s: Option<f64>,
    /// See `p50_s`.
    pub p99_s: Option<f64>,
}

/// The whole view.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct View {
    /// Stage runners, by name.
    pub stages: Vec<StageRow>,
    /// Channels with deliveries.
    pub channels: Vec<ChannelRow>,
    /// Ingress requests per second, and how many of them failed.
    pub ingress_per_s: f64,
    /// See `ingress_per_s`.
    pub ingress_errors_per_s: f64,
    /// Components that did not answer.
    pub down: Vec<String>,
}

/// The view of the interval from `before` to `now`, `seconds` long.
pub fn view(before: &Snapshot, now: &Snapshot, seconds: f64, expected: &[&str]) -> View {
    let seconds = seconds.max(1e-3);
    let rate = |name: &str, by: &str| -> BTreeMap<String, f64> {
        let (then, current) = (before.by(name, by, &[]), now.by(name, by, &[]));
        current
            .into_iter()
            .map(|(k, v)| {
                let d = v - then.get(&k).copied().unwrap_or(0.0);
                (k, d.max(0.0) / seconds)
            })
            .collect()
    };
    let lag = now.by(m::CONSUMER_LAG, "stage", &[]);
    let ins = rate(m::STAGE_IN, "stage");
    let outs = rate(m::STAGE_OUT, "stage");
    let dead = now.by(m::STAGE_DEAD_LETTERS, "stage", &[]);
    let runners: std::collections::BTreeSet<&String> = lag.keys().chain(ins.keys()).collect();
    let names: std::collections::BTreeSet<&str> = runners.iter().map(|r| main_of(r)).collect();
    let both = |per: &BTreeMap<String, f64>, name: &str| {
        per.get(name).copied().unwrap_or(0.0) + per.get(&bulk_of(name)).copied().unwrap_or(0.0)
    };
    let batches = |snapshot: &Snapshot, name: &str| {
        let bulk = snapshot.buckets(m::STAGE_BATCH_SECONDS, "stage", &bulk_of(name));
        let mut main = snapshot.buckets(m::STAGE_BATCH_SECONDS, "stage", name);
        for (le, count) in bulk {
            match main.iter_mut().find(|(b, _)| *b == le) {
                Some((_, c)) => *c += count,
                None => main.push((le, count)),
            }
        }
        main
    };
    let stages = names
        .into_iter()
        .map(|stage| StageRow {
            stage: stage.to_owned(),
            lag: lag.get(stage).copied(),
            bulk_lag: lag.get(&bulk_of(stage)).copied(),
            in_per_s: both(&ins, stage),
            out_per_s: both(&outs, stage),
            dead_letters: both(&dead, stage),
            batch_p99_s: quantile(0.99, &delta(&batches(before, stage), &batches(now, stage))),
        })
        .collect();
    let done = rate(&format!("{}_count", m::DELIVERY_SECONDS), "channel");
    let channels = done
        .into_iter()
        .map(|(channel, per_s)| {
            let d = delta(
                &before.buckets(m::DELIVERY_SECONDS, "channel", &channel),
                &now.buckets(m::DELIVERY_SECONDS, "channel", &channel),
            );
            ChannelRow {
                p50_s: quantile(0.5, &d),
                p99_s: quantile(0.99, &d),
                channel,
                done_per_s: per_s,
            }
        })
        .collect();
    let requests = rate(m::INGRESS_REQUESTS, "code");
    View {
        stages,
        channels,
        ingress_per_s: requests.values().sum(),
        ingress_errors_per_s: requests
            .iter()
            .filter(|(code, _)| {
                !matches!(
                    code.as_str(),
                    "OK" | "INVALID_ARGUMENT"
                        | "UNAUTHENTICATED"
                        | "PERMISSION_DENIED"
                        | "ALREADY_EXISTS"
                )
            })
            .map(|(_, v)| v)
            .sum(),
        down: expected
            .iter()
            .filter(|c| !now.pages.contains_key(**c))
            .map(|c| (*c).to_owned())
            .collect(),
    }
}

/// The counts of each bucket of `now` less those of `before` (cumulative counts, so the
/// difference is the interval's).
/// The main lane's runner of `runner` (itself, or without `.bulk`).
fn main_of(runner: &str) -> &str {
    runner.strip_suffix(".bulk").unwrap_or(runner)
}

/// The bulk lane's runner of main-lane runner `name`.
fn bulk_of(name: &str) -> String {
    format!("{name}.bulk")
}

fn delta(before: &[(f64, f64)], now: &[(f64, f64)]) -> Vec<(f64, f64)> {
    now.iter()
        .map(|(le, v)| {
            let then = before
                .iter()
                .find(|(b, _)| b == le)
                .map_or(0.0, |(_, c)| *c);
            (*le, (v - then).max(0.0))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample(name: &str, labels: &[(&str, &str)], value: f64) -> Sample {
        Sample {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            value,
        }
    }

    fn snapshot(pages: &[(&str, Vec<Sample>)]) -> Snapshot {
        Snapshot {
            pages: pages
                .iter()
                .map(|(c, s)| ((*c).into(), s.clone()))
                .collect(),
        }
    }

    #[test]
    fn rates_are_deltas_over_the_interval_and_lag_is_the_latest() {
        let before = snapshot(&[
            (
                "enrich",
                vec![sample(m::STAGE_IN, &[("stage", "enrich")], 100.0)],
            ),
            (
                "lag-exporter",
                vec![sample(
                    m::CONSUMER_LAG,
                    &[("stage", "enrich"), ("partition", "0")],
                    9.0,
                )],
            ),
        ]);
        let now = snapshot(&[
            (
                "enrich",
                vec![
                    sample(m::STAGE_IN, &[("stage", "enrich")], 150.0),
                    sample(m::STAGE_OUT, &[("stage", "enrich")], 40.0),
                ],
            ),
            (
                "lag-exporter",
                vec![
                    sample(
                        m::CONSUMER_LAG,
                        &[("stage", "enrich"), ("partition", "0")],
                        3.0,
                    ),
                    sample(
                        m::CONSUMER_LAG,
                        &[("stage", "enrich"), ("partition", "1")],
                        4.0,
                    ),
                ],
            ),
        ]);
        let v = view(&before, &now, 2.0, &["enrich", "lag-exporter", "deliver"]);
        assert_eq!(v.stages.len(), 1);
        let row = &v.stages[0];
        assert_eq!(
            (row.in_per_s, row.out_per_s, row.lag),
            (25.0, 20.0, Some(7.0))
        );
        assert_eq!(row.batch_p99_s, None);
        assert_eq!(v.down, ["deliver"]);
    }

    #[test]
    fn a_runner_s_two_lanes_are_one_row_with_the_bulk_lag_apart() {
        let before = snapshot(&[(
            "enrich",
            vec![
                sample(m::STAGE_IN, &[("stage", "enrich")], 10.0),
                sample(m::STAGE_IN, &[("stage", "enrich.bulk")], 100.0),
            ],
        )]);
        let now = snapshot(&[
            (
                "enrich",
                vec![
                    sample(m::STAGE_IN, &[("stage", "enrich")], 12.0),
                    sample(m::STAGE_IN, &[("stage", "enrich.bulk")], 120.0),
                    sample(m::STAGE_DEAD_LETTERS, &[("stage", "enrich.bulk")], 1.0),
                ],
            ),
            (
                "lag-exporter",
                vec![
                    sample(
                        m::CONSUMER_LAG,
                        &[("stage", "enrich"), ("partition", "0")],
                        2.0,
                    ),
                    sample(
                        m::CONSUMER_LAG,
                        &[("stage", "enrich.bulk"), ("partition", "0")],
                        900.0,
                    ),
                    sample(
                        m::CONSUMER_LAG,
                        &[("stage", "broadcast"), ("partition", "0")],
                        0.0,
                    ),
                ],
            ),
        ]);
        let v = view(&before, &now, 2.0, &[]);
        let names: Vec<&str> = v.stages.iter().map(|r| r.stage.as_str()).collect();
        assert_eq!(names, ["broadcast", "enrich"]);
        let enrich = &v.stages[1];
        assert_eq!(
            (
                enrich.in_per_s,
                enrich.lag,
                enrich.bulk_lag,
                enrich.dead_letters
            ),
            (11.0, Some(2.0), Some(900.0), 1.0)
        );
        assert_eq!(v.stages[0].bulk_lag, None);
    }

    #[test]
    fn an_interval_s_buckets_are_the_difference_of_cumulative_counts() {
        let d = delta(
            &[(1.0, 5.0), (f64::INFINITY, 5.0)],
            &[(1.0, 8.0), (f64::INFINITY, 9.0)],
        );
        assert_eq!(d, [(1.0, 3.0), (f64::INFINITY, 4.0)]);
        // A bucket new since (a restarted component): all of it.
        assert_eq!(delta(&[], &[(1.0, 2.0)]), [(1.0, 2.0)]);
    }

    #[test]
    fn delivery_delays_and_ingress_errors_come_per_interval() {
        let hist = |count: f64, fast: f64| {
            vec![
                sample(
                    &format!("{}_bucket", m::DELIVERY_SECONDS),
                    &[("channel", "sms"), ("le", "0.1")],
                    fast,
                ),
                sample(
                    &format!("{}_bucket", m::DELIVERY_SECONDS),
                    &[("channel", "sms"), ("le", "+Inf")],
                    count,
                ),
                sample(
                    &format!("{}_count", m::DELIVERY_SECONDS),
                    &[("channel", "sms")],
                    count,
                ),
                sample(m::INGRESS_REQUESTS, &[("code", "OK")], count),
                sample(
                    m::INGRESS_REQUESTS,
                    &[("code", "UNAVAILABLE")],
                    count / 10.0,
                ),
            ]
        };
        let before = snapshot(&[("deliver", hist(10.0, 10.0))]);
        let now = snapshot(&[("deliver", hist(30.0, 30.0))]);
        let v = view(&before, &now, 1.0, &[]);
        assert_eq!(v.channels.len(), 1);
        assert_eq!(v.channels[0].done_per_s, 20.0);
        assert_eq!(v.channels[0].p50_s, Some(0.05));
        assert_eq!((v.ingress_per_s, v.ingress_errors_per_s), (22.0, 2.0));
    }
}
