//! Output that never holds up the connection: lines go through a bounded queue to a
//! thread that does the blocking writes.

use std::{
    future::Future,
    io::{BufWriter, Write},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::Duration,
};

use rustyline::ExternalPrinter;
use tokio::{
    sync::{
        mpsc::{self, error::TrySendError},
        oneshot,
    },
    time::timeout,
};

use crate::render::Out;

/// Lines waiting for the stdout thread. An event that finds the queue full is dropped
/// rather than ever making the event loop wait; replies to commands wait for room.
const OUTPUT_QUEUE: usize = 1024;
/// How long exiting waits for stdout while it makes no progress at all.
const OUTPUT_STALL: Duration = Duration::from_secs(5);

enum Msg {
    Line(String),
    /// Answered once everything before it is written.
    Flush(oneshot::Sender<()>),
}

/// Where lines go: a bounded queue drained by a thread that does the blocking writes to
/// stdout, and an unbounded one for the few notes on stderr.
#[derive(Clone)]
pub(crate) struct Output {
    stdout: mpsc::Sender<Msg>,
    pub(crate) shared: Arc<OutputShared>,
}

pub(crate) struct OutputShared {
    /// Event lines dropped since stdout last caught up; a warning went out with the first.
    dropped: Mutex<u64>,
    /// Lines the stdout thread has written: its progress, for the waits at exit.
    written: AtomicU64,
    stderr: std::sync::mpsc::Sender<Msg>,
}

impl OutputShared {
    pub(crate) fn note(&self, text: String) {
        let _ = self.stderr.send(Msg::Line(text));
    }

    /// Stdout has taken every queued line: reports what was dropped meanwhile.
    fn caught_up(&self) {
        let mut dropped = self.dropped.lock().unwrap_or_else(PoisonError::into_inner);
        if *dropped > 0 {
            self.note(format!(
                "quicmatch-cli: dropped {} events while output was blocked",
                std::mem::take(&mut *dropped)
            ));
        }
    }
}

impl Output {
    /// Starts the threads; lines go to `sink`.
    pub(crate) fn start(sink: Sink) -> std::io::Result<Self> {
        let (stdout, lines) = mpsc::channel(OUTPUT_QUEUE);
        let (stderr, notes) = std::sync::mpsc::channel();
        let shared = Arc::new(OutputShared {
            dropped: Mutex::new(0),
            written: AtomicU64::new(0),
            stderr,
        });
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("stdout".into())
            .spawn(move || match sink {
                Sink::Stdout => {
                    write_stdout(lines, &writer, BufWriter::new(std::io::stdout().lock()));
                }
                Sink::Printer(printer) => write_stdout(lines, &writer, PrinterWriter::new(printer)),
            })?;
        std::thread::Builder::new()
            .name("stderr".into())
            .spawn(move || write_stderr(notes))?;
        Ok(Self { stdout, shared })
    }

    /// Queues an event's line without waiting: if stdout is behind by a full queue,
    /// the line is dropped and counted, with one warning per stretch of dropping.
    pub(crate) fn offer(&self, line: String) {
        if let Err(TrySendError::Full(_)) = self.stdout.try_send(Msg::Line(line)) {
            let mut dropped = self
                .shared
                .dropped
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if *dropped == 0 {
                self.shared
                    .note("quicmatch-cli: output is not being read; dropping events".into());
            }
            *dropped += 1;
        }
    }

    /// Queues replies, waiting for room: a command's output is never dropped.
    pub(crate) async fn send(&self, out: &mut Out) {
        for line in out.take() {
            let _ = self.stdout.send(Msg::Line(line)).await;
        }
    }

    /// Runs `wait` as long as stdout keeps making progress; `None` once it has made
    /// none for [`OUTPUT_STALL`].
    async fn while_progressing<T>(&self, wait: impl Future<Output = T>) -> Option<T> {
        tokio::pin!(wait);
        let mut seen = self.shared.written.load(Ordering::Relaxed);
        loop {
            if let Ok(done) = timeout(OUTPUT_STALL, &mut wait).await {
                return Some(done);
            }
            let now = self.shared.written.load(Ordering::Relaxed);
            if now == seen {
                return None;
            }
            seen = now;
        }
    }

    /// Queues a line that must not be dropped, giving up only if stdout is stuck.
    pub(crate) async fn send_patiently(&self, line: String) {
        self.while_progressing(self.stdout.send(Msg::Line(line)))
            .await;
    }

    /// Writes out everything queued (unless stdout is stuck) and the notes on stderr.
    pub(crate) async fn flush(&self) {
        let (done, written) = oneshot::channel();
        self.while_progressing(async {
            if self.stdout.send(Msg::Flush(done)).await.is_ok() {
                let _ = written.await;
            }
        })
        .await;
        let (done, written) = oneshot::channel();
        if self.shared.stderr.send(Msg::Flush(done)).is_ok() {
            let _ = timeout(OUTPUT_STALL, written).await;
        }
    }
}

/// Where the stdout thread writes.
pub(crate) enum Sink {
    /// Stdout itself.
    Stdout,
    /// The terminal prompt's printer, which prints above the line being edited.
    Printer(Box<dyn ExternalPrinter + Send>),
}

/// Buffers what is written and hands it to the prompt's printer on flush.
struct PrinterWriter {
    printer: Box<dyn ExternalPrinter + Send>,
    buffer: Vec<u8>,
}

impl PrinterWriter {
    fn new(printer: Box<dyn ExternalPrinter + Send>) -> Self {
        Self {
            printer,
            buffer: Vec::new(),
        }
    }
}

impl Write for PrinterWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&std::mem::take(&mut self.buffer)).into_owned();
        self.printer.print(text).map_err(std::io::Error::other)
    }
}

/// The stdout thread: blocking writes, flushed whenever the queue runs empty. Once
/// stdout is closed, lines are discarded.
fn write_stdout(mut lines: mpsc::Receiver<Msg>, shared: &OutputShared, mut stdout: impl Write) {
    let mut open = true;
    while let Some(msg) = lines.blocking_recv() {
        let done = match msg {
            Msg::Line(line) => {
                open = open && writeln!(stdout, "{line}").is_ok();
                shared.written.fetch_add(1, Ordering::Relaxed);
                if !lines.is_empty() {
                    continue;
                }
                None
            }
            Msg::Flush(done) => Some(done),
        };
        open = open && stdout.flush().is_ok();
        shared.caught_up();
        if let Some(done) = done {
            let _ = done.send(());
        }
    }
}

fn write_stderr(notes: std::sync::mpsc::Receiver<Msg>) {
    for msg in notes {
        match msg {
            Msg::Line(line) => {
                let _ = writeln!(std::io::stderr(), "{line}");
            }
            Msg::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}
