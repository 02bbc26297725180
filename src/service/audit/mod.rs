//! The event log: what happened, to whom, from where. Events go to the store; nothing secret
//! (password, token, CAPTCHA answer) is ever part of one, and writing one never blocks the proxy.

mod query;

pub use query::{Filters, Query, table};

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use tokio::sync::mpsc;

use crate::config::EventFile;
use crate::core::event::Event;
use crate::core::time::{Clock, SystemClock};
use crate::service::metrics::Metrics;
use crate::store::EventStore;

/// Opens `audit.file` for appending (standard output as it is).
fn open(file: &EventFile) -> std::io::Result<Box<dyn Write + Send>> {
    Ok(match file {
        EventFile::Stdout => Box::new(std::io::stdout()),
        EventFile::Path(path) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ),
    })
}

/// Events that may wait for the store, and for the file; beyond, an event is dropped, and the
/// drop is logged and counted in `portcullis_events_dropped_total`.
const STORE_QUEUE: usize = 8192;
const FILE_QUEUE: usize = 8192;
/// Most events written in one store transaction or one write to the file.
const BATCH: usize = 512;
/// A store write that fails is tried again this many times, a second apart, before its events
/// are counted as dropped.
const STORE_RETRIES: u32 = 3;

/// Counts dropped events and says so in the log, at most once every 10 s per sink, so that a
/// stuck sink cannot flood the log as well.
struct Drops {
    metrics: Arc<Metrics>,
    last_logged: [AtomicI64; 2],
}

impl Drops {
    fn count(&self, sink: &'static str, n: u64, why: &dyn std::fmt::Display) {
        self.metrics.events_dropped(sink, n);
        let slot = &self.last_logged[usize::from(sink == "file")];
        let now = SystemClock.now();
        if now - slot.load(Ordering::Relaxed) >= 10 && slot.swap(now, Ordering::Relaxed) != now {
            tracing::error!(
                sink,
                dropped = n,
                reason = %why,
                "events were not written to the event log; portcullis_events_dropped_total counts every one"
            );
        }
    }
}

enum ToFile {
    Event(Event),
    /// Open the file again (after log rotation), on SIGHUP.
    Reopen,
}

/// Hands events to the store writer and the file writer without ever waiting: the proxy path
/// calls it.
#[derive(Clone)]
pub struct Audit {
    to_store: mpsc::Sender<Event>,
    to_file: Option<std::sync::mpsc::SyncSender<ToFile>>,
    drops: Arc<Drops>,
    /// Keys of events recorded in the last minute, for events a scanner could repeat at will.
    recent: moka::sync::Cache<String, ()>,
}

/// Writes queued events to the store in batches; run it on a runtime that lives as long as the
/// gateway.
pub struct EventWriter {
    store: Arc<dyn EventStore>,
    queue: mpsc::Receiver<Event>,
    drops: Arc<Drops>,
    /// Joined at the end, so the last lines are in the file before the process exits.
    file_thread: Option<std::thread::JoinHandle<()>>,
}

