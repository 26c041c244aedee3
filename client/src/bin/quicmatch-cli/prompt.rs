//! Where commands come from: stdin as lines, or, when stdin and stdout are a terminal, a
//! prompt with line editing and history.
//!
//! The prompt blocks, so it runs on a thread of its own and hands each line to the
//! command loop, waiting until the command is done (and its output written) before it
//! shows the prompt again. Output printed meanwhile appears above the prompt.

use std::{
    io::IsTerminal as _,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use nix::sys::termios::{self, SetArg, Termios};
use rustyline::{error::ReadlineError, Config, DefaultEditor, ExternalPrinter};
use tokio::{
    io::{AsyncBufReadExt as _, BufReader, Lines, Stdin},
    sync::mpsc,
};

use crate::output::Output;

const PROMPT: &str = "quicmatch> ";

/// What the prompt thread sends the command loop.
enum Input {
    Line(String),
    /// Ctrl-D or Ctrl-C at the prompt: time to close.
    End,
    Failed(std::io::Error),
}

/// The source of commands.
pub(crate) enum Commands {
    /// Stdin as lines (a pipe, a file, a test).
    Lines(Lines<BufReader<Stdin>>),
    /// The terminal prompt.
    Prompt(Prompt),
}

impl Commands {
    pub(crate) fn stdin() -> Self {
        Self::Lines(BufReader::new(tokio::io::stdin()).lines())
    }

    /// The next command line; `None` at the end of input.
    pub(crate) async fn next_line(&mut self) -> std::io::Result<Option<String>> {
        match self {
            Self::Lines(lines) => lines.next_line().await,
            Self::Prompt(prompt) => match prompt.lines.recv().await {
                Some(Input::Line(line)) => Ok(Some(line)),
                Some(Input::End) | None => Ok(None),
                Some(Input::Failed(e)) => Err(e),
            },
        }
    }

    /// The last line's command is done and its output queued; `more` is false when it
    /// was the last one.
    pub(crate) async fn done(&mut self, more: bool, output: &Output) {
        if let Self::Prompt(prompt) = self {
            // The reply shows before the next prompt does.
            output.flush().await;
            let _ = prompt.next.send(more);
        }
    }
}

/// The prompt thread's side of the command loop.
pub(crate) struct Prompt {
    lines: mpsc::Receiver<Input>,
    /// Lets the thread prompt again (`true`) or stop (`false`).
    next: std::sync::mpsc::Sender<bool>,
}

/// The editor before its thread starts, and how to put the terminal back at exit.
pub(crate) struct Terminal {
    editor: DefaultEditor,
    /// The terminal's settings before the prompt changed them.
    saved: Termios,
    /// Set while the thread waits at the prompt, with the terminal in raw mode.
    at_prompt: Arc<AtomicBool>,
}

impl Terminal {
    /// A line editor, with the printer for the output thread, when stdin and stdout are
    /// a terminal that supports one; `None` otherwise (then stdin is read as lines).
    pub(crate) fn open() -> Option<(Self, Box<dyn ExternalPrinter + Send>)> {
        if !(std::io::stdin().is_terminal() && std::io::stdout().is_terminal()) {
            return None;
        }
        let saved = termios::tcgetattr(std::io::stdin()).ok()?;
        let config = Config::builder()
            .auto_add_history(true)
            // Pasted lines run one by one, as if typed.
            .bracketed_paste(false)
            .build();
        let mut editor = DefaultEditor::with_config(config).ok()?;
        // Fails for a terminal without editing (TERM=dumb): read lines then.
        let printer = editor.create_external_printer().ok()?;
        Some((
            Self {
                editor,
                saved,
                at_prompt: Arc::new(AtomicBool::new(false)),
            },
            Box::new(printer),
        ))
    }

    /// Starts the prompt thread; returns its commands, and what restores the terminal.
    pub(crate) fn start(self) -> std::io::Result<(Commands, Restore)> {
        let Self {
            mut editor,
            saved,
            at_prompt,
        } = self;
        let (tx, lines) = mpsc::channel(1);
        let (next, proceed) = std::sync::mpsc::channel();
        let flag = at_prompt.clone();
        std::thread::Builder::new()
            .name("prompt".into())
            .spawn(move || loop {
                flag.store(true, Ordering::SeqCst);
                let read = editor.readline(PROMPT);
                flag.store(false, Ordering::SeqCst);
                let input = match read {
                    Ok(line) => Input::Line(line),
                    Err(ReadlineError::Eof | ReadlineError::Interrupted) => Input::End,
                    Err(ReadlineError::Signal(_)) => continue,
                    Err(ReadlineError::Io(e)) => Input::Failed(e),
                    Err(e) => Input::Failed(std::io::Error::other(e.to_string())),
                };
                let line = matches!(input, Input::Line(_));
                if tx.blocking_send(input).is_err() || !line || proceed.recv() != Ok(true) {
                    return;
                }
            })?;
        Ok((
            Commands::Prompt(Prompt { lines, next }),
            Restore { saved, at_prompt },
        ))
    }
}

/// Puts the terminal back as it was, for an exit while the prompt thread may be
/// waiting at the prompt (a signal, a lost connection): that thread never returns to
/// do it.
pub(crate) struct Restore {
    saved: Termios,
    at_prompt: Arc<AtomicBool>,
}

impl Restore {
    pub(crate) fn restore(&self) {
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSADRAIN, &self.saved);
        if self.at_prompt.load(Ordering::SeqCst) {
            // Leave the shell a fresh line rather than the end of the prompt's.
            use std::io::Write as _;
            let mut stdout = std::io::stdout();
            let _ = stdout.write_all(b"\n");
            let _ = stdout.flush();
        }
    }
}
