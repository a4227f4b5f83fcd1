//! Loading the configuration layers (defaults ← file ← `CRIER_*` environment ← flags) so that
//! every error names the real key path and the layer that set it.
//!
//! Each layer is merged as TOML values over the defaults, so the environment and flags know
//! the type of each key from its default. While merging, the loader remembers which file,
//! variable or flag set each key; the merged tree is then deserialised through
//! `serde_path_to_error`, which reports the exact path of a bad value (`limits.max_batch`),
//! and the remembered origin says where that value came from. Environment variables that
//! look like configuration but match no key are reported with the closest key, since a typo
//! there would otherwise be ignored without a word.

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::{err, Config, ConfigError};

/// Variables of the client commands (`--url`, `--token`), not configuration keys.
const CLIENT_VARIABLES: &[&str] = &["CRIER_URL", "CRIER_TOKEN"];

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Every leaf key path of `v` with its value.
pub(crate) fn leaves(prefix: &str, v: &toml::Value, out: &mut Vec<(String, toml::Value)>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&p, v, out);
            }
        }
        other => out.push((prefix.to_string(), other.clone())),
    }
}

/// Parses a text value (from the environment or a flag) as the type of `default`.
pub fn parse_as(key: &str, text: &str, default: &toml::Value) -> Result<toml::Value, ConfigError> {
    Ok(match default {
        toml::Value::String(_) => toml::Value::String(text.to_string()),
        toml::Value::Integer(_) => toml::Value::Integer(
            text.trim()
                .parse()
                .map_err(|_| err(key, format!("{text:?} is not a whole number")))?,
        ),
        toml::Value::Boolean(_) => toml::Value::Boolean(match text.trim() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => return Err(err(key, format!("{text:?} is not true or false"))),
        }),
        toml::Value::Array(_) => {
            let t = text.trim();
            if t.starts_with('[') {
                let doc: toml::Table = toml::from_str(&format!("v = {t}"))
                    .map_err(|e| err(key, format!("{text:?} is not a TOML array: {e}")))?;
                doc.get("v").cloned().unwrap_or(toml::Value::Array(vec![]))
            } else {
                toml::Value::Array(
                    t.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| toml::Value::String(s.to_string()))
                        .collect(),
                )
            }
        }
        other => {
            return Err(err(
                key,
                format!("cannot be set from text (a {})", other.type_str()),
            ))
        }
    })
}

fn set_path(root: &mut toml::Value, key: &str, value: toml::Value) {
    let mut cur = root;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let toml::Value::Table(t) = cur else { return };
        if i == parts.len() - 1 {
            t.insert(part.to_string(), value);
            return;
        }
        cur = t
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()));
    }
}

fn table_at<'a>(root: &'a toml::Value, path: &str) -> Option<&'a toml::Table> {
    let mut cur = root;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        cur = cur.as_table()?.get(part)?;
    }
    cur.as_table()
}

/// Whether the dotted `path` is a key or table of `root`.
fn exists(root: &toml::Value, path: &str) -> bool {
    let mut cur = root;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        match cur.as_table().and_then(|t| t.get(part)) {
            Some(v) => cur = v,
            None => return false,
        }
    }
    true
}

/// The first key under table `path` of `value` that the defaults do not have.
fn unknown_key_under(value: &toml::Value, defaults: &toml::Value, path: &str) -> Option<String> {
    let given = table_at(value, path)?;
    let known = table_at(defaults, path);
    given
        .keys()
        .find(|k| known.is_none_or(|t| !t.contains_key(*k)))
        .map(|k| {
            if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            }
        })
}

/// The known key closest to `word` (by edit distance), if any is reasonably close.
fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(word, c), c))
        .min_by_key(|(d, _)| *d)
        .filter(|(d, c)| *d <= (c.len() / 2).max(3))
        .map(|(_, c)| c)
}

fn leaf_keys() -> Vec<(String, toml::Value)> {
    let mut known = Vec::new();
    if let Ok(defaults) = toml::Value::try_from(Config::default()) {
        leaves("", &defaults, &mut known);
    }
    known
}

