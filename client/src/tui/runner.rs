//! The event loop: terminal setup and restore (also on panic), an input thread, the
//! backend thread, and one loop that turns every message into actions, runs `update`, hands
//! the commands it returns to the backend (saving settings itself), and draws.

use std::io::{self, Stdout};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use crossterm::event::{
    KeyboardEnhancementFlags, PopKeyboardEnhancementFlags, PushKeyboardEnhancementFlags,
};
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, supports_keyboard_enhancement, EnterAlternateScreen,
    LeaveAlternateScreen,
};
use crossterm::{cursor, execute};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;

use crate::control::ControlClient;
use crate::tui::action::{Action, Command, Event};
use crate::tui::backend::{Backend, Identity, CONTROL_TIMEOUT};
use crate::tui::config::{ConfigError, Settings};
use crate::tui::inbox::{inbox, EventSink, InboxReceiver, Message};
use crate::tui::keys::{KeyError, KeyMap};
use crate::tui::model::{App, PttStyle};
use crate::tui::ui;

/// Log file name in the config dir.
pub const LOG_FILE: &str = "kv-tui.log";
/// Commands queued for the backend before new ones are refused with a "busy" notice.
const COMMAND_CAPACITY: usize = 64;
/// Longest wait for the backend to leave the channel when quitting.
const QUIT_GRACE: Duration = Duration::from_secs(3);
/// Redraw at least this often (meters, reconnect countdowns) even without messages.
const FRAME: Duration = Duration::from_millis(100);

/// The process's original stderr while fd 2 points at the log file (-1: not redirected).
static SAVED_STDERR: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// Set while the terminal is in raw mode with keyboard enhancement pushed, so the panic
/// hook knows what to undo.
static ENHANCED: AtomicBool = AtomicBool::new(false);

