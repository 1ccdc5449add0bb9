//! The log writer: request threads append finished lines to one shared buffer, and a thread of
//! its own writes that buffer to stdout in batches.
//!
//! A line costs a request thread one uncontended lock and a copy. The writer is woken once per
//! batch, not once per line: it is woken when a line lands in an empty buffer, then waits
//! [`BATCH_DELAY`] so that the lines of that moment join the same `write`. Under load one system
//! call carries hundreds of lines and the writer thread costs almost nothing; when idle it sleeps.
//!
//! Nothing is dropped. The buffer holds at most [`BUFFER_CAP`] bytes; a thread whose line does
//! not fit wakes the writer and waits for room (which only happens when stdout itself stalls).
//! Dropping the [`FlushGuard`] writes what is left and stops the thread.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the writer lets lines gather after the first one of a batch arrives.
pub(crate) const BATCH_DELAY: Duration = Duration::from_millis(5);

/// The most log bytes held in memory; a line that does not fit waits for the writer.
pub(crate) const BUFFER_CAP: usize = 4 * 1024 * 1024;

struct Queue {
    buf: Vec<u8>,
    /// Set by [`FlushGuard`]: write what is left and stop.
    closing: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    /// The writer waits here for a first line (or for `closing`).
    work: Condvar,
    /// Threads wait here for room when the buffer is full.
    room: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock leaves only bytes behind; keep logging.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A handle to the log buffer: cheap to clone, `Write` for whole lines.
#[derive(Clone)]
pub(crate) struct LogWriter(Arc<Shared>);

/// Writes every buffered line and stops the writer thread when dropped.
#[must_use = "dropping it flushes and stops the log writer"]
pub(crate) struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the writer thread over `out` (stdout in payguard; anything `Write` in tests).
pub(crate) fn start<W: Write + Send + 'static>(out: W) -> std::io::Result<(LogWriter, FlushGuard)> {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            buf: Vec::with_capacity(64 * 1024),
            closing: false,
        }),
        work: Condvar::new(),
        room: Condvar::new(),
    });
    let thread = std::thread::Builder::new().name("payguard log".into()).spawn({
        let shared = shared.clone();
        move || run(&shared, out)
    })?;
    Ok((
        LogWriter(shared.clone()),
        FlushGuard {
            shared,
            thread: Some(thread),
        },
    ))
}

fn run<W: Write>(shared: &Shared, mut out: W) {
    let mut batch = Vec::with_capacity(64 * 1024);
    loop {
        let mut q = shared.lock();
        while q.buf.is_empty() && !q.closing {
            q = shared.work.wait(q).unwrap_or_else(|e| e.into_inner());
        }
        if !q.closing && q.buf.len() < BUFFER_CAP / 2 {
            // Let the lines of this moment join the batch (a full buffer is written at once).
            drop(q);
            std::thread::sleep(BATCH_DELAY);
            q = shared.lock();
        }
        std::mem::swap(&mut q.buf, &mut batch);
        let closing = q.closing;
        drop(q);
        shared.room.notify_all();
        // A log that cannot be written has nowhere to report that; the lines are gone either way.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        if batch.capacity() > BUFFER_CAP {
            batch.shrink_to(64 * 1024);
        }
        if closing && shared.lock().buf.is_empty() {
            return;
        }
    }
}

impl LogWriter {
    /// Appends `line` (one or more whole lines). Waits for room when the buffer is full.
    pub(crate) fn append(&self, line: &[u8]) {
        let shared = &*self.0;
        let mut q = shared.lock();
        // A line longer than the whole buffer still goes in once the buffer is empty.
        while !q.buf.is_empty() && q.buf.len() + line.len() > BUFFER_CAP && !q.closing {
            shared.work.notify_one();
            q = shared.room.wait(q).unwrap_or_else(|e| e.into_inner());
        }
        let was_empty = q.buf.is_empty();
        q.buf.extend_from_slice(line);
        drop(q);
        if was_empty {
            shared.work.notify_one();
        }
    }
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.append(buf);
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.append(buf);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.work.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` that records every `write_all` call, so tests can see the batches.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_arrives_in_order_and_lines_share_writes() {
        let rec = Recorder::default();
        let (writer, guard) = start(rec.clone()).unwrap();
        let expected: Vec<String> = (0..5000).map(|i| format!("line {i}\n")).collect();
        for line in &expected {
            writer.append(line.as_bytes());
        }
        drop(guard);
        let writes = rec.0.lock().unwrap();
        let all: Vec<u8> = writes.concat();
        assert_eq!(String::from_utf8(all).unwrap(), expected.concat());
        assert!(
            writes.len() < expected.len(),
            "{} writes for {} lines",
            writes.len(),
            expected.len()
        );
    }

    #[test]
    fn lines_from_many_threads_stay_whole() {
        let rec = Recorder::default();
        let (writer, guard) = start(rec.clone()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut w = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..2000 {
                        w.write_all(format!("t{t} {i} {}\n", "x".repeat(i % 300)).as_bytes())
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let all = String::from_utf8(rec.0.lock().unwrap().concat()).unwrap();
        let mut next = [0usize; 4];
        for line in all.lines() {
            let mut parts = line.splitn(3, ' ');
            let t: usize = parts.next().unwrap()[1..].parse().unwrap();
            let i: usize = parts.next().unwrap().parse().unwrap();
            assert_eq!(parts.next().unwrap(), "x".repeat(i % 300));
            assert_eq!(i, next[t], "thread {t} out of order");
            next[t] += 1;
        }
        assert_eq!(next, [2000; 4]);
    }

    #[test]
    fn a_full_buffer_makes_writers_wait_and_nothing_is_lost() {
        /// Stdout that stalls on its first write, as a blocked pipe would.
        struct Slow(Recorder, bool);
        impl Write for Slow {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                if !self.1 {
                    self.1 = true;
                    std::thread::sleep(Duration::from_millis(200));
                }
                self.0.write(buf)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let rec = Recorder::default();
        let (writer, guard) = start(Slow(rec.clone(), false)).unwrap();
        let line = vec![b'y'; 64 * 1024 - 1]
            .into_iter()
            .chain(std::iter::once(b'\n'))
            .collect::<Vec<u8>>();
        // Three buffers' worth while the first write is stalled.
        let lines = 3 * BUFFER_CAP / line.len();
        for _ in 0..lines {
            writer.append(&line);
        }
        drop(guard);
        let total: usize = rec.0.lock().unwrap().iter().map(Vec::len).sum();
        assert_eq!(total, lines * line.len());
    }
}
