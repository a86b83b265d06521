//! For the servers' tests: every flag has its `SMQ_` variable and TOML key, and README.md's
//! settings table names every setting and nothing that does not exist.

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;

use crate::{toml_key_of, variable_of, Layered};

/// The field of the flag that names the TOML file: it has no key in the file.
pub const CONFIG_FIELD: &str = "config";

/// A flag as the server's clap definition has it.
#[derive(Debug, Clone)]
pub struct Flag {
    /// The struct field it fills (clap's argument id).
    pub field: String,
    /// Its long name, with the dashes: `--data-dir`.
    pub long: String,
    /// The variable it also comes from, if any.
    pub variable: Option<String>,
}

impl Flag {
    /// The flag of clap's argument `id` (`Arg::get_id`, `get_long`, `get_env`); `None` for an
    /// argument without a long name, and for `--help` and `--version`, which are no settings.
    pub fn new(id: &str, long: Option<&str>, variable: Option<&std::ffi::OsStr>) -> Option<Flag> {
        let long = long.filter(|long| !matches!(*long, "help" | "version"))?;
        Some(Flag {
            field: id.to_owned(),
            long: format!("--{long}"),
            variable: variable.map(|name| name.to_string_lossy().into_owned()),
        })
    }
}

/// The names in the first cell of each row of the first table under the line `heading` whose
/// header starts with `| setting`: every word in backquotes, the first of its words
/// (`` `--listen ADDR` `` -> `--listen`), without brackets (`` `[[principals]]` `` ->
/// `principals`).
pub fn settings_table(readme: &str, heading: &str) -> Result<Vec<Vec<String>>, String> {
    let mut lines = readme.lines().skip_while(|line| line.trim_end() != heading);
    if lines.next().is_none() {
        return Err(format!("README.md has no heading {heading:?}"));
    }
    let mut lines = lines.skip_while(|line| !line.starts_with("| setting "));
    if lines.next().is_none() {
        return Err(format!("no `| setting |` table under {heading:?}"));
    }
    let rows = lines
        .skip(1) // |---|---|
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            let first_cell = line.split('|').nth(1).unwrap_or_default();
            first_cell
                .split('`')
                .skip(1)
                .step_by(2)
                .filter_map(|quoted| quoted.split_whitespace().next())
                .map(|name| name.trim_matches(|c| c == '[' || c == ']').to_owned())
                .collect()
        })
        .collect();
    Ok(rows)
}

/// The default a flag's help states: `... [default: 3000].` -> `3000`.
pub fn help_default(help: &str) -> Option<&str> {
    let (_, rest) = help.split_once("[default: ")?;
    rest.split_once(']').map(|(default, _)| default.trim())
}

/// The default column of the row of README.md's settings table under `heading` that names
/// `flag` (`--foo`), as the help states it: without backquotes, thousands separators, the bounds
/// or a note after it (` (1 – 100)`, ` = no limit`, `: plaintext`), and a size in KiB, MiB or
/// GiB as bytes: `` `16 MiB (1 KiB – 1 GiB)` `` -> `16777216`, `10,000 (1 – 1,000,000)` ->
/// `10000`, `` `master` `` -> `master`.
pub fn readme_default(readme: &str, heading: &str, flag: &str) -> Result<String, String> {
    let mut lines = readme.lines().skip_while(|line| line.trim_end() != heading);
    lines.next();
    let row = lines
        .skip_while(|line| !line.starts_with("| setting "))
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .find(|line| {
            let first_cell = line.split('|').nth(1).unwrap_or_default();
            first_cell
                .split('`')
                .skip(1)
                .step_by(2)
                .any(|quoted| quoted.split_whitespace().next() == Some(flag))
        })
        .ok_or_else(|| format!("README's settings table under {heading:?} has no row of {flag}"))?;
    let cell = row.split('|').nth(2).unwrap_or_default().replace('`', "");
    let cell = cell.trim();
    let value = cell
        .split(": ")
        .next()
        .and_then(|value| value.split_whitespace().next())
        .unwrap_or_default()
        .replace(',', "");
    let unit = cell.split_whitespace().nth(1).unwrap_or_default();
    let scale: u64 = match unit {
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Ok(value),
    };
    value
        .parse::<u64>()
        .map(|number| (number * scale).to_string())
        .map_err(|_| format!("README's default of {flag} is {cell:?}, not a size"))
}