impl Config {
    /// Loads: defaults ← `file` ← environment (`CRIER_*`) ← `flags` (dotted key, text value).
    ///
    /// An error names the key path and where its value came from (the file, the variable or
    /// the flag); an error of the file itself names the file.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        flags: &[(&str, String)],
    ) -> Result<Config, ConfigError> {
        let file = match file {
            Some(path) => {
                let name = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
                    key: String::new(),
                    message: format!("cannot be read: {e}"),
                    origin: Some(name.clone()),
                })?;
                Some((name, text))
            }
            None => None,
        };
        Config::load_text(file, env, flags)
    }

    /// Parses the text of a configuration file over the defaults, without environment or
    /// flags: what an embedder passes instead of a file (§14.1).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Config::load_text(Some(("configuration".into(), text.into())), |_| None, &[])
    }

    /// [`Config::load`] over a file's `(name, text)`.
    fn load_text(
        file: Option<(String, String)>,
        env: impl Fn(&str) -> Option<String>,
        flags: &[(&str, String)],
    ) -> Result<Config, ConfigError> {
        let defaults = toml::Value::try_from(Config::default())
            .map_err(|e| err("", format!("the defaults cannot be encoded: {e}")))?;
        let mut value = defaults.clone();
        let mut origins: BTreeMap<String, String> = BTreeMap::new();
        if let Some((name, text)) = file {
            let in_file = |message: String| ConfigError {
                key: String::new(),
                message,
                origin: Some(name.clone()),
            };
            let parsed: toml::Table = toml::from_str(&text)
                .map_err(|e| in_file(format!("is not valid TOML: {}", e.to_string().trim())))?;
            let parsed = toml::Value::Table(parsed);
            let mut set = Vec::new();
            leaves("", &parsed, &mut set);
            for (key, _) in set {
                origins.insert(key, name.clone());
            }
            merge(&mut value, parsed);
        }
        let mut known = Vec::new();
        leaves("", &defaults, &mut known);
        for (key, default) in &known {
            let var = Config::env_name(key);
            if let Some(text) = env(&var) {
                let parsed = parse_as(key, &text, default).map_err(|e| e.set_by(&var))?;
                set_path(&mut value, key, parsed);
                origins.insert(key.clone(), var);
            }
        }
        for (key, text) in flags {
            let flag = format!("--{}", key.replace(['.', '_'], "-"));
            let default = known
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, d)| d)
                .ok_or_else(|| err(key, "unknown key").set_by(&flag))?;
            set_path(
                &mut value,
                key,
                parse_as(key, text, default).map_err(|e| e.set_by(&flag))?,
            );
            origins.insert(key.to_string(), flag);
        }
        let mut config: Config = serde_path_to_error::deserialize(value.clone()).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            // The message alone: the key is named separately, with its origin.
            let inner = e.into_inner().message().trim().to_string();
            // The path of an unknown key names the key itself; should it name the table
            // holding it instead, the key is found by comparing with the defaults.
            let key = if inner.starts_with("unknown field") && exists(&defaults, &path) {
                unknown_key_under(&value, &defaults, &path).unwrap_or(path)
            } else {
                path
            };
            let origin = origins.get(&key).cloned();
            let suggestion = if inner.starts_with("unknown field") {
                let keys = known.iter().map(|(k, _)| k.as_str());
                closest(&key, keys)
                    .map(|k| format!(" (did you mean `{k}`?)"))
                    .unwrap_or_default()
            } else {
                String::new()
            };
            let message = if inner.starts_with("unknown field") {
                format!("is no configuration key{suggestion}")
            } else {
                inner
            };
            ConfigError {
                key,
                message,
                origin,
            }
        })?;
        config.origins = origins;
        Ok(config)
    }

    /// Adds to a validation error where its key was set (file, variable or flag), if known.
    pub fn locate(&self, e: ConfigError) -> ConfigError {
        if e.origin.is_some() {
            return e;
        }
        let origin = self.origins.get(&e.key).cloned();
        ConfigError { origin, ..e }
    }

    /// Warnings for `CRIER_*` variables among `names` that set no configuration key, each
    /// naming the closest key. The client's `CRIER_URL` and `CRIER_TOKEN` are not reported.
    pub fn unknown_env(names: impl IntoIterator<Item = String>) -> Vec<String> {
        let known = leaf_keys();
        let vars: Vec<(String, &str)> = known
            .iter()
            .map(|(k, _)| (Config::env_name(k), k.as_str()))
            .collect();
        let mut out = Vec::new();
        for name in names {
            if !name.starts_with("CRIER_")
                || CLIENT_VARIABLES.contains(&name.as_str())
                || vars.iter().any(|(v, _)| *v == name)
            {
                continue;
            }
            let hint = closest(&name, vars.iter().map(|(v, _)| v.as_str()))
                .and_then(|v| vars.iter().find(|(n, _)| n == v))
                .map(|(v, k)| format!("; the closest is {v} (key `{k}`)"))
                .unwrap_or_default();
            out.push(format!(
                "environment variable {name} sets no configuration key and is ignored{hint}"
            ));
        }
        out
    }
}

