//! The servers' settings, one definition each: a struct of optional settings written once with
//! its clap attributes (the flag `--foo-bar`, the variable `SMQ_FOO_BAR`, the help) and serde's
//! (the TOML key `foo_bar`), merged by one rule: a flag wins over a variable, a variable over the
//! `--config` file, the file over the default.
//!
//! [`layered!`] takes the struct as written and adds [`Layered`] (its field names and the merge);
//! [`read_toml`] reads the file into the same struct; [`check`] lets each server's tests prove
//! that every flag has its variable and TOML key and that README.md's settings table lists each
//! setting and nothing else. No clap here: the servers' derive attributes name it.

pub mod check;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A struct of settings, all `Option`s, that can be layered over another.
pub trait Layered: Sized {
    /// The name of every field, as written: a flag's field, a TOML-only or a variable-only one.
    const FIELDS: &'static [&'static str];

    /// Each setting from `self` when it has it, else from `lower`.
    fn or(self, lower: Self) -> Self;
}

/// Defines a struct of settings exactly as written (attributes, doc comments and all), every
/// field an `Option`, and implements [`Layered`] for it, so that a setting is added in one
/// place: its field.
#[macro_export]
macro_rules! layered {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[$field_meta:meta])*
                $field_vis:vis $field:ident : $type:ty
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $(
                $(#[$field_meta])*
                $field_vis $field: $type,
            )*
        }

        impl $crate::Layered for $name {
            const FIELDS: &'static [&'static str] = &[$(stringify!($field)),*];

            fn or(self, lower: Self) -> Self {
                Self {
                    $($field: self.$field.or(lower.$field),)*
                }
            }
        }
    };
}

/// The variable a setting also comes from: `--data-dir` (or `data_dir`) -> `SMQ_DATA_DIR`.
pub fn variable_of(name: &str) -> String {
    format!(
        "SMQ_{}",
        name.trim_start_matches("--")
            .replace('-', "_")
            .to_ascii_uppercase()
    )
}

/// The TOML key of a flag: `--data-dir` -> `data_dir`.
pub fn toml_key_of(flag: &str) -> String {
    flag.trim_start_matches("--").replace('-', "_")
}

/// The `--config` file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read the config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
}

/// `error` and its sources, joined by ": ", each cause said once: a message that already
/// quotes its source (`"reading x: Not a directory"` over the I/O error itself) is not followed
/// by it again. What the binaries print for an error that ends them.
///
/// ```
/// let error = std::io::Error::other("disk full");
/// assert_eq!(smq_settings::error_chain(&error), "disk full");
/// ```
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut said = String::new();
    for cause in std::iter::successors(Some(error), |e| e.source()) {
        let text = cause.to_string();
        if said.contains(&text) {
            continue;
        }
        if !said.is_empty() {
            said.push_str(": ");
        }
        said.push_str(&text);
    }
    said
}

/// The settings in the TOML file at `path`.
pub fn read_toml<T: DeserializeOwned>(path: &Path) -> Result<T, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|error| FileError::Parse {
        path: path.to_owned(),
        message: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    layered! {
        /// Two settings, for the tests.
        #[derive(Debug, Default, PartialEq, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Example {
            /// One.
            listen: Option<String>,
            pub retention_hours: Option<u64>,
        }
    }

    #[test]
    fn the_higher_layer_wins_setting_by_setting() {
        let high = Example {
            listen: Some("flag".into()),
            retention_hours: None,
        };
        let low = Example {
            listen: Some("file".into()),
            retention_hours: Some(7),
        };
        assert_eq!(
            high.or(low),
            Example {
                listen: Some("flag".into()),
                retention_hours: Some(7),
            }
        );
        assert_eq!(Example::FIELDS, ["listen", "retention_hours"]);
    }

    #[test]
    fn names_follow_the_flag() {
        assert_eq!(
            variable_of("--max-connections-per-ip"),
            "SMQ_MAX_CONNECTIONS_PER_IP"
        );
        assert_eq!(variable_of("cluster_secret"), "SMQ_CLUSTER_SECRET");
        assert_eq!(toml_key_of("--data-dir"), "data_dir");
    }

    /// An error whose message quotes its source, under a context that does not.
    #[derive(Debug, thiserror::Error)]
    #[error("reading {path}: {source}")]
    struct Quoting {
        path: &'static str,
        #[source]
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("cannot start")]
    struct Context(#[source] Quoting);

    #[test]
    fn a_cause_its_error_already_quotes_is_said_once() {
        let error = Context(Quoting {
            path: "/data/topics.json",
            source: std::io::Error::other("Not a directory"),
        });
        assert_eq!(
            error_chain(&error),
            "cannot start: reading /data/topics.json: Not a directory"
        );
    }

    #[test]
    fn the_file_is_read_and_unknown_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.toml");
        std::fs::write(&path, "retention_hours = 3\n").unwrap();
        let example: Example = read_toml(&path).unwrap();
        assert_eq!(example.retention_hours, Some(3));
        std::fs::write(&path, "retention_hour = 3\n").unwrap();
        let error = read_toml::<Example>(&path).unwrap_err().to_string();
        assert!(
            error.contains("retention_hour") && error.contains("server.toml"),
            "{error}"
        );
        let error = read_toml::<Example>(&dir.path().join("absent.toml")).unwrap_err();
        assert!(matches!(error, FileError::Read { .. }), "{error}");
        let chain = error_chain(&error);
        assert_eq!(
            chain.matches("No such file").count(),
            1,
            "said once: {chain}"
        );
    }
}
