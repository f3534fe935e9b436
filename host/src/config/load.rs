//! From TOML text to a [`RunConfig`]: `extends` chains, `--set` overrides, and deserialisation
//! whose errors carry the dotted key path.
//!
//! The steps: parse the file into a TOML table; if it has `extends = "base.toml"`, load that
//! (relative to the file's directory) and merge the file over it; apply each `--set key=value`;
//! deserialise, recording the key path of the first error ([`serde_path_to_error`]).
//!
//! One rule serves both merging and overriding: a table's `kind` selects a variant (of a method,
//! a partition, a model, ...), and the other keys of the table belong to that variant. So when a
//! `kind` changes, the old variant's keys are dropped: `--set dataset.partition.kind=iid --set
//! dataset.partition.clients=10` turns a Dirichlet partition into an IID one without a leftover
//! `beta` being reported as unknown.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use toml::{Table, Value};

use super::{ConfigError, RunConfig};

/// Most files an `extends` chain may hold.
const MAX_EXTENDS_DEPTH: usize = 8;

/// The key a table's variant is selected by.
const VARIANT_KEY: &str = "kind";

/// One `--set key=value` override: a dotted key path and a TOML value.
///
/// The value is read as TOML (`32`, `0.5`, `true`, `"text"`, `[1, 2]`, `{ kind = "iid", clients
/// = 10 }`); anything that is not valid TOML is taken as a bare string, so `--set
/// device=cuda:1` and `--set name=baseline` need no quotes.
///
/// ```
/// use fedotp_host::config::Override;
/// let o: Override = "federation.rounds=20".parse().unwrap();
/// assert_eq!(o.key(), ["federation", "rounds"]);
/// assert_eq!(o.value(), &toml::Value::Integer(20));
/// let o: Override = "device=cuda:1".parse().unwrap();
/// assert_eq!(o.value(), &toml::Value::String("cuda:1".into()));
/// assert!("federation.rounds".parse::<Override>().is_err()); // no `=`
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Override {
    key: Vec<String>,
    value: Value,
    argument: String,
}

impl Override {
    /// The key path, one component per table level.
    pub fn key(&self) -> &[String] {
        &self.key
    }

    /// The value to set.
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The argument as given, for messages.
    pub fn argument(&self) -> &str {
        &self.argument
    }

    fn error(&self, reason: impl Into<String>) -> ConfigError {
        ConfigError::Override {
            argument: self.argument.clone(),
            reason: reason.into(),
        }
    }
}

impl FromStr for Override {
    type Err = ConfigError;

    fn from_str(argument: &str) -> Result<Self, Self::Err> {
        let error = |reason: &str| ConfigError::Override {
            argument: argument.into(),
            reason: reason.into(),
        };
        let (key, raw) = argument
            .split_once('=')
            .ok_or_else(|| error("expected key=value, e.g. federation.rounds=20"))?;
        let key: Vec<String> = key.trim().split('.').map(str::to_owned).collect();
        let valid = |part: &String| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !key.iter().all(valid) {
            return Err(error(
                "the key must be dot-separated names of letters, digits, `_` and `-`",
            ));
        }
        let raw = raw.trim();
        let value = toml::from_str::<Table>(&format!("value = {raw}"))
            .ok()
            .and_then(|mut table| table.remove("value"))
            .unwrap_or_else(|| Value::String(raw.into()));
        Ok(Override {
            key,
            value,
            argument: argument.into(),
        })
    }
}

/// Reads the configuration file `path` with its `extends` chain, as a table.
pub(super) fn read_file(path: &Path) -> Result<Table, ConfigError> {
    read_chain(path, &mut Vec::new())
}

fn read_chain(path: &Path, chain: &mut Vec<PathBuf>) -> Result<Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    let source_name = path.display().to_string();
    let mut table = parse(&text, &source_name)?;
    let Some(base) = table.remove("extends") else {
        return Ok(table);
    };
    let extends_error = |reason: String| ConfigError::Extends {
        source_name: source_name.clone(),
        reason,
    };
    let Value::String(base) = base else {
        return Err(extends_error(format!(
            "must be a file name, got a {}",
            base.type_str()
        )));
    };
    // Canonical paths identify a file however it is reached, for the cycle check.
    let canonical = path.canonicalize().map_err(|error| ConfigError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    chain.push(canonical);
    if chain.len() > MAX_EXTENDS_DEPTH {
        return Err(extends_error(format!(
            "more than {MAX_EXTENDS_DEPTH} files in the chain"
        )));
    }
    let base_path = path.parent().unwrap_or(Path::new(".")).join(&base);
    if !base_path.is_file() {
        return Err(extends_error(format!(
            "base file {} does not exist",
            base_path.display()
        )));
    }
    let base_canonical = base_path.canonicalize().map_err(|error| ConfigError::Io {
        path: base_path.clone(),
        error,
    })?;
    if chain.contains(&base_canonical) {
        return Err(extends_error(format!(
            "{} extends itself through the chain",
            base_path.display()
        )));
    }
    let mut merged = read_chain(&base_path, chain)?;
    merge(&mut merged, table);
    Ok(merged)
}

/// Parses TOML text into a table; `source_name` names it in errors.
pub(super) fn parse(text: &str, source_name: &str) -> Result<Table, ConfigError> {
    toml::from_str(text).map_err(|error| ConfigError::Syntax {
        source_name: source_name.into(),
        message: error.to_string().trim_end().into(),
    })
}

