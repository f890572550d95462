//! Prometheus metrics, served on `/metrics` by `admin`. Counters only move here; what they
//! count is decided by the reconcilers.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels naming a controller.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// `apply`.
    pub controller: String,
}

/// Labels of a reconcile error.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `apply`.
    pub controller: String,
    /// The step it happened in ([`crate::Error::step_label`]).
    pub step: String,
    /// What went wrong ([`crate::Error::metric_label`]).
    pub error: String,
}

/// Labels of an operation transition.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// The phase the operation entered.
    pub phase: String,
}

/// Every metric baton exports.
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// Reconciles started, by controller.
    pub reconciles: Family<ControllerLabels, Counter>,
    /// Reconciles that failed, by controller and error.
    pub errors: Family<ErrorLabels, Counter>,
    /// How long reconciles take.
    pub reconcile_duration: Histogram,
    /// Operations entering a phase (written by this replica).
    pub operation_transitions: Family<PhaseLabels, Counter>,
    /// Operations by phase, over the Applies this replica last reconciled.
    pub operations: Family<PhaseLabels, Gauge>,
    /// The counts each Apply last contributed to `operations`, by uid.
    counted: std::sync::Mutex<std::collections::HashMap<String, crate::crd::OperationCounts>>,
    /// Claims this replica won.
    pub claims_won: Counter,
    /// Claims lost to a conflict (another writer moved first).
    pub claims_lost: Counter,
    /// Apply leases this replica acquired.
    pub lease_acquisitions: Counter,
    /// Apply leases this replica lost or released.
    pub lease_losses: Counter,
    /// Health watches open (see `engine::watches`).
    pub health_watches: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("baton");
        let metrics = Metrics {
            reconciles: Family::default(),
            errors: Family::default(),
            reconcile_duration: Histogram::new(exponential_buckets(0.005, 2.0, 12)),
            operation_transitions: Family::default(),
            operations: Family::default(),
            counted: std::sync::Mutex::default(),
            claims_won: Counter::default(),
            claims_lost: Counter::default(),
            lease_acquisitions: Counter::default(),
            lease_losses: Counter::default(),
            health_watches: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("reconciles", "Reconciles started", metrics.reconciles.clone());
        registry.register("reconcile_errors", "Reconciles that failed", metrics.errors.clone());
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconciles",
            metrics.reconcile_duration.clone(),
        );
        registry.register(
            "operation_transitions",
            "Operations entering a phase, written by this replica",
            metrics.operation_transitions.clone(),
        );
        registry.register("operations", "Operations by phase", metrics.operations.clone());
        registry.register("claims_won", "Operation claims won", metrics.claims_won.clone());
        registry.register(
            "claims_lost",
            "Operation claims lost to a conflict",
            metrics.claims_lost.clone(),
        );
        registry.register(
            "lease_acquisitions",
            "Apply leases acquired",
            metrics.lease_acquisitions.clone(),
        );
        registry.register(
            "lease_losses",
            "Apply leases lost or released",
            metrics.lease_losses.clone(),
        );
        registry.register(
            "health_watches",
            "Watches open on applied objects that running operations wait on",
            metrics.health_watches.clone(),
        );
        Metrics { registry, ..metrics }
    }
}

impl Metrics {
    /// Records one reconcile of `controller` that took `elapsed`.
    pub fn reconciled(&self, controller: &str, elapsed: Duration) {
        self.reconciles
            .get_or_create(&ControllerLabels { controller: controller.to_owned() })
            .inc();
        self.reconcile_duration.observe(elapsed.as_secs_f64());
    }

    /// Replaces what the Apply `uid` contributes to the `operations` gauge (`None`: it is gone).
    pub fn count_operations(&self, uid: &str, counts: Option<&crate::crd::OperationCounts>) {
        let mut counted = self.counted.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = counted.remove(uid).unwrap_or_default();
        let after = counts.cloned().unwrap_or_default();
        for (phase, old, new) in [
            ("Pending", before.pending, after.pending),
            ("Running", before.running, after.running),
            ("Succeeded", before.succeeded, after.succeeded),
            ("Failed", before.failed, after.failed),
            ("Stopped", before.stopped, after.stopped),
        ] {
            self.operations
                .get_or_create(&PhaseLabels { phase: phase.to_owned() })
                .inc_by(i64::from(new) - i64::from(old));
        }
        if counts.is_some() {
            counted.insert(uid.to_owned(), after);
        }
    }

    /// Records a failed reconcile.
    pub fn failed(&self, controller: &str, error: &crate::Error) {
        self.errors
            .get_or_create(&ErrorLabels {
                controller: controller.to_owned(),
                step: error.step_label().to_owned(),
                error: error.metric_label().to_owned(),
            })
            .inc();
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
