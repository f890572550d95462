//! Builders for lifecycle tests: statuses in each phase, children, specs and facts.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::{ApplyFacts, Child, Idempotency};
use crate::crd::{
    ApplySpec, Claim, DedupOn, FailurePolicy, OperationEntry, OperationPhase, OperationStatus,
    Target,
};

/// A fixed instant `seconds` after an arbitrary epoch, so tests never read the clock.
pub fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).expect("a valid test instant")
}

fn status(phase: OperationPhase, attempt: u32) -> OperationStatus {
    OperationStatus { phase, attempt, ..OperationStatus::default() }
}

/// `Pending`, after `attempt` runs.
pub fn pending(attempt: u32) -> OperationStatus {
    status(OperationPhase::Pending, attempt)
}

/// `Running`, claimed by `holder`.
pub fn running(holder: &str, attempt: u32) -> OperationStatus {
    OperationStatus {
        claim: Some(Claim { holder: holder.to_owned(), at: Time(at(0)) }),
        started_at: Some(Time(at(0))),
        first_started_at: Some(Time(at(0))),
        ..status(OperationPhase::Running, attempt)
    }
}

/// `Succeeded` on `attempt`.
pub fn succeeded(attempt: u32) -> OperationStatus {
    OperationStatus {
        completed_at: Some(Time(at(1))),
        started_at: Some(Time(at(0))),
        first_started_at: Some(Time(at(0))),
        ..status(OperationPhase::Succeeded, attempt)
    }
}

/// `Failed` (a Job's backoff limit) on `attempt`.
pub fn failed(attempt: u32) -> OperationStatus {
    failed_with(attempt, "Unhealthy", "Job `migrate` in `shop`: BackoffLimitExceeded")
}

/// `Failed` with `reason` and `message`.
pub fn failed_with(attempt: u32, reason: &str, message: &str) -> OperationStatus {
    OperationStatus {
        completed_at: Some(Time(at(1))),
        started_at: Some(Time(at(0))),
        first_started_at: Some(Time(at(0))),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        ..status(OperationPhase::Failed, attempt)
    }
}

/// `Stopped` after `attempt` runs.
pub fn stopped(attempt: u32) -> OperationStatus {
    OperationStatus { stopped_at: Some(Time(at(1))), ..status(OperationPhase::Stopped, attempt) }
}

/// Operation names used by fixtures: `a`, `b`, `c`, ...
pub fn op_name(index: usize) -> String {
    char::from(b'a' + u8::try_from(index % 26).expect("small index")).to_string()
}

/// A spec with one operation per status, named `a`, `b`, ...
pub fn spec(count: usize, policy: FailurePolicy, max_concurrent: u32) -> ApplySpec {
    ApplySpec {
        operations: (0..count)
            .map(|index| OperationEntry {
                name: op_name(index),
                target: Target { namespace: format!("ns-{index}"), cluster: None },
                manifests: Some(vec![serde_json::json!({
                    "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}
                })]),
                timeout: "10m".to_owned(),
                values: Default::default(),
                approval: None,
                soak: None,
            })
            .collect(),
        template: None,
        on_failure: policy,
        max_concurrent,
        stop: false,
        dismiss_error: None,
        service_account_name: None,
        idempotency_key: None,
        dedup_on: DedupOn::Success,
        max_failed: None,
        approvals: Vec::new(),
        health_checks: Vec::new(),
    }
}

/// Children for `statuses`, in index order.
pub fn children(statuses: Vec<OperationStatus>) -> Vec<Child> {
    statuses
        .into_iter()
        .enumerate()
        .map(|(index, status)| Child {
            name: op_name(index),
            index: u32::try_from(index).expect("small index"),
            status,
            uid: format!("uid-{index}"),
            recreated: false,
        })
        .collect()
}

/// Facts for a live, not deleting Apply without an idempotency key.
pub fn facts(spec: &ApplySpec) -> ApplyFacts<'_> {
    ApplyFacts {
        spec,
        generation: Some(1),
        created_at: Some(at(-100)),
        deleting: false,
        finalizer: false,
        operations_created: false,
        idempotency: Idempotency::NotRequired,
        approvers: Default::default(),
        foreign: &[],
    }
}
