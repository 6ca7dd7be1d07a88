//! The live status a running source reports about itself, for SHOW JOBS, the status line and the
//! Prometheus endpoint: its phase (a snapshot with rows read of the estimated total and its rate,
//! or the stream it reads after it) and how far it is behind what it reads (messages behind the
//! partitions' high watermarks, or seconds behind the time of the last event read).
//!
//! A source creates one [`SourceStatus`], updates it as it goes and hands it out through
//! `Source::status`; readers take a [`StatusView`], computed at the moment they ask.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What a source is doing.
#[derive(Clone, Debug, PartialEq)]
pub enum Phase {
    /// Connecting, or a source without phases.
    Running,
    /// Reading a snapshot: rows emitted so far of an estimated total (0 when unknown).
    Snapshot { rows: u64, estimated: u64, started: Instant },
    /// Reading a stream after (or without) a snapshot, such as `binlog`.
    Streaming(&'static str),
    /// A bounded source that read everything.
    Finished,
}

/// What the lag of a source is measured from.
#[derive(Clone, Debug, PartialEq)]
enum LagSource {
    Unknown,
    /// Messages not read yet, summed over partitions.
    Messages(u64),
    /// Event time of the last event read (ms since the epoch); `caught_up` once the reader found
    /// nothing more to read.
    EventTime { last_event_ms: i64, caught_up: bool },
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    lag: LagSource,
    /// Rows and duration of the snapshot, once it is over.
    snapshot_done: Option<(u64, Duration)>,
}

/// The status of one running source, shared between the source and whoever shows it.
#[derive(Debug)]
pub struct SourceStatus {
    inner: Mutex<Inner>,
}

impl Default for SourceStatus {
    fn default() -> Self {
        SourceStatus { inner: Mutex::new(Inner { phase: Phase::Running, lag: LagSource::Unknown, snapshot_done: None }) }
    }
}

/// The lag of a source as shown.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Lag {
    /// Messages behind the high watermarks of the partitions read.
    Messages(u64),
    /// Seconds behind the time of the newest event on the server.
    Seconds(f64),
}

/// A source's status at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusView {
    pub phase: PhaseView,
    pub lag: Option<Lag>,
    /// Rows and duration of a snapshot that is over.
    pub snapshot_done: Option<(u64, Duration)>,
}

/// The phase as shown, with the snapshot's rate worked out.
#[derive(Clone, Debug, PartialEq)]
pub enum PhaseView {
    Running,
    Snapshot { rows: u64, estimated: u64, rows_per_sec: f64 },
    Streaming(&'static str),
    Finished,
}

/// Milliseconds since the epoch now.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Seconds behind: `now - last event`, 0 when the reader has caught up, no event was read yet
/// or the clocks disagree (an event from the future).
pub fn lag_seconds(last_event_ms: i64, caught_up: bool, now_ms: i64) -> f64 {
    if caught_up || last_event_ms <= 0 {
        return 0.0;
    }
    (now_ms - last_event_ms).max(0) as f64 / 1000.0
}

/// Messages behind, over partitions given as (high watermark, next offset to read): the sum of
/// what lies between them (a position past the high watermark counts as 0).
pub fn messages_behind(partitions: impl IntoIterator<Item = (i64, i64)>) -> u64 {
    partitions.into_iter().map(|(high, next)| (high - next).max(0) as u64).sum()
}

impl SourceStatus {
    fn with(&self, f: impl FnOnce(&mut Inner)) {
        if let Ok(mut g) = self.inner.lock() {
            f(&mut g);
        }
    }

    /// A snapshot of about `estimated` rows begins (0: unknown).
    pub fn snapshot_started(&self, estimated: u64) {
        self.with(|i| i.phase = Phase::Snapshot { rows: 0, estimated, started: Instant::now() });
    }

    /// The snapshot has emitted `rows` rows in total.
    pub fn snapshot_rows(&self, rows: u64) {
        self.with(|i| {
            if let Phase::Snapshot { rows: r, .. } = &mut i.phase {
                *r = rows;
            }
        });
    }

    /// Moves to `phase`; leaving a snapshot records its rows and duration.
    pub fn set_phase(&self, phase: Phase) {
        self.with(|i| {
            if let Phase::Snapshot { rows, started, .. } = &i.phase {
                if !matches!(phase, Phase::Snapshot { .. }) {
                    i.snapshot_done = Some((*rows, started.elapsed()));
                }
            }
            i.phase = phase;
        });
    }

    /// Messages not read yet, summed over partitions.
    pub fn set_lag_messages(&self, n: u64) {
        self.with(|i| i.lag = LagSource::Messages(n));
    }

    /// An event committed at `event_ms` (ms since the epoch) was read.
    pub fn event_read(&self, event_ms: i64) {
        self.with(|i| i.lag = LagSource::EventTime { last_event_ms: event_ms, caught_up: false });
    }

    /// The reader found nothing more to read: it is at the server's end.
    pub fn caught_up(&self) {
        self.with(|i| match &mut i.lag {
            LagSource::EventTime { caught_up, .. } => *caught_up = true,
            other => *other = LagSource::EventTime { last_event_ms: 0, caught_up: true },
        });
    }

