//! Values (SPEC.md section 10): the `${name}` variables of an operation's manifests, filled in
//! from its `values` when its Operation is created, so what an operation applies is fixed then
//! and visible on the Operation. `${target.namespace}`, `${target.cluster}` and
//! `${operation.name}` are always defined; `$${name}` stands for a literal `${name}`.
//! Substitution is strict: an undefined or unterminated variable is an error naming it, and
//! the operation fails before anything is applied.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::crd::OperationEntry;

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
    manifests
        .iter()
        .enumerate()
        .map(|(manifest, value)| expand_value(value, values, manifest))
        .collect()
}

fn expand_value(
    value: &Value,
    values: &BTreeMap<String, String>,
    manifest: usize,
) -> Result<Value, ValuesError> {
    Ok(match value {
        Value::String(text) => Value::String(expand_text(text, values, manifest)?),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| expand_value(item, values, manifest))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(key, item)| Ok((key.clone(), expand_value(item, values, manifest)?)))
                .collect::<Result<_, ValuesError>>()?,
        ),
        other => other.clone(),
    })
}

fn expand_text(
    text: &str,
    values: &BTreeMap<String, String>,
    manifest: usize,
) -> Result<String, ValuesError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(escaped) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = escaped;
        } else if let Some(open) = tail.strip_prefix("${") {
            let Some(close) = open.find('}') else {
                return Err(ValuesError::Unterminated { manifest, text: text.to_owned() });
            };
            let name = &open[..close];
            let value = values
                .get(name)
                .ok_or_else(|| ValuesError::Undefined { manifest, name: name.to_owned() })?;
            out.push_str(value);
            rest = &open[close + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
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
