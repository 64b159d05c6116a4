//! Records of different keys worked on at once, each key's records strictly in their order: the
//! helper a processor's [`super::Processor::process_batch`] uses to overlap slow calls (a
//! provider's round trip) without reordering one recipient's notifications.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;

use futures::StreamExt;

/// Runs `work(i)` for every index `i` of `keys`: indices of one key one after another in their
/// order, different keys concurrently (at most `concurrency` keys at a time). After an index
/// fails, the later indices of its key are not run.
///
/// Returns the results in index order, up to and including the first failure in index order —
/// the shape [`super::Processor::process_batch`] returns, so the runner hands whatever follows
/// the failure over again. Work done for later indices of other keys is then done twice, which
/// the stages' idempotent effects make harmless.
pub async fn by_key<K, R, E, F, Fut>(keys: &[K], concurrency: usize, work: F) -> Vec<Result<R, E>>
where
    K: Eq + Hash,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<R, E>>,
{
    let mut lanes: Vec<Vec<usize>> = Vec::new();
    let mut lane_of: HashMap<&K, usize> = HashMap::new();
    for (i, key) in keys.iter().enumerate() {
        let lane = *lane_of.entry(key).or_insert_with(|| {
            lanes.push(Vec::new());
            lanes.len() - 1
        });
        lanes[lane].push(i);
    }
    let work = &work;
    let done: Vec<Vec<(usize, Result<R, E>)>> = futures::stream::iter(lanes)
        .map(|lane| async move {
            let mut results = Vec::with_capacity(lane.len());
            for i in lane {
                let result = work(i).await;
                let failed = result.is_err();
                results.push((i, result));
                if failed {
                    break;
                }
            }
            results
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut slots: Vec<Option<Result<R, E>>> =
        std::iter::repeat_with(|| None).take(keys.len()).collect();
    for (i, result) in done.into_iter().flatten() {
        slots[i] = Some(result);
    }
    // A skipped index always follows a failure of its own key, so the prefix ends at a failure.
    let mut results = Vec::with_capacity(keys.len());
    for slot in slots {
        let Some(result) = slot else { break };
        let failed = result.is_err();
        results.push(result);
        if failed {
            break;
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use proptest::prelude::*;

    use super::by_key;

    fn paused_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a current-thread runtime")
    }

    /// One record of a generated batch: its key, how long its work takes, whether it fails.
    #[derive(Debug, Clone)]
    struct Job {
        key: u8,
        millis: u64,
        fails: bool,
    }

    fn job() -> impl Strategy<Value = Job> {
        (0u8..4, 0u64..50, proptest::bool::weighted(0.1)).prop_map(|(key, millis, fails)| Job {
            key,
            millis,
            fails,
        })
    }

    /// Runs `jobs` through `by_key`; the results and the order in which work started and ended.
    fn run(jobs: &[Job], concurrency: usize) -> (Vec<Result<usize, usize>>, Vec<Event>) {
        let log = Mutex::new(Vec::new());
        let keys: Vec<u8> = jobs.iter().map(|j| j.key).collect();
        let results = paused_runtime().block_on(by_key(&keys, concurrency, |i| {
            let log = &log;
            let job = jobs[i].clone();
            async move {
                log.lock().expect("log").push(Event::Start(i));
                tokio::time::sleep(Duration::from_millis(job.millis)).await;
                log.lock().expect("log").push(Event::End(i));
                if job.fails { Err(i) } else { Ok(i) }
            }
        }));
        (results, log.into_inner().expect("log"))
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Event {
        Start(usize),
        End(usize),
    }

    proptest! {
        #[test]
        fn each_key_runs_in_order_and_the_results_are_the_prefix_up_to_the_first_failure(
            jobs in proptest::collection::vec(job(), 0..40),
            concurrency in 1usize..6,
        ) {
            let (results, log) = run(&jobs, concurrency);

            // Per key: an index starts only after the key's previous index ended, and never
            // after one of its key failed.
            let mut last_end: std::collections::HashMap<u8, usize> = Default::default();
            let mut failed_keys = std::collections::HashSet::new();
            let mut running = 0usize;
            for event in &log {
                match *event {
                    Event::Start(i) => {
                        let key = jobs[i].key;
                        prop_assert!(!failed_keys.contains(&key), "index {} ran after its key failed", i);
                        let earlier = (0..i).rev().find(|&j| jobs[j].key == key);
                        prop_assert_eq!(earlier, last_end.get(&key).copied(), "index {} out of order", i);
                        running += 1;
                        prop_assert!(running <= concurrency, "more than {} at once", concurrency);
                    }
                    Event::End(i) => {
                        running -= 1;
                        last_end.insert(jobs[i].key, i);
                        if jobs[i].fails {
                            failed_keys.insert(jobs[i].key);
                        }
                    }
                }
            }

            // The results: every index in order up to and including the first failure.
            let first_failure = jobs.iter().position(|j| j.fails);
            let expected: Vec<Result<usize, usize>> = match first_failure {
                Some(f) => (0..f).map(Ok).chain(std::iter::once(Err(f))).collect(),
                None => (0..jobs.len()).map(Ok).collect(),
            };
            prop_assert_eq!(results, expected);
        }
    }

    #[test]
    fn different_keys_overlap_and_one_key_does_not() {
        let slow = |key| Job {
            key,
            millis: 100,
            fails: false,
        };
        let started = |jobs: &[Job], concurrency| {
            let rt = paused_runtime();
            let t0 = rt.block_on(async { tokio::time::Instant::now() });
            let _ = run_on(&rt, jobs, concurrency);
            rt.block_on(async move { t0.elapsed() })
        };
        // Four keys, four at a time: one round of 100 ms; the same key four times: four rounds.
        let apart = started(&[slow(0), slow(1), slow(2), slow(3)], 4);
        let together = started(&[slow(0), slow(0), slow(0), slow(0)], 4);
        let capped = started(&[slow(0), slow(1), slow(2), slow(3)], 2);
        assert_eq!(apart, Duration::from_millis(100));
        assert_eq!(together, Duration::from_millis(400));
        assert_eq!(capped, Duration::from_millis(200));
    }

    fn run_on(rt: &tokio::runtime::Runtime, jobs: &[Job], concurrency: usize) -> usize {
        let keys: Vec<u8> = jobs.iter().map(|j| j.key).collect();
        rt.block_on(by_key(&keys, concurrency, |i| {
            let millis = jobs[i].millis;
            async move {
                tokio::time::sleep(Duration::from_millis(millis)).await;
                Ok::<usize, ()>(i)
            }
        }))
        .len()
    }
}
