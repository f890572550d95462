//! `crds/` is written by `baton crds --out-dir crds` from the Rust types and never by hand;
//! this test fails when the committed files differ from what the types generate.

#[test]
fn committed_crds_match_the_rust_types() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    for (file, generated) in baton::crd::crds_yaml().expect("the CRDs render") {
        let committed = std::fs::read_to_string(root.join(file)).unwrap_or_default();
        assert!(
            committed == generated,
            "crds/{file} is stale: run `cargo run -- crds --out-dir crds` and commit the result"
        );
    }
}

#[test]
fn crds_declare_the_admission_rules() {
    let (_, apply) = baton::crd::crds_yaml().expect("the CRDs render").remove(0);
    for needle in [
        "x-kubernetes-list-type: map",
        "create a new Apply to roll out a different change",
        "an operation has no manifests",
        "maxItems: 500",
        "minimum: 1.0",
        "is not a DNS label",
        "- Halt",
        "- Continue",
    ] {
        assert!(apply.contains(needle), "apply.yaml lacks `{needle}`");
    }
}