impl Audit {
    /// The event log of a running gateway. With `file`, it is opened now (an error is a start
    /// failure) and written by a thread of its own.
    pub fn start(
        store: Arc<dyn EventStore>,
        file: Option<&EventFile>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Audit, EventWriter)> {
        let drops = Arc::new(Drops {
            metrics,
            last_logged: [AtomicI64::new(0), AtomicI64::new(0)],
        });
        let (to_file, file_thread) = match file {
            Some(target) => {
                let out = open(target).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("cannot open audit.file {target}: {e}"))
                })?;
                let (tx, rx) = std::sync::mpsc::sync_channel(FILE_QUEUE);
                let writer = FileWriter {
                    target: target.clone(),
                    out,
                    torn: false,
                    drops: drops.clone(),
                };
                let thread = std::thread::Builder::new()
                    .name("portcullis-events-file".into())
                    .spawn(move || writer.run(&rx))?;
                (Some(tx), Some(thread))
            }
            None => (None, None),
        };
        let (to_store, queue) = mpsc::channel(STORE_QUEUE);
        let audit = Audit {
            to_store,
            to_file,
            drops: drops.clone(),
            recent: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(std::time::Duration::from_secs(60))
                .build(),
        };
        Ok((
            audit,
            EventWriter {
                store,
                queue,
                drops,
                file_thread,
            },
        ))
    }

    /// Records `event` unless one with the same `key` was recorded in the last minute, so that
    /// a flood of refused requests cannot flood the store.
    pub fn record_once_per_minute(&self, key: String, event: Event) {
        // One atomic check-and-insert: two refused requests at once record one event.
        if self.recent.entry(key).or_insert(()).is_fresh() {
            self.record(event);
        }
    }

    /// Queues `event` for the store and the file; never waits. An event that finds a queue
    /// full is dropped, logged and counted.
    pub fn record(&self, event: Event) {
        if let Some(file) = &self.to_file
            && let Err(e) = file.try_send(ToFile::Event(event.clone()))
        {
            self.drops.count("file", 1, &e);
        }
        if let Err(e) = self.to_store.try_send(event) {
            self.drops.count("store", 1, &e);
        }
    }

    /// Opens the event file again, so that a rotated file is let go of.
    pub fn reopen_file(&self) {
        if let Some(file) = &self.to_file
            && file.try_send(ToFile::Reopen).is_err()
        {
            tracing::warn!("the event file writer is busy; the file is not reopened");
        }
    }
}

