//! `--config FILE`: a TOML file whose keys are the long names of the command-line flags
//! (`resync-interval = "5m"`, `marathon = ["http://m1:8080"]`). The flags' own definitions
//! (src/config.rs) are the only list of keys, environment variables and defaults: a file value
//! is handed to the flag's environment variable when that variable is not set, so the order
//! is flags, then the environment, then the file, then the defaults — one definition.

use std::path::{Path, PathBuf};

use clap::Args;

use crate::config::ServeArgs;

#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error(
        "{path}:{line}: unknown key {key:?} (the keys are the long flag names: marathon-dns --help)"
    )]
    UnknownKey {
        path: PathBuf,
        line: usize,
        key: String,
    },
    #[error("{path}:{line}: {key}: {message}")]
    BadValue {
        path: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
}

/// The file named by `--config FILE`, `--config=FILE` or `MARATHON_DNS_CONFIG`, if any.
pub fn requested(args: &[String]) -> Option<PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    std::env::var_os("MARATHON_DNS_CONFIG").map(PathBuf::from)
}

fn line_of(text: &str, byte: usize) -> usize {
    text[..byte.min(text.len())].matches('\n').count() + 1
}

fn key_line(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key)
                .or_else(|| l.strip_prefix(&format!("\"{key}\"")))
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map_or(1, |i| i + 1)
}

fn scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        _ => None,
    }
}

/// Read `path` and return, for every key, the flag's environment variable and the value,
/// each value checked by the flag's own parser.
pub fn load(path: &Path) -> Result<Vec<(String, String)>, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let table: toml::Table =
        text.parse()
            .map_err(|e: toml::de::Error| ConfigFileError::Syntax {
                path: path.to_path_buf(),
                line: e.span().map_or(1, |s| line_of(&text, s.start)),
                message: e.message().to_string(),
            })?;
    let command = ServeArgs::augment_args(clap::Command::new("marathon-dns"));
    let mut out = Vec::new();
    for (key, value) in &table {
        let line = key_line(&text, key);
        let Some(arg) = command
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()))
        else {
            return Err(ConfigFileError::UnknownKey {
                path: path.to_path_buf(),
                line,
                key: key.clone(),
            });
        };
        let bad = |message: String| ConfigFileError::BadValue {
            path: path.to_path_buf(),
            line,
            key: key.clone(),
            message,
        };
        let values: Vec<String> = match value {
            toml::Value::Array(items) => items
                .iter()
                .map(|i| scalar(i).ok_or_else(|| bad("expected a list of plain values".into())))
                .collect::<Result<_, _>>()?,
            v => vec![scalar(v).ok_or_else(|| bad("expected a plain value".into()))?],
        };
        // The flag's own parser decides, exactly as on the command line.
        let mut argv = vec!["marathon-dns".to_string()];
        let is_switch = matches!(arg.get_action(), clap::ArgAction::SetTrue);
        for v in &values {
            if is_switch {
                match v.as_str() {
                    "true" => argv.push(format!("--{key}")),
                    "false" => {}
                    _ => return Err(bad("expected true or false".into())),
                }
            } else {
                argv.push(format!("--{key}"));
                argv.push(v.clone());
            }
        }
        command
            .clone()
            .mut_args(|a| a.env(None::<&'static str>))
            .try_get_matches_from(&argv)
            .map_err(|e| {
                bad(e
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim_start_matches("error: ")
                    .to_string())
            })?;
        let Some(env) = arg.get_env().and_then(|e| e.to_str()) else {
            return Err(bad("this flag cannot come from a file".into()));
        };
        out.push((env.to_string(), values.join(",")));
    }
    Ok(out)
}