/// Whether `key = value` in the TOML file of `T` gives what leaving it out gives: `value` as a
/// number or a boolean if it is one, else as a string. `complete` turns the settings into the
/// server's configuration, whose `Debug` is compared; an error is a problem too.
pub fn default_is_the_default<T, C, E>(
    key: &str,
    value: &str,
    complete: impl Fn(T) -> Result<C, E>,
) -> Result<(), String>
where
    T: DeserializeOwned + Default,
    C: std::fmt::Debug,
    E: std::fmt::Display,
{
    let settings: T = toml::from_str(&format!("{key} = {value}"))
        .or_else(|_| toml::from_str(&format!("{key} = {value:?}")))
        .map_err(|error| format!("{key} = {value:?} is no TOML setting: {error}"))?;
    let given = complete(settings).map_err(|error| format!("{key} = {value:?}: {error}"))?;
    let left_out = complete(T::default()).map_err(|error| error.to_string())?;
    if format!("{given:?}") == format!("{left_out:?}") {
        Ok(())
    } else {
        Err(format!(
            "{key} = {value:?}, the documented default, is not what leaving {key} out gives"
        ))
    }
}

/// [`default_problems`] for the clap-derived settings struct `$settings`, its flags taken from
/// its clap command: `(checked, problems)`. A macro, so that clap reaches each server through
/// its own flags only (this crate does not depend on it).
///
/// ```ignore
/// let readme = include_str!("../../README.md");
/// let (checked, problems) =
///     smq_settings::documented_defaults!(Settings, readme, "## Broker", BrokerConfig::from_settings);
/// ```
#[macro_export]
macro_rules! documented_defaults {
    ($settings:ty, $readme:expr, $heading:expr, $complete:expr) => {{
        use clap::CommandFactory;
        let flags = <$settings>::command()
            .get_arguments()
            .filter_map(|arg| {
                let help = arg.get_help()?.to_string();
                Some((format!("--{}", arg.get_long()?), help))
            })
            .collect::<Vec<(String, String)>>();
        $crate::check::default_problems(flags, $readme, $heading, $complete)
    }};
}

/// What is wrong with the documented defaults of `T`: for each flag (`--long` and its help, as
/// clap has them) whose help states a default value (`[default: 3000]`, not words like
/// `[default: the --listen address]`), README's settings table under `heading` must state the
/// same ([`readme_default`]) and setting it must give what leaving it out gives
/// ([`default_is_the_default`]). Also returns how many defaults were checked.
pub fn default_problems<T, C, E>(
    flags: impl IntoIterator<Item = (String, String)>,
    readme: &str,
    heading: &str,
    complete: impl Fn(T) -> Result<C, E>,
) -> (usize, Vec<String>)
where
    T: DeserializeOwned + Default,
    C: std::fmt::Debug,
    E: std::fmt::Display,
{
    let mut checked = 0;
    let mut problems = Vec::new();
    for (flag, help) in flags {
        let Some(default) = help_default(&help).filter(|default| !default.contains(' ')) else {
            continue;
        };
        checked += 1;
        match readme_default(readme, heading, &flag) {
            Ok(readme) if readme == default => {}
            Ok(readme) => problems.push(format!("{flag}: help {default}, README {readme}")),
            Err(error) => problems.push(error),
        }
        if default != "none" {
            let key = toml_key_of(&flag);
            problems.extend(default_is_the_default(&key, default, &complete).err());
        }
    }
    (checked, problems)
}

