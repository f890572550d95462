//! `kubectl baton` end to end: kubectl finds the plugin on the PATH and drives a real rollout.

use baton::crd::{ApplyPhase, OperationPhase};
use baton_e2e::{kubectl_baton, pods};

use super::support::{
    DEPLOYER, World, app, create_rollout_failing_until_a_namespace, deployer_rules,
};

fn run(args: &[&str]) -> (bool, String, String) {
    let output = kubectl_baton(args);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn plugin_stops_resumes_dismisses_and_watches_a_rollout() {
    let world = World::new("plugin").await;
    let ns = world.ns.name.clone();
    let n = ns.as_str();
    let missing = create_rollout_failing_until_a_namespace(&world).await;

    let (ok, _, stderr) = run(&["status", "nothing-here", "-n", n]);
    assert!(!ok && stderr.contains("apply `nothing-here` not found"), "{stderr}");
    let (ok, _, stderr) = run(&["dismiss", "rollout", "-n", n]);
    assert!(!ok && stderr.contains("has no error to dismiss"), "{stderr}");

    world.wait_operation_phase("rollout", "a", OperationPhase::Running).await;
    let (ok, stdout, stderr) = run(&["stop", "rollout", "-n", n]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout}");
    assert!(stdout.contains("apply/rollout: stop requested"), "{stdout}");
    world.wait_apply_phase("rollout", ApplyPhase::Stopped).await;

    let (ok, stdout, _) = run(&["status", "rollout", "-n", n]);
    assert!(ok);
    assert!(stdout.starts_with("apply/rollout  Stopped  0/3"), "{stdout}");
    // Each operation with its target (`cluster/namespace` for a registered cluster), in
    // columns; compared with the padding collapsed.
    let collapsed: String = stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    for branch in [
        format!("├─ a {n} Stopped attempt 1"),
        format!("├─ b {n}-later Stopped attempt 0"),
        format!("└─ c {n} Stopped attempt 0"),
    ] {
        assert!(collapsed.contains(&branch), "status lacks `{branch}`:\n{stdout}");
    }

    let (ok, stdout, stderr) = run(&["resume", "rollout", "-n", n]);
    assert!(ok && stdout.contains("apply/rollout: resumed"), "{stdout}{stderr}");
    world.wait_operation_phase("rollout", "a", OperationPhase::Running).await;
    pods::release(&world.client, &ns, &app("web-a")).await;
    world.wait_apply_phase("rollout", ApplyPhase::Paused).await;

    let _later = baton_e2e::TestNamespace::create_named(&world.client, &missing).await;
    baton_e2e::grant(&world.client, &missing, (&ns, DEPLOYER), deployer_rules()).await;
    let (ok, stdout, stderr) = run(&["dismiss", "rollout", "-n", n]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("dismissed error b-1 (operation `b`)"), "{stdout}");

    let (ok, stdout, stderr) = run(&["watch", "rollout", "-n", n]);
    assert!(ok, "{stderr}");
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("apply/rollout: Succeeded"),
        "watch ends when the rollout settles:\n{stdout}"
    );
    assert!(
        stdout.contains("[##############################] 3/3"),
        "a full progress bar:\n{stdout}"
    );
}