impl EventWriter {
    /// Runs until every `Audit` handle is gone and all they queued is written, to the store
    /// and to the file.
    pub async fn run(mut self) {
        let mut batch = Vec::with_capacity(BATCH);
        while self.queue.recv_many(&mut batch, BATCH).await > 0 {
            self.write(&batch).await;
            batch.clear();
        }
        if let Some(thread) = self.file_thread.take() {
            // The file's queue closed with the last `Audit`: the thread is finishing.
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    async fn write(&self, batch: &[Event]) {
        let mut tries = 0;
        loop {
            match self.store.record_events(batch).await {
                Ok(()) => return,
                Err(e) if tries == STORE_RETRIES => {
                    self.drops.count("store", batch.len() as u64, &e);
                    return;
                }
                Err(e) => {
                    tries += 1;
                    tracing::warn!(error = %e, events = batch.len(), "cannot store events; trying again");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// The file writer's thread: whatever is queued goes out in one write, so a storm costs few
/// system calls.
struct FileWriter {
    target: EventFile,
    out: Box<dyn Write + Send>,
    /// A failed write left a line without its end: the next write ends it first, so the cut
    /// line never swallows the next event.
    torn: bool,
    drops: Arc<Drops>,
}

impl FileWriter {
    fn run(mut self, queue: &std::sync::mpsc::Receiver<ToFile>) {
        let mut text = String::new();
        while let Ok(first) = queue.recv() {
            let mut lines = 0u64;
            for message in std::iter::once(first).chain(queue.try_iter().take(BATCH)) {
                match message {
                    ToFile::Event(e) => {
                        text.push_str(&e.to_json());
                        text.push('\n');
                        lines += 1;
                    }
                    ToFile::Reopen => match open(&self.target) {
                        Ok(reopened) => {
                            self.put(&text, lines);
                            text.clear();
                            lines = 0;
                            self.out = reopened;
                            self.torn = false;
                        }
                        Err(e) => tracing::error!(
                            file = %self.target,
                            error = %e,
                            "cannot reopen the event file; writing on to the old one"
                        ),
                    },
                }
            }
            self.put(&text, lines);
            text.clear();
        }
    }

    /// Writes `text`, `lines` whole lines; the lines that did not make it whole are dropped
    /// and counted.
    fn put(&mut self, text: &str, lines: u64) {
        if text.is_empty() {
            return;
        }
        let bytes = text.as_bytes();
        let mut written = 0;
        let mut attempt = || -> std::io::Result<()> {
            if self.torn {
                self.out.write_all(b"\n")?;
                self.torn = false;
            }
            while written < bytes.len() {
                match self.out.write(&bytes[written..]) {
                    Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                    Ok(n) => written += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            self.out.flush()
        };
        if let Err(e) = attempt() {
            let done = &bytes[..written];
            let whole = done.iter().filter(|&&b| b == b'\n').count() as u64;
            self.torn |= !done.is_empty() && !done.ends_with(b"\n");
            self.drops.count("file", lines - whole, &e);
        }
    }
}

/// For commands, which exit right after: stores `events` and waits for them, and appends them
/// to the event file unless that is standard output (the command's own output).
pub async fn record_directly(
    store: &dyn EventStore,
    file: Option<&EventFile>,
    events: &[Event],
) -> Result<(), RecordError> {
    store
        .record_events(events)
        .await
        .map_err(RecordError::Store)?;
    if let Some(target @ EventFile::Path(_)) = file {
        let line: String = events.iter().map(|e| e.to_json() + "\n").collect();
        open(target)
            .and_then(|mut out| out.write_all(line.as_bytes()))
            .map_err(|error| RecordError::File {
                file: target.to_string(),
                error,
            })?;
    }
    Ok(())
}

/// An event a command could not record.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("could not store the event: {0}")]
    Store(crate::store::StoreError),
    #[error("could not append the event to {file}: {error}")]
    File { file: String, error: std::io::Error },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::event::EventKind;
    use crate::store::Store;

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_waiting_and_the_writer_stores_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            crate::store::SqliteStore::open(&dir.path().join("s.db"))
                .await
                .unwrap(),
        );
        let metrics = Arc::new(Metrics::new());
        let (audit, writer) = Audit::start(store.clone(), None, metrics.clone()).unwrap();
        // No writer runs yet: the store queue fills, and the next event is dropped at once.
        for n in 0..=STORE_QUEUE {
            audit.record(Event::new(EventKind::LoginFailure, n as i64).login("x"));
        }
        let dropped = "portcullis_events_dropped_total{sink=\"store\"} 1";
        assert!(metrics.render().contains(dropped));
        drop(audit);
        writer.run().await;
        let stored = store
            .events(&crate::store::EventFilter::default())
            .await
            .unwrap();
        assert_eq!(stored.len(), STORE_QUEUE);
        assert_eq!(
            stored.last().map(|e| e.ts),
            Some(0),
            "newest first, from the first"
        );
    }

    /// A file that takes `room` more bytes, then fails as a full disk does.
    #[derive(Clone, Default)]
    struct Disk {
        data: Arc<std::sync::Mutex<Vec<u8>>>,
        room: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.room.load(Ordering::SeqCst));
            if n == 0 {
                return Err(std::io::Error::other("no space left"));
            }
            self.room.fetch_sub(n, Ordering::SeqCst);
            self.data.lock().unwrap().extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_line_cut_by_a_full_disk_is_counted_and_never_swallows_the_next() {
        let disk = Disk::default();
        let metrics = Arc::new(Metrics::new());
        let mut writer = FileWriter {
            target: EventFile::Stdout,
            out: Box::new(disk.clone()),
            torn: false,
            drops: Arc::new(Drops {
                metrics: metrics.clone(),
                last_logged: [AtomicI64::new(0), AtomicI64::new(0)],
            }),
        };
        let line = |login: &str| Event::new(EventKind::Logout, 0).login(login).to_json() + "\n";
        let (first, second) = (line("first"), line("second"));
        // Room for the first line and part of the second.
        disk.room.store(first.len() + 10, Ordering::SeqCst);
        writer.put(&(first.clone() + &second), 2);
        assert!(
            metrics
                .render()
                .contains("portcullis_events_dropped_total{sink=\"file\"} 1")
        );
        disk.room.store(usize::MAX, Ordering::SeqCst);
        let third = line("third");
        writer.put(&third, 1);
        let text = String::from_utf8(disk.data.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines, [first.trim_end(), &second[..10], third.trim_end()]);
        assert!(
            metrics
                .render()
                .contains("portcullis_events_dropped_total{sink=\"file\"} 1")
        );
    }

    #[test]
    fn event_names_round_trip() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(EventKind::parse("nope"), None);
    }
}
