//! Config keys from the environment.
//!
//! Every key of the config file can be set with an environment variable named after
//! it, upper-cased, with the prefix `QUICMATCH_`:
//!
//! - a top-level key is `QUICMATCH_<KEY>`: `QUICMATCH_LISTEN=0.0.0.0:7350`,
//!   `QUICMATCH_SOCKET_BUFFER=8388608`, `QUICMATCH_SERVER_KEY=...`;
//! - a key in a section is `QUICMATCH_<SECTION>__<KEY>`, with a *double* underscore
//!   between section and key: `QUICMATCH_SESSION__IDLE_TIMEOUT=3s`,
//!   `QUICMATCH_MATCHES__MAX_SIZE=8`, `QUICMATCH_MATCHMAKER__MUTUAL=false`.
//!
//! A value is read as a TOML number or boolean when it is one and the key is not a
//! string key; anything else is taken verbatim as a string (durations such as `3s`,
//! addresses, paths, keys). Paths are relative to the working directory.
//!
//! Precedence: defaults, then the config file, then these variables, then command-line
//! flags. Any other `QUICMATCH_` variable is an error that names it (so a misspelt key
//! is never silently ignored), except those in [`NOT_KEYS`], which the `quicmatch`
//! binary reads itself. The old single-underscore `QUICMATCH_MATCHMAKER_INTERVAL` still
//! works (it is the `--matchmaker-interval` flag).

use std::{collections::BTreeMap, ffi::OsStr};

use super::{Config, ConfigError};

/// The prefix of every variable read here.
pub const PREFIX: &str = "QUICMATCH_";

/// `QUICMATCH_` variables that are not config keys: the `quicmatch` binary's own
/// (`--config`, `--log-format`, and the older spelling of `matchmaker.interval`).
pub const NOT_KEYS: &[&str] = &[
    "QUICMATCH_CONFIG",
    "QUICMATCH_LOG_FORMAT",
    "QUICMATCH_MATCHMAKER_INTERVAL",
];

impl Config {
    /// Applies the process's `QUICMATCH_*` variables over `self` (see [the
    /// convention](self)).
    pub fn with_env(self) -> Result<Self, ConfigError> {
        self.with_vars(std::env::vars_os())
    }

    /// Applies the `QUICMATCH_*` variables among `vars` over `self`, in name order
    /// (others are ignored). An unknown key, a value of the wrong type or a value that
    /// is not UTF-8 is an error naming the variable; ranges are checked later, by
    /// [`Config::validate`].
    pub fn with_vars<I, K, V>(self, vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let mut picked = BTreeMap::new();
        for (name, value) in vars {
            let Some(name) = name.as_ref().to_str() else {
                continue;
            };
            if !name.starts_with(PREFIX) || NOT_KEYS.contains(&name) {
                continue;
            }
            let value = value
                .as_ref()
                .to_str()
                .ok_or_else(|| invalid(name, None, "the value is not UTF-8"))?;
            picked.insert(name.to_owned(), value.to_owned());
        }
        if picked.is_empty() {
            return Ok(self);
        }
        let mut table = match toml::Value::try_from(&self) {
            Ok(toml::Value::Table(table)) => table,
            Ok(_) => return Err(ConfigError::Invalid("config is not a table".into())),
            Err(e) => return Err(ConfigError::Invalid(format!("config: {e}"))),
        };
        for (name, raw) in &picked {
            let path = key_path(name)?;
            let dotted = path.join(".");
            let candidates = candidates(lookup(&table, &path), raw);
            let mut first_error = None;
            let mut accepted = None;
            for candidate in candidates {
                let mut next = table.clone();
                set(&mut next, &path, candidate)
                    .map_err(|reason| invalid(name, Some(&dotted), &reason))?;
                match toml::Value::Table(next.clone()).try_into::<Self>() {
                    Ok(_) => {
                        accepted = Some(next);
                        break;
                    }
                    Err(e) => {
                        first_error.get_or_insert_with(|| e.message().trim().to_owned());
                    }
                }
            }
            table = accepted.ok_or_else(|| {
                invalid(
                    name,
                    Some(&dotted),
                    first_error.as_deref().unwrap_or("not accepted"),
                )
            })?;
        }
        toml::Value::Table(table)
            .try_into()
            .map_err(|e| ConfigError::Invalid(format!("environment: {}", e.message().trim())))
    }
}

