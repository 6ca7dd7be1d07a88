//! Keeps a submitted job running: when it fails, it is started again from its latest
//! checkpoint after a delay chosen by one of Flink's restart strategies
//! ('restart-strategy.type' = none | fixed-delay | exponential-delay; with checkpointing on and
//! no strategy set, exponential-delay, as in Flink). Errors found while starting (options,
//! plans, a checkpoint that does not fit) are not retried: they need the user.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rsql_common::options::parse_duration;
use rsql_common::{Result, RsqlError};
use rsql_runtime::executor::JobMetrics;
use rsql_runtime::graph::JobGraph;
use rsql_runtime::{start_job, CheckpointHandle, JobOptions};
use tokio::sync::watch;

/// When and how often a failed job is started again.
#[derive(Clone, Debug, PartialEq)]
pub enum RestartStrategy {
    None,
    FixedDelay { attempts: u64, delay: Duration },
    ExponentialDelay { initial: Duration, max: Duration, multiplier: f64, jitter: f64, reset_after: Duration },
}

fn bad(key: &str, v: &str, want: &str) -> RsqlError {
    RsqlError::validation(format!("'{key}' = '{v}' is not {want}"), None)
}

impl RestartStrategy {
    /// Reads Flink's keys. `checkpointing` picks the default when no type is set.
    pub fn from_config(config: &BTreeMap<String, String>, checkpointing: bool) -> Result<RestartStrategy> {
        let dur = |key: &str, default: Duration| -> Result<Duration> {
            match config.get(key) {
                None => Ok(default),
                Some(v) => parse_duration(v).ok_or_else(|| bad(key, v, "a duration such as '1 s' or '10 min'")),
            }
        };
        let num = |key: &str, default: f64| -> Result<f64> {
            match config.get(key) {
                None => Ok(default),
                Some(v) => v.trim().parse::<f64>().ok().filter(|x| x.is_finite() && *x >= 0.0).ok_or_else(|| bad(key, v, "a number")),
            }
        };
        let kind = config.get("restart-strategy.type").or_else(|| config.get("restart-strategy")).map(|s| s.to_ascii_lowercase());
        Ok(match kind.as_deref() {
            None if !checkpointing => RestartStrategy::None,
            Some("none") | Some("off") | Some("disable") => RestartStrategy::None,
            Some("fixed-delay") | Some("fixeddelay") => RestartStrategy::FixedDelay {
                attempts: num("restart-strategy.fixed-delay.attempts", 1.0)? as u64,
                delay: dur("restart-strategy.fixed-delay.delay", Duration::from_secs(1))?,
            },
            None | Some("exponential-delay") | Some("exponentialdelay") => RestartStrategy::ExponentialDelay {
                initial: dur("restart-strategy.exponential-delay.initial-backoff", Duration::from_secs(1))?,
                max: dur("restart-strategy.exponential-delay.max-backoff", Duration::from_secs(60))?,
                multiplier: num("restart-strategy.exponential-delay.backoff-multiplier", 1.5)?.max(1.0),
                jitter: num("restart-strategy.exponential-delay.jitter-factor", 0.1)?.min(1.0),
                reset_after: dur("restart-strategy.exponential-delay.reset-backoff-threshold", Duration::from_secs(3600))?,
            },
            Some(other) => {
                return Err(RsqlError::validation(
                    format!("'restart-strategy.type' = '{other}' is not one of none, fixed-delay, exponential-delay"),
                    None,
                ))
            }
        })
    }

    /// The delay before restart number `attempt` (1-based) after a run of `ran`; None: give up.
    pub fn delay(&self, attempt: u64, ran: Duration, previous: Option<Duration>) -> Option<Duration> {
        match self {
            RestartStrategy::None => None,
            RestartStrategy::FixedDelay { attempts, delay } => (attempt <= *attempts).then_some(*delay),
            RestartStrategy::ExponentialDelay { initial, max, multiplier, jitter, reset_after } => {
                let base = match previous {
                    Some(p) if ran < *reset_after => p.mul_f64(*multiplier).min(*max),
                    _ => *initial,
                };
                let j = if *jitter > 0.0 { 1.0 + jitter * (unit_random() * 2.0 - 1.0) } else { 1.0 };
                Some(base.mul_f64(j).min(*max))
            }
        }
    }
}

/// Resolves once the stop flag is set (or its sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

/// A number in [0, 1) for jitter: the clock's nanoseconds are random enough to spread restarts.
fn unit_random() -> f64 {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    (n % 1_000_000) as f64 / 1_000_000.0
}

