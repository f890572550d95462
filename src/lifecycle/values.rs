//! Values (SPEC.md section 10): the `${name}` variables of an operation's manifests, filled in
//! from its `values` when its Operation is created, so what an operation applies is fixed then
//! and visible on the Operation. `${target.namespace}`, `${target.cluster}` and
//! `${operation.name}` are always defined; `$${name}` stands for a literal `${name}`.
//! Substitution is strict: an undefined or unterminated variable is an error naming it, and
//! the operation fails before anything is applied. Keys are expanded like strings (a label key
//! `team.example/${team}` is common); two keys of one object that expand to the same text are an
//! error, since one would silently replace the other.
//!
//! Values are a tenant's input, and `${v}` repeated is a multiplier: the expansion counts the
//! bytes it has produced and stops at [`MAX_EXPANDED_BYTES`] (section 8), so a 240 KB Apply can
//! never make the operator build a 600 MB Operation. The same input gives the same answer, so
//! the failure is final, never retried.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::crd::OperationEntry;

/// The most an operation's expanded manifests may weigh, as JSON: the API server stores objects
/// of at most 1.5 MiB (etcd's request limit), and an Operation carries its status and metadata
/// beside its manifests, so its manifests get 1 MiB of it.
pub const MAX_EXPANDED_BYTES: usize = 1024 * 1024;

/// Why a manifest could not be expanded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValuesError {
    /// `${name}` names no value.
    #[error(
        "manifest #{manifest}: variable `${{{name}}}` is not defined: add `{name}` to the \
         operation's values, or write `$${{{name}}}` for a literal"
    )]
    Undefined {
        /// Position of the manifest.
        manifest: usize,
        /// The variable.
        name: String,
    },
    /// `${` without its `}`.
    #[error("manifest #{manifest}: `${{` without a closing `}}` in `{text}`")]
    Unterminated {
        /// Position of the manifest.
        manifest: usize,
        /// The string it is in.
        text: String,
    },
    /// Two keys of one object expand to the same key.
    #[error("manifest #{manifest}: two keys expand to `{key}`: one would replace the other")]
    DuplicateKey {
        /// Position of the manifest.
        manifest: usize,
        /// The key both expand to.
        key: String,
    },
    /// The expansion outgrew [`MAX_EXPANDED_BYTES`].
    #[error(
        "manifest #{manifest}: the operation's manifests, with its values filled in, exceed \
         {limit} bytes (an Operation must fit in the API server's 1.5 MiB beside its status): \
         use shorter values or fewer variables, or split the manifests over several operations"
    )]
    TooLarge {
        /// Position of the manifest being expanded when the limit was passed.
        manifest: usize,
        /// The limit, in bytes.
        limit: usize,
    },
}

/// The values of `entry`'s variables: its own, and the ones always defined.
pub fn values_of(entry: &OperationEntry) -> BTreeMap<String, String> {
    let mut values = entry.values.clone();
    values.insert("target.namespace".into(), entry.target.namespace.clone());
    values.insert("target.cluster".into(), entry.target.cluster.clone().unwrap_or_default());
    values.insert("operation.name".into(), entry.name.clone());
    values
}

/// The manifests with every variable filled in from `values`.
pub fn expand(
    manifests: &[Value],
    values: &BTreeMap<String, String>,
) -> Result<Vec<Value>, ValuesError> {
    let mut expansion = Expansion { values, manifest: 0, left: MAX_EXPANDED_BYTES };
    manifests
        .iter()
        .enumerate()
        .map(|(manifest, value)| {
            expansion.manifest = manifest;
            expansion.value(value)
        })
        .collect()
}

/// One expansion: the values, where it is, and how many bytes it may still produce.
struct Expansion<'a> {
    values: &'a BTreeMap<String, String>,
    manifest: usize,
    left: usize,
}