fn invalid(name: &str, key: Option<&str>, reason: &str) -> ConfigError {
    let key = key.map(|k| format!(" ({k})")).unwrap_or_default();
    ConfigError::Invalid(format!("environment variable {name}{key}: {reason}"))
}

/// `QUICMATCH_SESSION__IDLE_TIMEOUT` → `["session", "idle_timeout"]`.
fn key_path(name: &str) -> Result<Vec<String>, ConfigError> {
    let rest = name.strip_prefix(PREFIX).unwrap_or(name);
    let path: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
    if path.iter().any(String::is_empty) {
        return Err(invalid(
            name,
            None,
            "not a config key (QUICMATCH_<KEY> or QUICMATCH_<SECTION>__<KEY>)",
        ));
    }
    Ok(path)
}

fn lookup<'a>(table: &'a toml::Table, path: &[String]) -> Option<&'a toml::Value> {
    let (last, sections) = path.split_last()?;
    let mut table = table;
    for section in sections {
        table = table.get(section)?.as_table()?;
    }
    table.get(last)
}

/// Puts `value` at `path`, making sections that are missing (deserializing then names
/// an unknown one).
fn set(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let Some((last, sections)) = path.split_last() else {
        return Err("no key".into());
    };
    let mut table = table;
    let mut walked = Vec::new();
    for section in sections {
        walked.push(section.as_str());
        table = table
            .entry(section.as_str())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| format!("{} is not a section", walked.join(".")))?;
    }
    table.insert(last.clone(), value);
    Ok(())
}

/// The readings of `raw` to try, in order: as a number or boolean unless the key holds
/// a string, then verbatim as a string.
fn candidates(existing: Option<&toml::Value>, raw: &str) -> Vec<toml::Value> {
    let verbatim = toml::Value::String(raw.to_owned());
    match (existing, scalar(raw)) {
        (Some(toml::Value::String(_)), _) | (_, None) => vec![verbatim],
        (_, Some(value)) => vec![value, verbatim],
    }
}

