//! Logging of every `shoal` command: which events are written, in which format, and
//! where.
//!
//! Three settings, each a global flag (accepted before or after any command) and, for
//! `shoal node`, a key of its config file (see `docs/config.md`):
//!
//! | setting | values | default |
//! |---|---|---|
//! | `log-level` | a tracing filter: `LEVEL` or `LEVEL,TARGET=LEVEL,...`, e.g. `info,shoal_raftstore=debug` | `info,raft=warn` |
//! | `log-format` | `text` (one readable line per event) or `json` (one JSON object per line) | `text` |
//! | `log-file` | a file the lines are appended to (created if missing); empty: stderr | empty |
//!
//! Precedence, nearest first: the flag, then (for `log-level` only) the `RUST_LOG`
//! environment variable, then the node's config file, then the default
//! ([`LogArgs::apply`]). `main` starts logging before the command runs (for `shoal
//! node`, once its config is read); what goes wrong before that, or a command's own
//! error, is printed on stderr whatever `log-file` says.

use std::fmt;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// The filter used when neither a flag, `RUST_LOG` nor a config file gives one:
/// raft-rs's own info lines (every vote and term change of every region) are too
/// many to keep.
pub const DEFAULT_LOG_LEVEL: &str = "info,raft=warn";

/// How each event is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (tracing-subscriber's JSON format: `timestamp`,
    /// `level`, `fields`, `target`, and the spans).
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// The logging flags, global: `shoal --log-format json kv get k` and `shoal kv get
/// k --log-format json` are the same.
#[derive(Args, Clone, Debug, Default)]
#[command(next_help_heading = "Logging (any command)")]
pub struct LogArgs {
    /// Which events are logged: a tracing filter, LEVEL or LEVEL,TARGET=LEVEL,...
    /// (e.g. info,shoal_raftstore=debug). Without this flag: RUST_LOG, then
    /// log-level of the node's config file [default: info,raft=warn]
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// text: one readable line per event; json: one JSON object per line (else
    /// log-format of the node's config file) [default: text]
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Append log lines to this file (created if missing) instead of stderr (else
    /// log-file of the node's config file) [default: stderr]
    #[arg(long, global = true, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
}

/// What logging starts with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSettings {
    /// The filter (`log-level`).
    pub level: String,
    /// The format (`log-format`).
    pub format: LogFormat,
    /// The file (`log-file`); empty: stderr.
    pub file: PathBuf,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: DEFAULT_LOG_LEVEL.to_string(),
            format: LogFormat::Text,
            file: PathBuf::new(),
        }
    }
}

impl LogArgs {
    /// `base` (a node's config file over the defaults, or the defaults alone) with
    /// `rust_log` (the `RUST_LOG` variable, [`rust_log`]) over its level, and these
    /// flags over both.
    pub fn apply(&self, base: LogSettings, rust_log: Option<String>) -> LogSettings {
        LogSettings {
            level: self.log_level.clone().or(rust_log).unwrap_or(base.level),
            format: self.log_format.unwrap_or(base.format),
            file: self.log_file.clone().unwrap_or(base.file),
        }
    }
}

/// The `RUST_LOG` environment variable, when set, not blank and a filter. One that
/// does not parse is left out with a warning on stderr (it may be meant for another
/// program: it must not stop `shoal kv get`); a bad `--log-level` is an error.
pub fn rust_log() -> Option<String> {
    let v = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())?;
    match filter(&v) {
        Ok(_) => Some(v),
        Err(e) => {
            eprintln!("shoal: ignoring RUST_LOG: {e}");
            None
        }
    }
}

/// Parses a `log-level` filter, naming it when it is not one.
pub fn filter(level: &str) -> Result<EnvFilter, String> {
    EnvFilter::builder()
        .parse(level)
        .map_err(|e| format!("log-level {level:?} is not a tracing filter: {e}"))
}