/// Merges `over` into `base`: tables merge key by key, except that a table whose `kind`
/// differs from the base's replaces it; every other value replaces the base's.
fn merge(base: &mut Table, over: Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(base_table)), Value::Table(over_table))
                if base_table.get(VARIANT_KEY) == over_table.get(VARIANT_KEY)
                    || !over_table.contains_key(VARIANT_KEY) =>
            {
                merge(base_table, over_table)
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Applies one override to `table`, creating missing tables on the way.
pub(super) fn apply(table: &mut Table, o: &Override) -> Result<(), ConfigError> {
    let (leaf, parents) = o.key.split_last().expect("a key has at least one part");
    let mut current = table;
    for (depth, part) in parents.iter().enumerate() {
        let entry = current
            .entry(part.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        current = match entry {
            Value::Table(inner) => inner,
            other => {
                return Err(o.error(format!(
                    "`{}` holds a {}, not a table",
                    o.key[..=depth].join("."),
                    other.type_str()
                )))
            }
        };
    }
    if leaf == VARIANT_KEY && current.get(VARIANT_KEY) != Some(&o.value) {
        current.clear();
    }
    current.insert(leaf.clone(), o.value.clone());
    Ok(())
}

/// Deserialises the merged table; a failing key is reported with its dotted path and, where an
/// override set it, the override.
pub(super) fn deserialize(
    table: Table,
    source_name: &str,
    overrides: &[Override],
) -> Result<RunConfig, ConfigError> {
    serde_path_to_error::deserialize(table.clone()).map_err(|error| {
        let mut key = error.path().to_string();
        // Inside a table selected by `kind`, serde buffers the table and the path stops at it;
        // an unknown field can still be found by name below that point.
        let message = error.inner().to_string();
        if let Some(unknown) = message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next())
        {
            if let Some(below) = find_key(&table, &key, unknown) {
                key = below;
            }
        }
        let parts: Vec<&str> = key.split('.').collect();
        // The override that set this key or a table above or below it.
        let culprit = overrides.iter().rev().find(|o| {
            let n = o.key.len().min(parts.len());
            o.key
                .iter()
                .map(String::as_str)
                .take(n)
                .eq(parts[..n].iter().copied())
        });
        let source_name = match culprit {
            Some(o) => format!("{source_name} with --set {}", o.argument),
            None => source_name.to_string(),
        };
        // toml appends the key ("\nin `federation`"); the error names it already.
        let message = error.into_inner().to_string();
        let message = message
            .split("\nin `")
            .next()
            .unwrap_or_default()
            .trim_end();
        ConfigError::Field {
            source_name,
            key,
            message: message.into(),
        }
    })
}

/// The dotted path of the first key named `name` in the table at `path` (or below it).
fn find_key(table: &Table, path: &str, name: &str) -> Option<String> {
    let mut current = table;
    for part in path.split('.') {
        current = current.get(part)?.as_table()?;
    }
    fn search(table: &Table, name: &str, prefix: &str) -> Option<String> {
        if table.contains_key(name) {
            return Some(format!("{prefix}.{name}"));
        }
        table
            .iter()
            .find_map(|(key, value)| search(value.as_table()?, name, &format!("{prefix}.{key}")))
    }
    search(current, name, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn merge_replaces_a_table_whose_kind_changes() {
        let mut base =
            table("[p]\nkind = \"dirichlet\"\nbeta = 0.5\nclients = 10\n[q]\na = 1\nb = 2");
        merge(
            &mut base,
            table("[p]\nkind = \"iid\"\nclients = 4\n[q]\nb = 3"),
        );
        assert_eq!(
            base,
            table("[p]\nkind = \"iid\"\nclients = 4\n[q]\na = 1\nb = 3")
        );
    }

    #[test]
    fn merge_keeps_the_base_variant_when_kind_is_unchanged_or_absent() {
        let mut base = table("[p]\nkind = \"dirichlet\"\nbeta = 0.5\nclients = 10");
        merge(&mut base, table("[p]\nclients = 4"));
        assert_eq!(
            base,
            table("[p]\nkind = \"dirichlet\"\nbeta = 0.5\nclients = 4")
        );
    }

    #[test]
    fn setting_a_new_kind_drops_the_old_variant_keys() {
        let mut base = table("[p]\nkind = \"dirichlet\"\nbeta = 0.5\nclients = 10");
        apply(&mut base, &"p.kind=iid".parse().unwrap()).unwrap();
        apply(&mut base, &"p.clients=3".parse().unwrap()).unwrap();
        assert_eq!(base, table("[p]\nkind = \"iid\"\nclients = 3"));
        // The same kind again keeps the fields.
        apply(&mut base, &"p.kind=\"iid\"".parse().unwrap()).unwrap();
        assert_eq!(base, table("[p]\nkind = \"iid\"\nclients = 3"));
    }

    #[test]
    fn overrides_create_tables_and_refuse_to_descend_into_values() {
        let mut base = table("name = \"x\"");
        apply(&mut base, &"a.b.c=[1, 2]".parse().unwrap()).unwrap();
        assert_eq!(base, table("name = \"x\"\n[a.b]\nc = [1, 2]"));
        let error = apply(&mut base, &"name.first=1".parse().unwrap()).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("`name` holds a string, not a table"),
            "{error}"
        );
    }

    #[test]
    fn override_values_are_toml_or_bare_strings() {
        let value = |s: &str| s.parse::<Override>().unwrap().value;
        assert_eq!(value("k=0.5"), Value::Float(0.5));
        assert_eq!(value("k=true"), Value::Boolean(true));
        assert_eq!(value("k=\"quoted\""), Value::String("quoted".into()));
        assert_eq!(value("k=runs/a b"), Value::String("runs/a b".into()));
        assert_eq!(value("k=a=b"), Value::String("a=b".into()));
        assert!(matches!(value("k={ kind = \"iid\" }"), Value::Table(_)));
        for bad in ["=1", "a..b=1", "a.b c=1", "no_equals_sign"] {
            assert!(bad.parse::<Override>().is_err(), "{bad}");
        }
    }
}