/// `raw` as a TOML integer, float or boolean, if it is one.
fn scalar(raw: &str) -> Option<toml::Value> {
    if raw.contains(['\n', '\r']) {
        return None;
    }
    let mut table: toml::Table = toml::from_str(&format!("v = {raw}")).ok()?;
    if table.len() != 1 {
        return None;
    }
    match table.remove("v")? {
        v @ (toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_)) => Some(v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn apply(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::default().with_vars(vars.iter().copied())
    }

    fn error(vars: &[(&str, &str)]) -> String {
        apply(vars).expect_err("should fail").to_string()
    }

    #[test]
    fn the_transport_and_its_workers_come_from_the_environment() {
        let config = apply(&[("QUICMATCH_TRANSPORT", "proto"), ("QUICMATCH_WORKERS", "4")])
            .expect("applies");
        assert_eq!(config.transport, super::super::Transport::Proto);
        assert_eq!(config.workers, 4);
        let e = error(&[("QUICMATCH_TRANSPORT", "tcp")]);
        assert!(e.contains("QUICMATCH_TRANSPORT"), "{e}");
        let too_many = Config {
            workers: 65,
            ..Config::default()
        };
        let e = too_many.validate().expect_err("out of range").to_string();
        assert!(e.contains("workers"), "{e}");
        assert_eq!(
            "udp"
                .parse::<super::super::Transport>()
                .expect_err("unknown"),
            "unknown transport `udp`: use quinn or proto"
        );
    }

    #[test]
    fn nested_and_top_level_keys() {
        let config = apply(&[
            ("QUICMATCH_SESSION__IDLE_TIMEOUT", "3s"),
            ("QUICMATCH_MATCHES__MAX_SIZE", "8"),
            ("QUICMATCH_SOCKET_BUFFER", "1048576"),
            ("QUICMATCH_MATCHMAKER__MUTUAL", "false"),
            ("QUICMATCH_SESSION__REQUESTS_PER_SECOND", "20"),
            ("QUICMATCH_SESSION__DATAGRAMS_PER_SECOND", "12.5"),
            ("QUICMATCH_LISTEN", "127.0.0.1:9000"),
            ("QUICMATCH_METRICS", "127.0.0.1:9100"),
            ("QUICMATCH_CERTS_DIR", "some/dir"),
        ])
        .expect("applies");
        assert_eq!(config.session.idle_timeout, Duration::from_secs(3));
        assert_eq!(config.matches.max_size, 8);
        assert_eq!(config.socket_buffer, 1 << 20);
        assert!(!config.matchmaker.mutual);
        assert_eq!(config.session.requests_per_second, 20.0);
        assert_eq!(config.session.datagrams_per_second, 12.5);
        assert_eq!(config.listen, "127.0.0.1:9000".parse().expect("addr"));
        assert_eq!(
            config.metrics,
            Some("127.0.0.1:9100".parse().expect("addr"))
        );
        assert_eq!(config.certs_dir, std::path::PathBuf::from("some/dir"));
        // Untouched keys keep what they had.
        assert_eq!(
            config.session.auth_timeout,
            Config::default().session.auth_timeout
        );
        assert_eq!(config.party, Config::default().party);
    }

    #[test]
    fn durations_that_may_be_off() {
        let config = apply(&[("QUICMATCH_MATCHES__SNAPSHOT_INTERVAL", "250ms")]).expect("applies");
        assert_eq!(config.matches.snapshot_interval, Duration::from_millis(250));
        let config = apply(&[("QUICMATCH_MATCHES__SNAPSHOT_INTERVAL", "0s")]).expect("applies");
        assert_eq!(config.matches.snapshot_interval, Duration::ZERO);
        config.validate().expect("0s is off");
        let e = error(&[("QUICMATCH_MATCHES__SNAPSHOT_INTERVAL", "often")]);
        assert!(e.contains("QUICMATCH_MATCHES__SNAPSHOT_INTERVAL"), "{e}");
        assert!(e.contains("matches.snapshot_interval"), "{e}");
    }

    #[test]
    fn applies_over_what_was_there() {
        let mut base = Config::default();
        base.matches.max_size = 16;
        base.matches.max_per_session = 2;
        let config = base
            .with_vars([("QUICMATCH_MATCHES__MAX_SIZE", "32")])
            .expect("applies");
        assert_eq!(config.matches.max_size, 32);
        assert_eq!(config.matches.max_per_session, 2);
    }

    #[test]
    fn string_keys_take_the_value_verbatim() {
        let config = apply(&[
            ("QUICMATCH_SERVER_KEY", "12345"),
            ("QUICMATCH_SESSION__ENCRYPTION_KEY", "true"),
        ])
        .expect("applies");
        assert_eq!(config.server_key, "12345");
        assert_eq!(config.session.encryption_key.as_deref(), Some("true"));
        let quoted = apply(&[("QUICMATCH_SERVER_KEY", "\"a b\" # c")]).expect("applies");
        assert_eq!(quoted.server_key, "\"a b\" # c");
    }

    #[test]
    fn other_variables_are_ignored() {
        let config = apply(&[
            ("PATH", "/bin"),
            ("QUICMATCHX", "1"),
            ("QUICMATCH_CONFIG", "x.toml"),
            ("QUICMATCH_LOG_FORMAT", "json"),
            ("QUICMATCH_MATCHMAKER_INTERVAL", "1s"),
        ])
        .expect("applies");
        assert_eq!(config, Config::default());
    }

    #[test]
    fn unknown_keys_name_the_variable() {
        let e = error(&[("QUICMATCH_SESSION__NOPE", "1")]);
        assert!(e.contains("QUICMATCH_SESSION__NOPE"), "{e}");
        assert!(e.contains("session.nope"), "{e}");
        assert!(e.contains("nope"), "{e}");
        let e = error(&[("QUICMATCH_NOPE", "1")]);
        assert!(e.contains("QUICMATCH_NOPE"), "{e}");
        let e = error(&[("QUICMATCH_NOPE__IDLE_TIMEOUT", "1s")]);
        assert!(e.contains("QUICMATCH_NOPE__IDLE_TIMEOUT"), "{e}");
        let e = error(&[("QUICMATCH_SOCKET_BUFFER__X", "1")]);
        assert!(e.contains("QUICMATCH_SOCKET_BUFFER__X"), "{e}");
        assert!(e.contains("not a section"), "{e}");
        let e = error(&[("QUICMATCH_SESSION__IDLE_TIMEOUT__X", "1")]);
        assert!(e.contains("QUICMATCH_SESSION__IDLE_TIMEOUT__X"), "{e}");
        for bad in ["QUICMATCH_", "QUICMATCH_SESSION__", "QUICMATCH___X"] {
            let e = error(&[(bad, "1")]);
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn wrong_types_name_the_variable() {
        let e = error(&[("QUICMATCH_MATCHES__MAX_SIZE", "eight")]);
        assert!(e.contains("QUICMATCH_MATCHES__MAX_SIZE"), "{e}");
        assert!(e.contains("matches.max_size"), "{e}");
        let e = error(&[("QUICMATCH_MATCHES__MAX_SIZE", "-1")]);
        assert!(e.contains("QUICMATCH_MATCHES__MAX_SIZE"), "{e}");
        let e = error(&[("QUICMATCH_SESSION__IDLE_TIMEOUT", "5")]);
        assert!(e.contains("QUICMATCH_SESSION__IDLE_TIMEOUT"), "{e}");
        let e = error(&[("QUICMATCH_LISTEN", "not an address")]);
        assert!(e.contains("QUICMATCH_LISTEN"), "{e}");
        let e = error(&[("QUICMATCH_SESSION", "1")]);
        assert!(e.contains("QUICMATCH_SESSION"), "{e}");
    }

    #[test]
    fn ranges_are_left_to_validate() {
        let config = apply(&[("QUICMATCH_MATCHES__MAX_SIZE", "1")]).expect("applies");
        let e = config.validate().expect_err("out of range").to_string();
        assert!(e.contains("matches.max_size"), "{e}");
    }

    #[test]
    fn values_cannot_smuggle_other_keys() {
        let config =
            apply(&[("QUICMATCH_SERVER_KEY", "x\nlisten = \"1.2.3.4:5\"")]).expect("applies");
        assert_eq!(config.server_key, "x\nlisten = \"1.2.3.4:5\"");
        assert_eq!(config.listen, Config::default().listen);
        let e = error(&[("QUICMATCH_SOCKET_BUFFER", "1\nlisten = \"1.2.3.4:5\"")]);
        assert!(e.contains("QUICMATCH_SOCKET_BUFFER"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn a_value_that_is_not_utf8_is_an_error() {
        use std::os::unix::ffi::OsStrExt as _;
        let e = Config::default()
            .with_vars([(
                OsStr::new("QUICMATCH_SERVER_KEY"),
                OsStr::from_bytes(b"\xff\xfe"),
            )])
            .expect_err("not UTF-8")
            .to_string();
        assert!(e.contains("QUICMATCH_SERVER_KEY"), "{e}");
        // A name that is not UTF-8 is no key of ours.
        let config = Config::default()
            .with_vars([(OsStr::from_bytes(b"QUICMATCH_\xff"), OsStr::new("1"))])
            .expect("ignored");
        assert_eq!(config, Config::default());
    }
}