impl Expansion<'_> {
    /// Counts `bytes` more of output (about their JSON size), failing past the limit.
    fn spend(&mut self, bytes: usize) -> Result<(), ValuesError> {
        self.left = self
            .left
            .checked_sub(bytes)
            .ok_or(ValuesError::TooLarge { manifest: self.manifest, limit: MAX_EXPANDED_BYTES })?;
        Ok(())
    }

    fn value(&mut self, value: &Value) -> Result<Value, ValuesError> {
        Ok(match value {
            Value::String(text) => Value::String(self.text(text)?),
            Value::Array(items) => {
                self.spend(2)?;
                Value::Array(items.iter().map(|item| self.value(item)).collect::<Result<_, _>>()?)
            }
            Value::Object(fields) => {
                self.spend(2)?;
                let mut expanded = serde_json::Map::with_capacity(fields.len());
                for (key, item) in fields {
                    let key = self.text(key)?;
                    let item = self.value(item)?;
                    if expanded.contains_key(&key) {
                        return Err(ValuesError::DuplicateKey { manifest: self.manifest, key });
                    }
                    expanded.insert(key, item);
                }
                Value::Object(expanded)
            }
            other => {
                self.spend(other.to_string().len() + 1)?;
                other.clone()
            }
        })
    }

    /// `text` with its variables filled in; every piece is counted before it is copied, so the
    /// output never grows past the limit.
    fn text(&mut self, text: &str) -> Result<String, ValuesError> {
        // The quotes and separator around it.
        self.spend(3)?;
        let mut out = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            self.push(&mut out, &rest[..at])?;
            let tail = &rest[at..];
            if let Some(escaped) = tail.strip_prefix("$${") {
                self.push(&mut out, "${")?;
                rest = escaped;
            } else if let Some(open) = tail.strip_prefix("${") {
                let Some(close) = open.find('}') else {
                    return Err(ValuesError::Unterminated {
                        manifest: self.manifest,
                        text: text.to_owned(),
                    });
                };
                let name = &open[..close];
                let values = self.values;
                let value = values.get(name).ok_or_else(|| ValuesError::Undefined {
                    manifest: self.manifest,
                    name: name.to_owned(),
                })?;
                self.push(&mut out, value)?;
                rest = &open[close + 1..];
            } else {
                self.push(&mut out, "$")?;
                rest = &tail[1..];
            }
        }
        self.push(&mut out, rest)?;
        Ok(out)
    }

    fn push(&mut self, out: &mut String, piece: &str) -> Result<(), ValuesError> {
        self.spend(piece.len())?;
        out.push_str(piece);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn variables_are_filled_in_everywhere_a_string_is() {
        let manifest = json!({
            "metadata": {"name": "web-${region}", "labels": {"ring": "${ring}"}},
            "spec": {"args": ["--zone=${region}-a", 3]},
        });
        let expanded = expand(&[manifest], &values(&[("region", "eu"), ("ring", "1")]));
        assert_eq!(
            expanded,
            Ok(vec![json!({
                "metadata": {"name": "web-eu", "labels": {"ring": "1"}},
                "spec": {"args": ["--zone=eu-a", 3]},
            })])
        );
    }

    #[test]
    fn an_undefined_variable_is_an_error_naming_it() {
        let error = expand(&[json!({"data": {"a": "${nope}"}})], &values(&[])).err();
        assert_eq!(error, Some(ValuesError::Undefined { manifest: 0, name: "nope".into() }));
        let message = error.map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("`${nope}` is not defined") && message.contains("`$${nope}`"));
    }

    #[test]
    fn an_escaped_variable_stays_literal_and_a_lone_dollar_is_kept() {
        let expanded = expand(&[json!("$${x} costs $5 in ${r}")], &values(&[("r", "eu")]));
        assert_eq!(expanded, Ok(vec![json!("${x} costs $5 in eu")]));
    }

    #[test]
    fn an_unterminated_variable_is_an_error() {
        let error = expand(&[json!("${open")], &values(&[])).err();
        assert!(matches!(error, Some(ValuesError::Unterminated { .. })));
    }

    #[test]
    fn keys_are_expanded_like_strings() {
        let manifest = json!({"metadata": {"labels": {"team.example/${team}": "${team}"}}});
        let expanded = expand(&[manifest], &values(&[("team", "shop")]));
        assert_eq!(
            expanded,
            Ok(vec![json!({"metadata": {"labels": {"team.example/shop": "shop"}}})])
        );
        let undefined = expand(&[json!({"${nope}": 1})], &values(&[])).err();
        assert_eq!(undefined, Some(ValuesError::Undefined { manifest: 0, name: "nope".into() }));
    }

    #[test]
    fn two_keys_expanding_to_one_are_an_error() {
        let error = expand(&[json!({"${a}": 1, "${b}": 2})], &values(&[("a", "x"), ("b", "x")]));
        assert_eq!(error.err(), Some(ValuesError::DuplicateKey { manifest: 0, key: "x".into() }));
    }

    #[test]
    fn an_expansion_past_the_limit_stops_there_with_a_final_error() {
        // 10 KB behind a variable used 60,000 times would be 600 MB: the expansion stops at
        // the limit instead, having produced at most the limit.
        let value = "x".repeat(10_000);
        let text = "${v}".repeat(60_000);
        let started = std::time::Instant::now();
        let error = expand(&[json!({"data": {"big": text}})], &values(&[("v", &value)])).err();
        assert_eq!(error, Some(ValuesError::TooLarge { manifest: 0, limit: MAX_EXPANDED_BYTES }));
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "{:?}", started.elapsed());
    }

    #[test]
    fn an_expansion_just_under_the_limit_is_kept_whole() {
        let value = "x".repeat(1000);
        let text = "${v}".repeat(1000);
        let expanded = expand(&[json!({"data": {"big": text}})], &values(&[("v", &value)]));
        let size = expanded.map(|manifests| serde_json::to_vec(&manifests).map(|v| v.len()));
        assert!(matches!(size, Ok(Ok(size)) if size > 1_000_000 && size < MAX_EXPANDED_BYTES));
    }

    #[test]
    fn many_small_strings_count_too() {
        let many: Vec<Value> = (0..200_000).map(|_| json!("${v}")).collect();
        let error = expand(&[json!({"items": many})], &values(&[("v", "0123456789")])).err();
        assert!(matches!(error, Some(ValuesError::TooLarge { .. })));
    }

    #[test]
    fn the_target_and_the_operation_name_are_always_defined() {
        let entry: OperationEntry = serde_json::from_value(json!({
            "name": "eu", "target": {"namespace": "shop", "cluster": "prod-eu"},
        }))
        .expect("an entry");
        let all = values_of(&entry);
        let expanded =
            expand(&[json!("${operation.name}:${target.namespace}@${target.cluster}")], &all);
        assert_eq!(expanded, Ok(vec![json!("eu:shop@prod-eu")]));
    }
}