/// Loads the defaults with one environment variable set, as the tests of loading need.
#[cfg(test)]
pub(crate) fn load_with_var(name: &str, value: &str) -> Result<Config, ConfigError> {
    Config::load(None, |k| (k == name).then(|| value.into()), &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn a_bad_value_names_its_key_path_and_file() {
        let (_d, path) = file("[limits]\nmax_batch = -5\n");
        let e = Config::load(Some(&path), |_| None, &[]).unwrap_err();
        assert_eq!(e.key, "limits.max_batch");
        assert_eq!(
            e.origin.as_deref(),
            Some(path.display().to_string().as_str())
        );
        let text = e.to_string();
        assert!(text.contains("`limits.max_batch`"), "{text}");
        assert!(text.contains("c.toml"), "{text}");
        assert!(text.contains("-5"), "{text}");
        assert!(!text.contains('\n'), "one line, the key said once: {text}");

        let (_d, path) = file("heartbeat = 15\n");
        let e = Config::load(Some(&path), |_| None, &[]).unwrap_err();
        assert_eq!(e.key, "heartbeat");
        assert!(e.message.contains("string"), "{}", e.message);
    }

    #[test]
    fn an_unknown_key_is_named_with_the_closest_one() {
        let (_d, path) = file("[limits]\nmax_bach = 5\n");
        let e = Config::load(Some(&path), |_| None, &[]).unwrap_err();
        assert_eq!(e.key, "limits.max_bach");
        assert!(e.message.contains("`limits.max_batch`"), "{}", e.message);
        let (_d, path) = file("[limitz]\nmax_batch = 5\n");
        let e = Config::load(Some(&path), |_| None, &[]).unwrap_err();
        assert_eq!(e.key, "limitz");
    }

    #[test]
    fn file_errors_name_the_file_not_a_key() {
        let (_d, path) = file("listen = \n");
        let e = Config::load(Some(&path), |_| None, &[]).unwrap_err();
        assert_eq!(e.key, "");
        let text = e.to_string();
        assert!(text.starts_with("configuration file "), "{text}");
        assert!(text.contains("line 1"), "{text}");
        let missing = path.with_file_name("absent.toml");
        let e = Config::load(Some(&missing), |_| None, &[]).unwrap_err();
        assert_eq!(e.key, "");
        assert!(e.to_string().contains("absent.toml"), "{e}");
        assert!(e.to_string().contains("cannot be read"), "{e}");
    }

    #[test]
    fn environment_errors_name_the_variable() {
        let e = load_with_var("CRIER_LIMITS_MAX_BATCH", "-5").unwrap_err();
        assert_eq!(e.key, "limits.max_batch");
        assert_eq!(e.origin.as_deref(), Some("CRIER_LIMITS_MAX_BATCH"));
        let c = load_with_var("CRIER_HEARTBEAT", "soon").unwrap();
        let e = c.locate(c.validate().unwrap_err());
        assert_eq!(e.key, "heartbeat");
        assert_eq!(e.origin.as_deref(), Some("CRIER_HEARTBEAT"));
    }

    #[test]
    fn unknown_variables_are_named_with_the_closest_key() {
        let names = [
            "CRIER_HEARTBEET",
            "CRIER_LIMITS_MAX_BACH",
            "CRIER_URL",
            "CRIER_TOKEN",
            "CRIER_HEARTBEAT",
            "PATH",
        ]
        .map(String::from);
        let w = Config::unknown_env(names);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("CRIER_HEARTBEET"), "{}", w[0]);
        assert!(w[0].contains("CRIER_HEARTBEAT"), "{}", w[0]);
        assert!(w[1].contains("CRIER_LIMITS_MAX_BACH"), "{}", w[1]);
        assert!(w[1].contains("`limits.max_batch`"), "{}", w[1]);
    }
}