/// The `serve` settings as the command line `argv` gives them once the configuration file's
/// content is `file_vars` (from [`load`]): what a SIGHUP reload applies. A flag's value comes,
/// as at startup, from the command line, else from an environment variable the operator set,
/// else from the file, else from its default. `file_owned` are the environment variables the
/// file set at startup (they hold its old values, which must not count now).
pub fn reparse(
    argv: &[String],
    file_owned: &std::collections::BTreeSet<String>,
    file_vars: &[(String, String)],
) -> Result<ServeArgs, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let from_file = |a: clap::Arg| {
        let Some(env) = a.get_env().and_then(|e| e.to_str()).map(str::to_string) else {
            return a;
        };
        // The operator's own environment still wins over the file.
        if !file_owned.contains(&env) && std::env::var_os(&env).is_some() {
            return a;
        }
        let a = a.env(None::<&'static str>);
        match file_vars.iter().find(|(k, _)| *k == env) {
            Some((_, value)) => match a.get_value_delimiter() {
                Some(d) => {
                    let values: Vec<String> = value.split(d).map(str::to_string).collect();
                    a.default_values(values)
                }
                None => a.default_value(value.clone()),
            },
            None => a,
        }
    };
    let cmd = crate::config::Cli::command()
        .mut_args(from_file)
        .mut_subcommand("serve", |c| c.mut_args(from_file));
    let matches = cmd.try_get_matches_from(argv)?;
    let cli = crate::config::Cli::from_arg_matches(&matches)?;
    Ok(match cli.command {
        Some(crate::config::Command::Serve(args)) => args,
        _ => cli.serve,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("marathon-dns.toml");
        std::fs::write(&path, text).expect("write");
        (dir, path)
    }

    #[test]
    fn keys_become_the_flags_environment_variables() {
        let (_d, path) = write(
            "marathon = [\"http://m1:8080\", \"http://m2:8080\"]\nttl = 7\n\
             resync-interval = \"2m\"\ninclude-unhealthy = true\n",
        );
        let mut vars = load(&path).expect("loads");
        vars.sort();
        assert_eq!(
            vars,
            [
                ("MARATHON_DNS_INCLUDE_UNHEALTHY".into(), "true".into()),
                (
                    "MARATHON_DNS_MARATHON".into(),
                    "http://m1:8080,http://m2:8080".into()
                ),
                ("MARATHON_DNS_RESYNC_INTERVAL".into(), "2m".into()),
                ("MARATHON_DNS_TTL".into(), "7".into()),
            ]
        );
    }

    #[test]
    fn errors_name_file_and_line() {
        let (_d, path) = write("ttl = 5\n\nresync-intervall = \"5m\"\n");
        let e = load(&path).expect_err("unknown key").to_string();
        assert!(e.ends_with(":3: unknown key \"resync-intervall\" (the keys are the long flag names: marathon-dns --help)"), "{e}");
        let (_d, path) = write("ttl = 5\nresync-interval = \"5 minutes\"\n");
        let e = load(&path).expect_err("bad value").to_string();
        assert!(e.contains(":2: resync-interval:"), "{e}");
        let (_d, path) = write("ttl = 5\nlisten = [\n");
        let e = load(&path).expect_err("syntax").to_string();
        assert!(e.contains("marathon-dns.toml:"), "{e}");
    }

    #[test]
    fn a_reload_takes_the_files_new_values_but_flags_still_win() {
        let (_d, path) =
            write("ttl = 7\ninclude-unhealthy = true\nmarathon = [\"http://m1:8080\"]\n");
        let owned: std::collections::BTreeSet<String> = load(&path)
            .expect("loads")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        std::fs::write(
            &path,
            "ttl = 9\nmarathon = [\"http://m1:8080\", \"http://m2:8080\"]\nresync-interval = \"1m\"\n",
        )
        .expect("rewrite");
        let vars = load(&path).expect("loads again");
        let argv: Vec<String> = ["marathon-dns", "--coalesce", "5ms"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let args = reparse(&argv, &owned, &vars).expect("parses");
        assert_eq!(args.ttl, 9);
        assert!(
            !args.include_unhealthy,
            "a key removed from the file is back to its default"
        );
        assert_eq!(args.marathon, ["http://m1:8080", "http://m2:8080"]);
        assert_eq!(args.resync_interval, std::time::Duration::from_secs(60));
        assert_eq!(
            args.coalesce,
            std::time::Duration::from_millis(5),
            "the flag wins"
        );
        let argv: Vec<String> = ["marathon-dns", "serve", "--ttl", "3"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let args = reparse(&argv, &owned, &vars).expect("parses");
        assert_eq!((args.ttl, args.resync_interval.as_secs()), (3, 60));
    }
}
