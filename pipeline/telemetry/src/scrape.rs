//! Reading a `/metrics` page back: the samples of the Prometheus text format (what `herald top`
//! shows and the tests check). Comments, `# HELP`/`# TYPE` lines and malformed lines are skipped.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One sample: a metric name, its labels and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name (with `_bucket`, `_sum`, `_count` for histogram parts).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, or `""`.
    pub fn label(&self, key: &str) -> &str {
        self.labels.get(key).map_or("", String::as_str)
    }
}

/// Why a page could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// No connection, or no answer in time.
    #[error("{addr}: {reason}")]
    Unreachable {
        /// Where.
        addr: String,
        /// What happened.
        reason: String,
    },
}

/// The samples of the text page `text`.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = line.rfind('}')?;
            (
                &line[..open],
                labels(&line[open + 1..close])?,
                &line[close + 1..],
            )
        }
        None => {
            let (name, rest) = line.split_once(char::is_whitespace)?;
            (name, BTreeMap::new(), rest)
        }
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `a="x",b="y\"z"` → the map (escapes `\\`, `\"`, `\n`).
fn labels(mut text: &str) -> Option<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    loop {
        text = text.trim_start_matches([',', ' ']);
        if text.is_empty() {
            return Some(map);
        }
        let (key, rest) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        map.insert(key.trim().to_owned(), value);
        text = &rest[end + 1..];
    }
}

/// Fetches `http://{addr}/metrics` (plain HTTP/1.0, at most `limit`) and parses it.
pub async fn scrape(addr: &str, limit: Duration) -> Result<Vec<Sample>, ScrapeError> {
    let unreachable = |reason: String| ScrapeError::Unreachable {
        addr: addr.to_owned(),
        reason,
    };
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut body = Vec::new();
        // Bounded: a page of Herald's metrics is a few hundred KiB at most.
        stream.take(16 << 20).read_to_end(&mut body).await?;
        Ok::<_, std::io::Error>(body)
    };
    let body = tokio::time::timeout(limit, fetch)
        .await
        .map_err(|_| unreachable(format!("no answer in {limit:?}")))?
        .map_err(|e| unreachable(e.to_string()))?;
    let text = String::from_utf8_lossy(&body);
    let Some((head, page)) = text.split_once("\r\n\r\n") else {
        return Err(unreachable("not an HTTP answer".into()));
    };
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        let status = head.lines().next().unwrap_or_default().to_owned();
        return Err(unreachable(status));
    }
    Ok(parse(page))
}

/// The sum of the samples named `name` whose labels include every pair of `with`.
pub fn sum(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && with.iter().all(|(k, v)| s.label(k) == *v))
        .map(|s| s.value)
        .sum()
}

/// A histogram's cumulative bucket counts by upper bound (`+Inf` last), from the samples of
/// `<name>_bucket` whose labels include every pair of `with`, summed over the rest.
pub fn buckets<'a>(
    samples: impl IntoIterator<Item = &'a Sample>,
    name: &str,
    with: &[(&str, &str)],
) -> Vec<(f64, f64)> {
    let bucket = format!("{name}_bucket");
    let mut counts: Vec<(f64, f64)> = Vec::new();
    for s in samples
        .into_iter()
        .filter(|s| s.name == bucket && with.iter().all(|(k, v)| s.label(k) == *v))
    {
        let le = match s.label("le") {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or(f64::INFINITY),
        };
        match counts.iter_mut().find(|(b, _)| *b == le) {
            Some((_, count)) => *count += s.value,
            None => counts.push((le, s.value)),
        }
    }
    counts.sort_by(|a, b| a.0.total_cmp(&b.0));
    counts
}

/// The `q` quantile of cumulative `buckets` (ascending bounds), interpolated within its bucket
/// as Prometheus's `histogram_quantile` does; `None` without observations.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (le, count) in buckets {
        if *count >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let within = (count - below).max(1e-9);
            return Some(lower + (le - lower) * ((rank - below) / within));
        }
        (lower, below) = (*le, *count);
    }
    Some(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_read_with_their_labels_and_comments_are_skipped() {
        let page = "# HELP x y\n# TYPE herald_stage_records_in_total counter\n\
            herald_stage_records_in_total{component=\"enrich\",stage=\"enrich\"} 42\n\
            herald_consumer_lag_collected_timestamp_seconds 1764500000.5\n\
            h_bucket{le=\"+Inf\",odd=\"a\\\"b,c\"} 3\n\
            broken{a=\"1\" 2\nnot_a_number 1x\n";
        let samples = parse(page);
        assert_eq!(samples.len(), 3, "{samples:?}");
        assert_eq!(samples[0].name, "herald_stage_records_in_total");
        assert_eq!(samples[0].label("stage"), "enrich");
        assert_eq!(samples[0].value, 42.0);
        assert_eq!(samples[1].value, 1_764_500_000.5);
        assert_eq!(samples[2].label("odd"), "a\"b,c");
        assert_eq!(samples[2].label("le"), "+Inf");
        assert_eq!(
            sum(
                &samples,
                "herald_stage_records_in_total",
                &[("stage", "enrich")]
            ),
            42.0
        );
        assert_eq!(
            sum(&samples, "herald_stage_records_in_total", &[("stage", "x")]),
            0.0
        );
    }
}
