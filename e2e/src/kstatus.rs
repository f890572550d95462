//! What kstatus, the library behind Flux's health checks and waits, says about an object: the
//! real `sigs.k8s.io/cli-utils` `status.Compute`, through the Go command in `e2e/kstatus/`
//! (built into the cache by `make tools`, i.e. `e2e/kstatus/build.sh`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::Value;

use crate::kubectl;

/// kstatus's verdict on an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum KstatusStatus {
    Current,
    InProgress,
    Failed,
    Terminating,
    NotFound,
    Unknown,
}

/// One line of the kstatus command: the verdict, its message and the standard conditions kstatus
/// derived (its `Reconciling` or `Stalled`).
#[derive(Clone, Debug, Deserialize)]
pub struct Kstatus {
    pub kind: String,
    pub name: String,
    pub status: KstatusStatus,
    pub message: String,
    #[serde(default)]
    pub conditions: Vec<Value>,
    /// Why kstatus could not compute a status (then `status` is `Unknown`).
    #[serde(default)]
    pub error: Option<String>,
}

/// The cached kstatus binary. Panics, saying how to build it, when it is not there: the tests
/// never build it themselves, so its first build does not compete with running tests for the CPU.
pub fn binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("kstatus/build.sh");
            let output = Command::new("bash")
                .arg(&script)
                .arg("--print-dir")
                .output()
                .expect("running e2e/kstatus/build.sh --print-dir");
            assert!(
                output.status.success(),
                "{} --print-dir failed: {}",
                script.display(),
                String::from_utf8_lossy(&output.stderr)
            );
            let binary = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
                .join("kstatus");
            assert!(
                binary.is_file(),
                "the kstatus binary {} is missing: run `make tools` (or `bash e2e/kstatus/build.sh`) \
                 to build it",
                binary.display()
            );
            binary
        })
        .clone()
}

/// kstatus's verdict on each object of `input` (JSON or YAML; one object, a stream or a List).
pub fn compute_text(input: &str) -> Vec<Kstatus> {
    let mut child = Command::new(binary())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the kstatus binary");
    child
        .stdin
        .take()
        .expect("the kstatus binary's stdin")
        .write_all(input.as_bytes())
        .expect("writing to the kstatus binary");
    let output = child.wait_with_output().expect("waiting for the kstatus binary");
    assert!(
        output.status.success(),
        "kstatus failed ({}): {}\ninput: {input}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("an unexpected kstatus line `{line}`: {error}"))
        })
        .collect()
}

/// kstatus's verdict on one object.
pub fn compute(object: &Value) -> Kstatus {
    let mut results = compute_text(&object.to_string());
    assert_eq!(results.len(), 1, "one object in, one kstatus line out: {results:?}");
    results.remove(0)
}

/// Reads `kind/name` in `namespace` with `kubectl get -o json`, as Flux reads it (the object as
/// the API server serves it, defaults included), and returns kstatus's verdict with the object.
pub fn read(kind: &str, namespace: &str, name: &str) -> (Kstatus, Value) {
    let output = kubectl(&["get", kind, name, "-n", namespace, "-o", "json"]);
    assert!(
        output.status.success(),
        "kubectl get {kind} {name} -n {namespace}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let object: Value =
        serde_json::from_slice(&output.stdout).expect("kubectl get -o json prints JSON");
    (compute(&object), object)
}
