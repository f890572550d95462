//! End-to-end tests on a real kube-apiserver and etcd (see `baton_e2e`). One binary, so one
//! control plane serves every test of the run.

mod e2e {
    pub mod admission;
    pub mod argocd;
    pub mod bad_input;
    pub mod chart;
    pub mod control_plane;
    pub mod dashboard;
    pub mod edges;
    pub mod fleet;
    pub mod gates;
    pub mod health;
    pub mod keys_and_deletion;
    pub mod kstatus;
    pub mod manifests;
    pub mod plugin;
    pub mod registrations;
    pub mod reliability;
    pub mod scenarios;
    pub mod security;
    pub mod support;
    pub mod tenants;
    pub mod workloads;
}