    /// The status as of `now_ms` (ms since the epoch).
    pub fn view_at(&self, now_ms: i64) -> StatusView {
        let Ok(g) = self.inner.lock() else {
            return StatusView { phase: PhaseView::Running, lag: None, snapshot_done: None };
        };
        let phase = match &g.phase {
            Phase::Running => PhaseView::Running,
            Phase::Snapshot { rows, estimated, started } => PhaseView::Snapshot {
                rows: *rows,
                estimated: *estimated,
                rows_per_sec: *rows as f64 / started.elapsed().as_secs_f64().max(0.001),
            },
            Phase::Streaming(s) => PhaseView::Streaming(s),
            Phase::Finished => PhaseView::Finished,
        };
        let lag = match &g.lag {
            LagSource::Unknown => None,
            LagSource::Messages(n) => Some(Lag::Messages(*n)),
            LagSource::EventTime { last_event_ms, caught_up } => {
                Some(Lag::Seconds(lag_seconds(*last_event_ms, *caught_up, now_ms)))
            }
        };
        StatusView { phase, lag, snapshot_done: g.snapshot_done }
    }

    pub fn view(&self) -> StatusView {
        self.view_at(now_ms())
    }
}

impl PhaseView {
    /// `snapshot 1200 of ~5000 rows (24%), 3400 rows/s`, `binlog`, `running`, `finished`.
    pub fn text(&self) -> String {
        match self {
            PhaseView::Running => "running".into(),
            PhaseView::Finished => "finished".into(),
            PhaseView::Streaming(s) => s.to_string(),
            PhaseView::Snapshot { rows, estimated, rows_per_sec } => {
                let of = if *estimated > 0 {
                    let pct = (*rows as f64 * 100.0 / *estimated as f64).min(100.0);
                    format!("{rows} of ~{estimated} rows ({pct:.0}%)")
                } else {
                    format!("{rows} rows")
                };
                format!("snapshot {of}, {rows_per_sec:.0} rows/s")
            }
        }
    }
}

impl Lag {
    /// `lag 12 messages`, `lag 3.0 s`.
    pub fn text(&self) -> String {
        match self {
            Lag::Messages(n) => format!("lag {n} message{}", if *n == 1 { "" } else { "s" }),
            Lag::Seconds(s) => format!("lag {s:.1} s"),
        }
    }
}

impl StatusView {
    /// The phase, then the lag when known: `binlog, lag 0.0 s`.
    pub fn text(&self) -> String {
        match &self.lag {
            Some(l) => format!("{}, {}", self.phase.text(), l.text()),
            None => self.phase.text(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_in_seconds_follows_the_last_event_until_caught_up() {
        assert_eq!(lag_seconds(10_000, false, 12_500), 2.5);
        assert_eq!(lag_seconds(10_000, true, 12_500), 0.0, "caught up");
        assert_eq!(lag_seconds(0, false, 12_500), 0.0, "no event yet");
        assert_eq!(lag_seconds(13_000, false, 12_500), 0.0, "an event from a clock ahead of ours");

        let s = SourceStatus::default();
        assert_eq!(s.view_at(5_000).lag, None);
        s.event_read(1_000);
        assert_eq!(s.view_at(5_000).lag, Some(Lag::Seconds(4.0)));
        assert_eq!(s.view_at(6_000).lag, Some(Lag::Seconds(5.0)), "grows while nothing more is read");
        s.caught_up();
        assert_eq!(s.view_at(6_000).lag, Some(Lag::Seconds(0.0)));
        s.event_read(5_900);
        assert_eq!(s.view_at(6_000).lag, Some(Lag::Seconds(0.1)));
        let fresh = SourceStatus::default();
        fresh.caught_up();
        assert_eq!(fresh.view_at(6_000).lag, Some(Lag::Seconds(0.0)), "a heartbeat before any event");
    }

    #[test]
    fn lag_in_messages_sums_partitions() {
        assert_eq!(messages_behind([(100, 40), (7, 7), (5, 9)]), 60);
        assert_eq!(messages_behind(Vec::<(i64, i64)>::new()), 0);
        let s = SourceStatus::default();
        s.set_lag_messages(60);
        assert_eq!(s.view().lag, Some(Lag::Messages(60)));
        assert_eq!(s.view().text(), "running, lag 60 messages");
    }

    #[test]
    fn snapshot_progress_then_stream() {
        let s = SourceStatus::default();
        s.snapshot_started(4000);
        s.snapshot_rows(1000);
        match s.view().phase {
            PhaseView::Snapshot { rows, estimated, rows_per_sec } => {
                assert_eq!((rows, estimated), (1000, 4000));
                assert!(rows_per_sec > 0.0);
            }
            other => panic!("{other:?}"),
        }
        let text = s.view().text();
        assert!(text.starts_with("snapshot 1000 of ~4000 rows (25%), ") && text.ends_with(" rows/s"), "{text}");
        let unknown = PhaseView::Snapshot { rows: 7, estimated: 0, rows_per_sec: 3.0 };
        assert_eq!(unknown.text(), "snapshot 7 rows, 3 rows/s");
        assert_eq!(s.view().snapshot_done, None);
        s.set_phase(Phase::Streaming("binlog"));
        s.snapshot_rows(5000);
        s.caught_up();
        assert_eq!(s.view().text(), "binlog, lag 0.0 s");
        assert_eq!(s.view().snapshot_done.map(|d| d.0), Some(1000), "rows of the snapshot, kept after it");
        assert_eq!(Lag::Messages(1).text(), "lag 1 message");
    }
}