/// Why the terminal client could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The terminal could not be set up or drawn to.
    #[error("terminal: {0}")]
    Terminal(#[from] io::Error),
    /// The settings file is unreadable or invalid.
    #[error("settings: {0}")]
    Config(#[from] ConfigError),
    /// A key in the settings' `[keys]` table is invalid.
    #[error("settings [keys]: {0}")]
    Keys(#[from] KeyError),
    /// The server address is unusable.
    #[error("{0}")]
    Control(#[from] crate::control::ControlError),
}

/// A channel named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinTarget {
    /// By id: `kv://host:port/42`.
    Id(u64),
    /// By name: `kv://host:port/lobby` (the first channel with that name).
    Name(String),
}

/// Everything `run` needs.
#[derive(Debug)]
pub struct Options {
    /// `host:port` of the server.
    pub server: String,
    /// Who we are.
    pub identity: Identity,
    /// Channel to join once connected (from a `kv://` URL).
    pub join: Option<JoinTarget>,
    /// Config dir (settings, log file).
    pub config_dir: PathBuf,
    /// Where the server's key is pinned on first use (`None` for the demo's own server).
    pub trust: Option<crate::control::KnownServers>,
}

/// Runs the terminal client until the user quits.
pub fn run(opts: Options) -> Result<(), RunError> {
    let mut settings = Settings::load(&opts.config_dir)?;
    let keymap = KeyMap::with_overrides(&settings.keys)?;
    let mut control = ControlClient::new(&opts.server)?.with_timeout(CONTROL_TIMEOUT);
    if let Some(trust) = opts.trust.clone() {
        control = control.with_trust(trust);
    }

    // The app owns every setting from here on; `settings` keeps only what it does not
    // (the key overrides, the default server) for the next save.
    let mut app = App::new(opts.server.clone());
    settings.apply_to(&mut app);
    app.help = keymap.help();
    match opts.join.clone() {
        Some(JoinTarget::Id(chid)) => app.rejoin = Some(chid),
        Some(JoinTarget::Name(name)) => app.join_name = Some(name),
        None => {}
    }

    let (sink, inbox_rx) = inbox();
    let (cmd_tx, cmd_rx) = std::sync::mpsc::sync_channel(COMMAND_CAPACITY);
    let (done_tx, done_rx) = std::sync::mpsc::sync_channel::<()>(1);
    Backend::new(control, opts.identity, sink.clone()).spawn(cmd_rx, done_tx)?;

    install_panic_hook();
    // C libraries (ALSA above all) print to stderr, which would scribble over the screen:
    // send fd 2 to the log file while the TUI owns the terminal.
    redirect_stderr(&opts.config_dir.join(LOG_FILE));
    let mut terminal = setup_terminal()?;
    app.ptt_style = ptt_style();
    tracing::info!(ptt = ?app.ptt_style, server = %opts.server, "kv-tui started");

    let stop_input = Arc::new(AtomicBool::new(false));
    spawn_input(sink.clone(), stop_input.clone())?;
    drop(sink);

    let result = event_loop(
        &mut terminal,
        &mut app,
        &keymap,
        &mut settings,
        &opts.config_dir,
        &inbox_rx,
        &cmd_tx,
    );
    stop_input.store(true, Ordering::Relaxed);
    // Keep draining the inbox so a backend blocked on a full one can still finish.
    inbox_rx.drain_in_background();
    // Let the backend leave the channel cleanly; a hung server must not hang us.
    let _ = cmd_tx.try_send(Command::Quit);
    drop(cmd_tx);
    if done_rx.recv_timeout(QUIT_GRACE).is_err() {
        tracing::warn!("backend did not finish in time");
    }
    restore_terminal();
    terminal.show_cursor()?;
    tracing::info!("kv-tui stopped");
    result
}

fn event_loop(
    terminal: &mut Terminal<CrosstermBackend<Stdout>>,
    app: &mut App,
    keymap: &KeyMap,
    settings: &mut Settings,
    config_dir: &std::path::Path,
    inbox_rx: &InboxReceiver,
    cmd_tx: &SyncSender<Command>,
) -> Result<(), RunError> {
    while !app.should_quit {
        terminal.draw(|f| ui::draw(app, f))?;
        // Everything queued is handled before drawing again, so bursts cost one frame.
        let Some(batch) = inbox_rx.batch(FRAME) else {
            break;
        };
        for msg in batch {
            for cmd in handle(app, keymap, msg) {
                dispatch(cmd, app, settings, config_dir, cmd_tx);
            }
            if app.should_quit {
                break;
            }
        }
    }
    Ok(())
}

/// One message through the keymap and `update`: the commands to carry out.
pub fn handle(app: &mut App, keymap: &KeyMap, msg: Message) -> Vec<Command> {
    let action = match msg {
        Message::Event(e) => Some(Action::Event(e)),
        Message::Term(crossterm::event::Event::Key(ev)) => keymap
            .translate(&ev, &app.overlay, app.ptt_style)
            .map(Action::Key),
        Message::Term(_) => None,
    };
    action.map(|a| app.update(a)).unwrap_or_default()
}

/// Carries out one command: settings here (the one place they are written), everything
/// else on the backend.
fn dispatch(
    cmd: Command,
    app: &mut App,
    settings: &mut Settings,
    config_dir: &std::path::Path,
    cmd_tx: &SyncSender<Command>,
) {
    match cmd {
        Command::SaveSettings => {
            settings.update_from(app);
            if let Err(e) = settings.save(config_dir) {
                tracing::warn!(error = %e, "could not save settings");
                app.notice = Some(format!("error: could not save settings: {e}"));
            }
        }
        Command::Quit => {}
        cmd => match cmd_tx.try_send(cmd) {
            Ok(()) => {}
            Err(TrySendError::Full(cmd)) => {
                tracing::warn!(?cmd, "backend busy; command dropped");
                app.update(Event::Error("busy: try again".into()));
            }
            Err(TrySendError::Disconnected(_)) => {
                app.update(Event::Error("network backend stopped".into()));
            }
        },
    }
}

/// Push-to-talk style: hold where the terminal reports key releases. `KV_TUI_PTT=hold` or
/// `toggle` overrides the detection.
fn ptt_style() -> PttStyle {
    match std::env::var("KV_TUI_PTT").as_deref() {
        Ok("hold") => PttStyle::Hold,
        Ok("toggle") => PttStyle::Toggle,
        _ if ENHANCED.load(Ordering::Relaxed) => PttStyle::Hold,
        _ => PttStyle::Toggle,
    }
}

fn setup_terminal() -> io::Result<Terminal<CrosstermBackend<Stdout>>> {
    enable_raw_mode()?;
    let mut out = io::stdout();
    execute!(out, EnterAlternateScreen, cursor::Hide)?;
    // Key releases (for hold-to-talk) need the kitty keyboard protocol.
    if matches!(supports_keyboard_enhancement(), Ok(true)) {
        execute!(
            out,
            PushKeyboardEnhancementFlags(
                KeyboardEnhancementFlags::DISAMBIGUATE_ESCAPE_CODES
                    | KeyboardEnhancementFlags::REPORT_EVENT_TYPES
            )
        )?;
        ENHANCED.store(true, Ordering::Relaxed);
    }
    let mut t = Terminal::new(CrosstermBackend::new(out))?;
    t.clear()?;
    Ok(t)
}

/// Points fd 2 at `path` (appending), remembering the original; failures leave it alone.
fn redirect_stderr(path: &std::path::Path) {
    use std::os::fd::AsRawFd;
    let Ok(file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    else {
        return;
    };
    // SAFETY: dup/dup2 on valid descriptors have no memory-safety preconditions; `file`
    // stays open until after dup2 has made fd 2 a second reference to it.
    unsafe {
        let saved = libc::dup(2);
        if saved < 0 {
            return;
        }
        if libc::dup2(file.as_raw_fd(), 2) < 0 {
            libc::close(saved);
            return;
        }
        SAVED_STDERR.store(saved, Ordering::SeqCst);
    }
}

/// Gives fd 2 back to the terminal (after a redirect); safe to call twice.
fn restore_stderr() {
    let saved = SAVED_STDERR.swap(-1, Ordering::SeqCst);
    if saved >= 0 {
        // SAFETY: `saved` is the descriptor dup() returned and nothing else closes it.
        unsafe {
            libc::dup2(saved, 2);
            libc::close(saved);
        }
    }
}

/// Puts the terminal back as we found it; safe to call twice and from the panic hook.
fn restore_terminal() {
    restore_stderr();
    let mut out = io::stdout();
    if ENHANCED.swap(false, Ordering::Relaxed) {
        let _ = execute!(out, PopKeyboardEnhancementFlags);
    }
    let _ = disable_raw_mode();
    let _ = execute!(out, LeaveAlternateScreen, cursor::Show);
}

/// Restores the terminal before the default hook prints, so the message is readable.
fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        tracing::error!(%info, "panic");
        default(info);
    }));
}

/// Reads terminal events on a thread of its own, polling so it notices `stop`.
fn spawn_input(sink: EventSink, stop: Arc<AtomicBool>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("kv-tui-input".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match crossterm::event::poll(Duration::from_millis(50)) {
                    Ok(true) => match crossterm::event::read() {
                        Ok(ev) => {
                            if !sink.send_term(ev) {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "reading terminal input failed");
                            return;
                        }
                    },
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "polling terminal input failed");
                        return;
                    }
                }
            }
        })?;
    Ok(())
}

/// Sends tracing output to `dir/kv-tui.log` (never to the screen). `KV_LOG` sets the
/// filter (default `info`).
pub fn init_logging(dir: &std::path::Path) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(LOG_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("KV_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init();
    Ok(path)
}
