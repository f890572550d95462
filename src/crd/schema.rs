//! Hand-written schema fragments for what `schemars` cannot express: embedded Kubernetes
//! objects and Go-style durations.

use schemars::{Schema, SchemaGenerator, json_schema};

/// An arbitrary Kubernetes object. The API server checks `apiVersion`, `kind` and `metadata`
/// (`x-kubernetes-embedded-resource`) and keeps every other field as written.
pub fn manifest(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-embedded-resource": true,
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// A list of manifests, at least one.
pub fn manifests(generator: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "minItems": 1,
        "items": manifest(generator),
    })
}

/// An integer of at least 0, or a percentage such as `10%`. The API server does not apply
/// `minimum` or `pattern` inside an int-or-string's `anyOf`, so a CEL rule checks both.
pub fn count_or_percent(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "x-kubernetes-int-or-string": true,
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "x-kubernetes-validations": [{
            "rule": "type(self) == int ? self >= 0 : self.matches('^[0-9]+%$')",
            "message": "maxFailed must be a count of at least 0, or a percentage such as 10%",
        }],
    })
}