/// Whether the TOML file of `T` has the key `key` (a wrong value type is not a missing key).
fn has_toml_key<T: DeserializeOwned>(key: &str) -> bool {
    match toml::from_str::<T>(&format!("{key} = 0")) {
        Ok(_) => true,
        Err(error) => !error.message().contains("unknown field"),
    }
}

/// What is wrong with the definitions of `T` (`flags`, as clap has them) and with `table`, the
/// rows of README.md's settings table: every flag `--foo-bar` must come from `SMQ_FOO_BAR` too
/// and be the key `foo_bar` of the file (but `--config`); a field with no flag is a TOML key or
/// else a variable `SMQ_<FIELD>` only. The table must name every flag with its variable in the
/// same row, every TOML-only key and every variable-only setting, and nothing else. Empty: all
/// is well.
pub fn problems<T: Layered + DeserializeOwned>(
    flags: &[Flag],
    table: &[Vec<String>],
) -> Vec<String> {
    let mut problems = Vec::new();
    if flags.is_empty() || table.is_empty() {
        problems.push(format!(
            "nothing to check: {} flags, {} table rows",
            flags.len(),
            table.len()
        ));
    }
    for flag in flags {
        let variable = variable_of(&flag.long);
        if flag.variable.as_deref() != Some(variable.as_str()) {
            problems.push(format!(
                "{} comes from the variable {:?}, not {variable}",
                flag.long, flag.variable
            ));
        }
        if flag.field == CONFIG_FIELD {
            continue;
        }
        let key = toml_key_of(&flag.long);
        if flag.field != key {
            problems.push(format!(
                "{} fills the field {}, not {key}",
                flag.long, flag.field
            ));
        }
        if !has_toml_key::<T>(&key) {
            problems.push(format!("{} has no TOML key {key}", flag.long));
        }
    }

    let flagged: BTreeSet<&str> = flags.iter().map(|flag| flag.field.as_str()).collect();
    let (toml_only, variable_only): (BTreeSet<String>, BTreeSet<String>) = {
        let unflagged = T::FIELDS.iter().filter(|field| !flagged.contains(*field));
        let (keys, variables): (Vec<&&str>, Vec<&&str>) =
            unflagged.partition(|field| has_toml_key::<T>(field));
        (
            keys.into_iter().map(|field| field.to_string()).collect(),
            variables
                .into_iter()
                .map(|field| variable_of(field))
                .collect(),
        )
    };

    let longs: BTreeSet<&str> = flags.iter().map(|flag| flag.long.as_str()).collect();
    let mut listed_flags = BTreeSet::new();
    let mut listed_variables = BTreeSet::new();
    let mut listed_keys = BTreeSet::new();
    for row in table {
        let row_variables: BTreeSet<String> = row
            .iter()
            .filter(|name| name.starts_with("--"))
            .map(|flag| variable_of(flag))
            .collect();
        for name in row {
            if name.starts_with("--") {
                if !row.contains(&variable_of(name)) {
                    problems.push(format!(
                        "README: the row of {name} does not name its variable {}",
                        variable_of(name)
                    ));
                }
                listed_flags.insert(name.as_str());
            } else if name.starts_with("SMQ_") {
                if !row_variables.contains(name) && !variable_only.contains(name) {
                    problems.push(format!(
                        "README: {name} is neither the variable of a flag in its row nor a \
                         variable-only setting"
                    ));
                }
                listed_variables.insert(name.clone());
            } else {
                listed_keys.insert(name.clone());
            }
        }
    }
    for missing in longs.difference(&listed_flags) {
        problems.push(format!("README's settings table does not list {missing}"));
    }
    for extra in listed_flags.difference(&longs) {
        problems.push(format!(
            "README's settings table lists {extra}, which is no flag"
        ));
    }
    for missing in variable_only.difference(&listed_variables) {
        problems.push(format!("README's settings table does not list {missing}"));
    }
    for missing in toml_only.difference(&listed_keys) {
        problems.push(format!(
            "README's settings table does not list the TOML key {missing}"
        ));
    }
    for extra in listed_keys.difference(&toml_only) {
        problems.push(format!(
            "README's settings table lists {extra}, which is no TOML-only key"
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    crate::layered! {
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Example {
            #[serde(skip)]
            config: Option<String>,
            data_dir: Option<String>,
            principals: Option<Vec<String>>,
            #[serde(skip)]
            cluster_secret: Option<String>,
        }
    }

    fn flag(field: &str, long: &str, variable: &str) -> Flag {
        Flag {
            field: field.into(),
            long: long.into(),
            variable: Some(variable.into()),
        }
    }

    const README: &str = "\
# x

## Server

| setting | default | meaning |
|---|---|---|
| `--config FILE` (`SMQ_CONFIG`) | none | the file |
| `--data-dir` (`SMQ_DATA_DIR`) | `.` | where |
| `[[principals]]` (TOML only) | none | who |
| `SMQ_CLUSTER_SECRET` | none | the secret |

## Other
";

    #[test]
    fn a_complete_definition_and_table_have_no_problem() {
        let flags = [
            flag("config", "--config", "SMQ_CONFIG"),
            flag("data_dir", "--data-dir", "SMQ_DATA_DIR"),
        ];
        let table = settings_table(README, "## Server").unwrap();
        assert_eq!(table[0], ["--config", "SMQ_CONFIG"]);
        assert_eq!(problems::<Example>(&flags, &table), Vec::<String>::new());
    }

    #[test]
    fn a_wrong_variable_a_missing_key_and_a_table_out_of_date_are_named() {
        let flags = [
            flag("config", "--config", "SMQ_CONFIG"),
            flag("data_dir", "--data-dir", "SMQ_DATADIR"),
            flag("log_level", "--log-level", "SMQ_LOG_LEVEL"),
        ];
        let table = settings_table(
            &README.replace("| `SMQ_CLUSTER_SECRET` |", "| `--gone` |"),
            "## Server",
        )
        .unwrap();
        let problems = problems::<Example>(&flags, &table).join("\n");
        for expected in [
            "--data-dir comes from the variable Some(\"SMQ_DATADIR\"), not SMQ_DATA_DIR",
            "--log-level has no TOML key log_level",
            "does not list --log-level",
            "lists --gone, which is no flag",
            "does not list SMQ_CLUSTER_SECRET",
        ] {
            assert!(problems.contains(expected), "{expected:?} in:\n{problems}");
        }
    }

    #[test]
    fn defaults_are_read_from_the_help_and_the_readme_alike() {
        assert_eq!(
            help_default("Size [default: 1073741824]."),
            Some("1073741824")
        );
        assert_eq!(help_default("No default."), None);
        let readme = "## S\n\n| setting | default | meaning |\n|---|---|---|\n\
             | `--a N` (`SMQ_A`) | 10,000 (1 – 1,000,000) | x |\n\
             | `--b` (`SMQ_B`) | `16 MiB` (1 KiB – 1 GiB) | x |\n\
             | `--c` (`SMQ_C`) | `master` | x |\n\
             | `--d` (`SMQ_D`) | 0 = no limit | x |\n\
             | `--e` (`SMQ_E`) | `127.0.0.1:1` | x |\n\
             | `--f` (`SMQ_F`) | none: plaintext | x |\n";
        for (flag, default) in [
            ("--a", "10000"),
            ("--b", "16777216"),
            ("--c", "master"),
            ("--d", "0"),
        ] {
            assert_eq!(readme_default(readme, "## S", flag).unwrap(), default);
        }
        assert!(readme_default(readme, "## S", "--g").is_err());
    }

    #[test]
    fn a_missing_table_is_an_error() {
        assert!(settings_table(README, "## Absent").is_err());
        assert!(settings_table(README, "## Other").is_err());
    }
}
