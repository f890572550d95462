//! Which Operations are an Apply's children (SPEC.md section 1), and what each must be.
//!
//! Anyone who may create Operations in a namespace can write one that names an Apply as its
//! controller. Only the Operation baton would have created is a child: named
//! `<apply>-<operation>`, controlled by the Apply's uid, for an index of `spec.operations`
//! whose entry it copies (expanded with its values). Everything else that claims to belong to
//! the Apply is foreign: never claimed, never applied, and reported on the Apply (fail closed).
//!
//! Checking costs little: every field but the manifests is compared whenever the Operations are
//! read; the manifests (which the controller's cache leaves out) are compared with their
//! expansion before a run applies them, the one moment they are read anyway.

use kube::ResourceExt;

use super::values::{expand, values_of};
use crate::crd::{ApplySpec, Operation, OperationPhase, OperationSpec};

/// Whether baton created every Operation of the Apply once, so that one missing now was
/// deleted: its status has a phase (written only after all were created), or one of them left
/// `Pending` (a claim, a stop or a `Lost` record are planned only once nothing is missing).
/// Neither the finalizer nor the mere presence of some Operations says so: a first pass cut
/// short between its side-by-side creations leaves both, and what it did not create yet never
/// ran. In doubt about a step that ran, a missing Operation counts as deleted: a needless `Lost`
/// record asks a person, a needless recreation could run a step twice.
/// `phases` are those of the Operations present.
pub fn all_created(driven_before: bool, mut phases: impl Iterator<Item = OperationPhase>) -> bool {
    driven_before || phases.any(|phase| phase != OperationPhase::Pending)
}

/// How many foreign Operations a message names before it counts the rest.
const NAMED_AT_MOST: usize = 5;

/// An Operation that claims to belong to an Apply and is not its child.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Foreign {
    /// The Operation's name.
    pub name: String,
    /// Why it is not a child.
    pub reason: String,
}

/// The name of the Operation of the step `operation` of the Apply `apply`.
pub fn operation_name(apply: &str, operation: &str) -> String {
    format!("{apply}-{operation}")
}

/// The spec of the Operation for `spec.operations[index]`: a copy of the entry (with the
/// template's manifests when it lists none), its values expanded. An expansion that fails keeps
/// the reason beside the manifests as written (no larger than the Apply), for a person to read.
pub fn expected_spec(spec: &ApplySpec, index: u32) -> Option<OperationSpec> {
    let entry = spec.operations.get(usize::try_from(index).ok()?)?;
    let written = entry
        .manifests
        .clone()
        .or_else(|| spec.template.as_ref().map(|template| template.manifests.clone()))
        .unwrap_or_default();
    // Values are expanded here, once: what the operation applies is fixed and visible on it.
    let (manifests, values_error) = match expand(&written, &values_of(entry)) {
        Ok(expanded) => (expanded, None),
        Err(error) => (written, Some(format!("operation `{}`: {error}", entry.name))),
    };
    Some(OperationSpec {
        index,
        name: entry.name.clone(),
        target: entry.target.clone(),
        manifests,
        timeout: entry.timeout.clone(),
        approval: entry.approval,
        soak: entry.soak.clone(),
        values_error,
    })
}

/// Splits the Operations that name the Apply (`name`, `uid`) as an owner into its children and
/// the foreign ones, by everything but their manifests (see the module's header).
pub fn sort_owned(
    name: &str,
    uid: &str,
    spec: &ApplySpec,
    owned: Vec<Operation>,
) -> (Vec<Operation>, Vec<Foreign>) {
    let mut children = Vec::with_capacity(owned.len());
    let mut foreign = Vec::new();
    for op in owned {
        match why_foreign(name, uid, spec, &op) {
            None => children.push(op),
            Some(reason) => foreign.push(Foreign { name: op.name_any(), reason }),
        }
    }
    foreign.sort_by(|a, b| a.name.cmp(&b.name));
    (children, foreign)
}

/// Why `op` is not a child of the Apply, by everything but its manifests, or `None` when it is.
pub fn why_foreign(name: &str, uid: &str, spec: &ApplySpec, op: &Operation) -> Option<String> {
    let controlled = op
        .owner_references()
        .iter()
        .any(|owner| owner.controller == Some(true) && owner.uid == uid && owner.kind == "Apply");
    if !controlled {
        return Some("the Apply is not its controller".into());
    }
    let index = op.spec.index;
    let Some(entry) = usize::try_from(index).ok().and_then(|i| spec.operations.get(i)) else {
        return Some(format!("the Apply has no operation #{index}"));
    };
    let expected_name = operation_name(name, &entry.name);
    if op.name_any() != expected_name {
        return Some(format!("operation #{index} is the Operation `{expected_name}`"));
    }
    let same = op.spec.name == entry.name
        && op.spec.target == entry.target
        && op.spec.timeout == entry.timeout
        && op.spec.approval == entry.approval
        && op.spec.soak == entry.soak;
    (!same).then(|| format!("its spec is not a copy of operation `{}`", entry.name))
}

/// Why the manifests of `op_spec` are not the expansion of its entry, or `None` when they are.
pub fn manifests_differ(spec: &ApplySpec, op_spec: &OperationSpec) -> Option<String> {
    let expected = expected_spec(spec, op_spec.index)?;
    let same =
        expected.manifests == op_spec.manifests && expected.values_error == op_spec.values_error;
    (!same).then(|| {
        format!(
            "its manifests are not those of operation `{}` expanded with its values",
            op_spec.name
        )
    })
}

/// One line naming the foreign Operations and why, for the Apply's condition and Event.
pub fn describe_foreign(foreign: &[Foreign]) -> String {
    let mut named: Vec<String> = foreign
        .iter()
        .take(NAMED_AT_MOST)
        .map(|foreign| format!("`{}` ({})", foreign.name, foreign.reason))
        .collect();
    if foreign.len() > NAMED_AT_MOST {
        named.push(format!("and {} more", foreign.len() - NAMED_AT_MOST));
    }
    format!(
        "Operations that claim to belong to this Apply but are not baton's: {}; they are never \
         run; delete them",
        named.join(", ")
    )
}