/// A job under supervision.
pub struct SupervisedJob {
    pub name: String,
    pub metrics: Arc<JobMetrics>,
    stop: watch::Sender<bool>,
    checkpoints: Arc<Mutex<Option<CheckpointHandle>>>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl SupervisedJob {
    /// Starts the job now (errors at start are returned) and keeps it running.
    pub fn start(name: String, graph: JobGraph, mut opts: JobOptions, strategy: RestartStrategy) -> Result<SupervisedJob> {
        let running = start_job(&graph, &opts)?;
        let metrics = running.metrics.clone();
        opts.metrics = Some(metrics.clone());
        let checkpoints = Arc::new(Mutex::new(running.checkpoint_handle()));
        let (stop, mut stop_rx) = watch::channel(false);
        let cps = checkpoints.clone();
        let job = name.clone();
        let task = tokio::spawn(async move {
            let mut running = running;
            let mut attempt = 0u64;
            let mut previous: Option<Duration> = None;
            loop {
                let started = std::time::Instant::now();
                let stop_job = running.stop_handle();
                let wait = running.wait();
                tokio::pin!(wait);
                let result = tokio::select! {
                    r = &mut wait => r,
                    _ = stopped(&mut stop_rx) => {
                        let _ = stop_job.send(true);
                        return wait.await;
                    }
                };
                let err = match result {
                    Ok(()) => {
                        // The job ran to its end (not stopped): its next start is a new run.
                        if let Some(cp) = opts.checkpoint.as_ref() {
                            cp.store.mark_finished()?;
                        }
                        return Ok(());
                    }
                    Err(e) => e,
                };
                if *stop_rx.borrow() {
                    return Err(err);
                }
                attempt += 1;
                let Some(delay) = strategy.delay(attempt, started.elapsed(), previous) else {
                    return Err(err);
                };
                previous = Some(delay);
                tracing::warn!("job '{job}' failed: {err}; restarting in {:.1} s (restart {attempt})", delay.as_secs_f64());
                eprintln!("[WARN] Job '{job}' failed: {err}. Restarting in {:.1} s (restart {attempt}).", delay.as_secs_f64());
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stopped(&mut stop_rx) => return Err(err),
                }
                // Resume from the newest checkpoint, whatever the first start was given.
                if let Some(cp) = opts.checkpoint.as_mut() {
                    cp.restore = cp.store.latest()?;
                    match &cp.restore {
                        Some((from, c)) => eprintln!("[INFO] Job '{job}' resumes from checkpoint {} ({from}).", c.id),
                        None => eprintln!("[INFO] Job '{job}' starts over: it has no checkpoint yet."),
                    }
                }
                running = match start_job(&graph, &opts) {
                    Ok(r) => r,
                    Err(e) => return Err(e),
                };
                if let Ok(mut c) = cps.lock() {
                    *c = running.checkpoint_handle();
                }
            }
        });
        Ok(SupervisedJob { name, metrics, stop, checkpoints, task })
    }

    pub fn stop_handle(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }

    pub fn checkpoint_handle(&self) -> Option<CheckpointHandle> {
        self.checkpoints.lock().ok().and_then(|c| c.clone())
    }

    pub async fn wait(self) -> Result<()> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(RsqlError::execution(format!("job '{}' stopped abnormally: {e}", self.name))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_follow_flink() {
        assert_eq!(RestartStrategy::from_config(&cfg(&[]), false).unwrap(), RestartStrategy::None);
        assert!(matches!(RestartStrategy::from_config(&cfg(&[]), true).unwrap(), RestartStrategy::ExponentialDelay { .. }));
        let f = RestartStrategy::from_config(
            &cfg(&[("restart-strategy.type", "fixed-delay"), ("restart-strategy.fixed-delay.attempts", "2"), ("restart-strategy.fixed-delay.delay", "5 s")]),
            false,
        )
        .unwrap();
        assert_eq!(f.delay(1, Duration::ZERO, None), Some(Duration::from_secs(5)));
        assert_eq!(f.delay(3, Duration::ZERO, None), None);
        assert!(RestartStrategy::from_config(&cfg(&[("restart-strategy.type", "sometimes")]), true).is_err());
        assert!(RestartStrategy::from_config(&cfg(&[("restart-strategy.type", "fixed-delay"), ("restart-strategy.fixed-delay.delay", "soon")]), true).is_err());
    }

    #[test]
    fn exponential_delay_grows_to_its_cap_and_resets_after_a_long_run() {
        let s = RestartStrategy::ExponentialDelay {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(4),
            multiplier: 2.0,
            jitter: 0.0,
            reset_after: Duration::from_secs(60),
        };
        let d1 = s.delay(1, Duration::ZERO, None).unwrap();
        let d2 = s.delay(2, Duration::ZERO, Some(d1)).unwrap();
        let d3 = s.delay(3, Duration::ZERO, Some(d2)).unwrap();
        let d4 = s.delay(4, Duration::ZERO, Some(d3)).unwrap();
        assert_eq!([d1, d2, d3, d4].map(|d| d.as_secs()), [1, 2, 4, 4]);
        assert_eq!(s.delay(5, Duration::from_secs(120), Some(d4)).unwrap(), Duration::from_secs(1));
    }
}
