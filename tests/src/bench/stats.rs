//! Latency percentiles and load generators (open loop and closed loop).

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// What one load run measured.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// Requests offered per second (open loop) or 0 (closed loop).
    pub offered: f64,
    /// Successful requests per second over the run.
    pub achieved: f64,
    /// Failed requests.
    pub errors: u64,
    /// Latencies of successful requests, sorted.
    pub latencies: Vec<Duration>,
}

impl Run {
    /// The `q` quantile (0..=1) of the latencies, in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
        self.latencies[i].as_secs_f64() * 1e3
    }

    /// This run and `other`, of the same length and load, as one: rates averaged, errors
    /// added, latencies merged.
    pub fn pooled(mut self, other: Run) -> Run {
        self.achieved = (self.achieved + other.achieved) / 2.0;
        self.errors += other.errors;
        self.latencies.extend(other.latencies);
        self.latencies.sort();
        self
    }

    /// As JSON.
    pub fn json(&self) -> Value {
        json!({
            "offered_per_s": self.offered,
            "achieved_per_s": self.achieved,
            "errors": self.errors,
            "p50_ms": self.quantile_ms(0.50),
            "p99_ms": self.quantile_ms(0.99),
            "samples": self.latencies.len(),
        })
    }
}

fn finish(offered: f64, started: Instant, results: Vec<Option<Duration>>) -> Run {
    let elapsed = started.elapsed().as_secs_f64();
    let mut latencies: Vec<Duration> = results.iter().flatten().copied().collect();
    latencies.sort();
    Run {
        offered,
        achieved: latencies.len() as f64 / elapsed,
        errors: results.iter().filter(|r| r.is_none()).count() as u64,
        latencies,
    }
}

/// Offers `rate` requests per second for `duration`, each started at its scheduled time
/// whatever the earlier ones are doing (open loop); latency counts from the scheduled time, so
/// a stalled server cannot hide its queueing (no coordinated omission).
pub async fn open_loop<F, Fut>(rate: f64, duration: Duration, request: F) -> Run
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = bool> + Send + 'static,
{
    let total = (rate * duration.as_secs_f64()).max(1.0) as u64;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let due = started + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let fut = request(i);
        tasks.spawn(async move { fut.await.then(|| due.elapsed()) });
    }
    let mut results = Vec::with_capacity(total as usize);
    while let Some(r) = tasks.join_next().await {
        results.push(r.ok().flatten());
    }
    finish(rate, started, results)
}

/// `workers` loops, each sending its next request when the previous one answered, for
/// `duration` (closed loop): the most the server sustains at that concurrency.
pub async fn closed_loop<F, Fut>(workers: usize, duration: Duration, request: F) -> Run
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let request = request.clone();
        tasks.spawn(async move {
            let mut out = Vec::new();
            let mut i = w as u64;
            while Instant::now() < deadline {
                let sent = Instant::now();
                let ok = request(i).await;
                out.push(ok.then(|| sent.elapsed()));
                i += workers as u64;
            }
            out
        });
    }
    let mut results = Vec::new();
    while let Some(r) = tasks.join_next().await {
        results.extend(r.unwrap_or_default());
    }
    finish(0.0, started, results)
}

/// Sends exactly `n` requests, `workers` at a time; returns how many succeeded.
pub async fn closed_loop_count<F, Fut>(workers: usize, n: u64, request: F) -> u64
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers as u64 {
        let request = request.clone();
        tasks.spawn(async move {
            let mut ok = 0;
            let mut i = w;
            while i < n {
                ok += u64::from(request(i).await);
                i += workers as u64;
            }
            ok
        });
    }
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        ok += r.unwrap_or_default();
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_pick_sorted_samples() {
        let run = Run {
            latencies: (1..=100).map(Duration::from_millis).collect(),
            ..Run::default()
        };
        assert_eq!(run.quantile_ms(0.5), 51.0);
        assert_eq!(run.quantile_ms(0.99), 99.0);
        assert!(Run::default().quantile_ms(0.5).is_nan());
    }

    #[test]
    fn pooled_runs_average_rates_and_merge_latencies() {
        let a = Run {
            offered: 10.0,
            achieved: 8.0,
            errors: 1,
            latencies: vec![Duration::from_millis(5), Duration::from_millis(9)],
        };
        let b = Run {
            offered: 10.0,
            achieved: 10.0,
            errors: 2,
            latencies: vec![Duration::from_millis(1), Duration::from_millis(7)],
        };
        let p = a.pooled(b);
        assert_eq!((p.offered, p.achieved, p.errors), (10.0, 9.0, 3));
        assert_eq!(
            p.latencies,
            [1, 5, 7, 9].map(Duration::from_millis).to_vec(),
            "merged and sorted"
        );
    }
}