/// The subscriber for `settings`, writing to `writer` (with colours when `ansi`;
/// never in JSON).
pub fn subscriber(
    settings: &LogSettings,
    writer: BoxMakeWriter,
    ansi: bool,
) -> Result<Box<dyn tracing::Subscriber + Send + Sync>, String> {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(&settings.level)?)
        .with_writer(writer);
    Ok(match settings.format {
        LogFormat::Text => Box::new(builder.with_ansi(ansi).finish()),
        LogFormat::Json => Box::new(builder.json().with_ansi(false).finish()),
    })
}

/// Opens `path` for appending log lines, creating it if missing.
fn open_log_file(path: &Path) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open the log file {}: {e}", path.display()))
}

/// Starts logging with `settings` for the rest of the process: the filter, the
/// format, and stderr (colours when it is a terminal) or the file (never colours).
pub fn init(settings: &LogSettings) -> Result<(), String> {
    let (writer, ansi) = if settings.file.as_os_str().is_empty() {
        let ansi = std::io::stderr().is_terminal();
        (BoxMakeWriter::new(std::io::stderr), ansi)
    } else {
        let file = open_log_file(&settings.file)?;
        (BoxMakeWriter::new(std::sync::Mutex::new(file)), false)
    };
    subscriber(settings, writer, ansi)?
        .try_init()
        .map_err(|e| format!("cannot start logging: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn log_to_buffer(settings: &LogSettings) -> String {
        let buf = Buffer::default();
        let out = buf.clone();
        let sub = subscriber(settings, BoxMakeWriter::new(move || out.clone()), true).unwrap();
        tracing::subscriber::with_default(sub, || {
            tracing::info!(region_id = 7, "applied \"quoted\" entry");
            tracing::debug!("dropped by the filter");
            tracing::warn!(target: "raft", "dropped: raft logs warnings only");
            tracing::error!(target: "raft", "kept");
        });
        let bytes = buf.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn json_writes_one_parseable_object_per_line() {
        let settings = LogSettings {
            level: "info,raft=error".into(),
            format: LogFormat::Json,
            ..LogSettings::default()
        };
        let text = log_to_buffer(&settings);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["level"], "INFO");
        assert_eq!(lines[0]["fields"]["message"], "applied \"quoted\" entry");
        assert_eq!(lines[0]["fields"]["region_id"], 7);
        assert_eq!(lines[1]["target"], "raft");
        assert!(
            !text.contains('\u{1b}'),
            "no colour codes in JSON: {text:?}"
        );
    }

    #[test]
    fn text_is_filtered_by_the_level() {
        let text = log_to_buffer(&LogSettings {
            level: "info,raft=error".into(),
            ..LogSettings::default()
        });
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("applied"), "{text}");
        assert!(!text.contains("dropped"), "{text}");
    }

    #[test]
    fn flags_win_over_rust_log_which_wins_over_the_file() {
        let file = LogSettings {
            level: "debug".into(),
            format: LogFormat::Json,
            file: "from-file.log".into(),
        };
        let none = LogArgs::default();
        assert_eq!(none.apply(file.clone(), None), file);
        let env = none.apply(file.clone(), Some("warn".into()));
        assert_eq!(env.level, "warn");
        assert_eq!(env.format, LogFormat::Json);
        let flags = LogArgs {
            log_level: Some("error".into()),
            log_format: Some(LogFormat::Text),
            log_file: Some("flag.log".into()),
        };
        let both = flags.apply(file, Some("warn".into()));
        assert_eq!(
            both,
            LogSettings {
                level: "error".into(),
                format: LogFormat::Text,
                file: "flag.log".into()
            }
        );
        assert_eq!(
            none.apply(LogSettings::default(), None).level,
            "info,raft=warn"
        );
    }

    #[test]
    fn bad_filters_and_unopenable_files_are_named() {
        let err = filter("info,raft=loudest").unwrap_err();
        assert!(err.contains("\"info,raft=loudest\""), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let err = open_log_file(&dir.path().join("no/such/dir/shoal.log")).unwrap_err();
        assert!(err.starts_with("cannot open the log file "), "{err}");
        assert!(err.contains("no/such/dir/shoal.log"), "{err}");
    }
}
