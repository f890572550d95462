//! `kubectl baton`: status, stop, resume, dismiss and watch an Apply. Every command prints what
//! it did in one line and fails with a message naming the Apply when it cannot.
//!
//! It only reads Applies and Operations and patches `spec.stop` / `spec.dismissError` /
//! `spec.approvals`, exactly as a user would with `kubectl patch`; it never writes status. The
//! actions (stop, resume, dismiss, approve) return their one line instead of printing it, so the
//! dashboard (`crate::dashboard`) makes the very same patches and shows the same words.
//!
//! Whatever it prints passes through [`printable`]: messages, reasons, error ids and approvers
//! are text a tenant or a condition wrote, and must not drive the user's terminal.

use std::borrow::Cow;
use std::io::Write;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use crate::crd::{Apply, ApplyPhase, LABEL_APPLY, Operation, OperationStatus};
use crate::lifecycle::awaits_approval;
use crate::{Error, Result};

/// Field manager of the plugin's patches.
const PLUGIN_MANAGER: &str = "kubectl-baton";
/// How often `watch` looks again.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);
/// Width of `watch`'s progress bar.
const BAR_WIDTH: usize = 30;

/// The plugin, bound to one namespace.
pub struct Plugin {
    applies: Api<Apply>,
    operations: Api<Operation>,
    namespace: String,
}

impl Plugin {
    /// A plugin for `namespace`.
    pub fn new(client: Client, namespace: &str) -> Self {
        Plugin {
            applies: Api::namespaced(client.clone(), namespace),
            operations: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
        }
    }

    async fn get(&self, name: &str) -> Result<Apply> {
        match self.applies.get_opt(name).await {
            Ok(Some(apply)) => Ok(apply),
            Ok(None) => Err(Error::NotFound(format!(
                "apply `{name}` not found in namespace `{}`",
                self.namespace
            ))),
            Err(source) => Err(Error::Kube {
                step: crate::Step::Client,
                context: format!("reading apply `{name}`"),
                source,
            }),
        }
    }

    async fn patch_spec(&self, name: &str, spec: serde_json::Value) -> Result<()> {
        self.get(name).await?;
        self.applies
            .patch(
                name,
                &PatchParams {
                    field_manager: Some(PLUGIN_MANAGER.into()),
                    ..PatchParams::default()
                },
                &Patch::Merge(json!({ "spec": spec })),
            )
            .await
            .map_err(|source| Error::Kube {
                step: crate::Step::Client,
                context: format!("patching apply `{name}`"),
                source,
            })?;
        Ok(())
    }

    /// `stop NAME`: requests a stop.
    pub async fn stop(&self, name: &str) -> Result<String> {
        self.patch_spec(name, json!({"stop": true})).await?;
        Ok(format!("apply/{name}: stop requested; pending operations will be Stopped"))
    }

    /// `resume NAME`: withdraws the stop.
    pub async fn resume(&self, name: &str) -> Result<String> {
        self.patch_spec(name, json!({"stop": false})).await?;
        Ok(format!("apply/{name}: resumed; stopped operations go back to Pending"))
    }

    /// `approve NAME OPERATION`: adds the operation to `spec.approvals`, guarded by the
    /// resourceVersion read, so an approval written meanwhile by someone else is never lost.
    pub async fn approve(&self, name: &str, operation: &str) -> Result<String> {
        let apply = self.get(name).await?;
        let entry = apply.spec.operations.iter().find(|entry| entry.name == operation);
        let Some(entry) = entry else {
            return Err(Error::NotFound(format!("apply `{name}` has no operation `{operation}`")));
        };
        if entry.approval.is_none() {
            return Err(Error::Conflict(format!(
                "operation `{operation}` of apply `{name}` needs no approval"
            )));
        }
        if apply.spec.approvals.iter().any(|approved| approved == operation) {
            return Ok(format!("apply/{name}: operation `{operation}` is already approved"));
        }
        let mut approvals = apply.spec.approvals.clone();
        approvals.push(operation.to_owned());
        // The resourceVersion read makes the patch fail, not overwrite, if the list changed.
        let patch = json!({
            "metadata": {"resourceVersion": apply.metadata.resource_version},
            "spec": {"approvals": approvals},
        });
        let params =
            PatchParams { field_manager: Some(PLUGIN_MANAGER.into()), ..PatchParams::default() };
        self.applies.patch(name, &params, &Patch::Merge(patch)).await.map_err(|source| {
            Error::Kube {
                step: crate::Step::Client,
                context: format!("approving operation `{operation}` of apply `{name}`"),
                source,
            }
        })?;
        Ok(format!("apply/{name}: operation `{operation}` approved"))
    }

    /// `dismiss NAME`: dismisses the current error by its id, read from the status.
    pub async fn dismiss(&self, name: &str) -> Result<String> {
        let apply = self.get(name).await?;
        let Some(error) = apply.status.and_then(|status| status.error) else {
            return Err(Error::Conflict(format!("apply `{name}` has no error to dismiss")));
        };
        self.dismiss_id(name, &error.id).await?;
        Ok(format!(
            "apply/{name}: dismissed error {} (operation `{}`); failed operations run again",
            error.id, error.operation
        ))
    }

    /// Dismisses the error `id`, as the user saw it (the dashboard shows it beside its button).
    /// An id that is no longer current dismisses nothing: the operator says so in the Apply's
    /// `DismissalRejected` condition (SPEC.md section 5).
    pub async fn dismiss_id(&self, name: &str, id: &str) -> Result<String> {
        self.patch_spec(name, json!({"dismissError": id})).await?;
        Ok(format!("apply/{name}: dismissal of error {id} requested; failed operations run again"))
    }

    /// `status NAME`: the Apply and its operations as a tree.
    pub async fn status(&self, name: &str, out: &mut impl Write) -> Result<()> {
        let apply = self.get(name).await?;
        let mut operations = self
            .operations
            .list(&ListParams::default().labels(&format!("{LABEL_APPLY}={name}")))
            .await
            .map_err(|source| Error::Kube {
                step: crate::Step::Client,
                context: format!("listing the operations of apply `{name}`"),
                source,
            })?
            .items;
        operations.sort_by_key(|op| op.spec.index);
        let now = Timestamp::now();
        let status = apply.status.clone().unwrap_or_default();
        let phase = status.phase.map_or("-", ApplyPhase::as_str);
        line(
            out,
            format!(
                "apply/{name}  {phase}  {}  age {}  {}",
                if status.progress.is_empty() { "-" } else { &status.progress },
                age(apply.metadata.creation_timestamp.as_ref(), now),
                status.message
            ),
        )?;
        let width = operations.iter().map(|op| op.spec.name.len()).max().unwrap_or(0);
        let target = |op: &Operation| match &op.spec.target.cluster {
            Some(cluster) => format!("{cluster}/{}", op.spec.target.namespace),
            None => op.spec.target.namespace.clone(),
        };
        let target_width = operations.iter().map(|op| target(op).len()).max().unwrap_or(0);
        for (position, op) in operations.iter().enumerate() {
            let branch = if position + 1 == operations.len() { "└─" } else { "├─" };
            let op_status = op.status.clone().unwrap_or_default();
            line(
                out,
                format!(
                    "{branch} {:width$}  {:target_width$}  {:9}  attempt {}  {:>6}  {}",
                    op.spec.name,
                    target(op),
                    op_status.phase.as_str(),
                    op_status.attempt,
                    age(op_status.started_at.as_ref(), now),
                    gate_note(&apply, op, &op_status)
                        .unwrap_or(op_status.message.clone().unwrap_or_default()),
                ),
            )?;
        }
        Ok(())
    }

    /// `watch NAME`: a progress bar until the rollout settles (or pauses for a person).
    pub async fn watch(&self, name: &str, out: &mut impl Write) -> Result<()> {
        let interactive = std::io::IsTerminal::is_terminal(&std::io::stdout());
        let mut last = String::new();
        loop {
            let apply = self.get(name).await?;
            let status = apply.status.clone().unwrap_or_default();
            let counts = &status.operations;
            let done = counts.succeeded + counts.failed;
            let total = counts.total.max(1);
            let filled = usize::try_from(done * u32::try_from(BAR_WIDTH).unwrap_or(30) / total)
                .unwrap_or(0)
                .min(BAR_WIDTH);
            let phase = status.phase.map_or("-", ApplyPhase::as_str);
            let current = if status.current.is_empty() {
                String::new()
            } else {
                format!(" running {}", status.current)
            };
            let text = format!(
                "apply/{name} [{}{}] {done}/{} {phase}{current}",
                "#".repeat(filled),
                "-".repeat(BAR_WIDTH - filled),
                counts.total
            );
            if text != last {
                if interactive {
                    write!(out, "\r\x1b[2K{}", printable(&text)).map_err(io_error)?;
                    out.flush().map_err(io_error)?;
                } else {
                    line(out, text.clone())?;
                }
                last = text;
            }
            // A status older than the spec (a stop, resume or dismissal not yet seen by the
            // operator) says nothing about where the rollout is going.
            let current = status.observed_generation >= apply.metadata.generation;
            if let Some(phase) = status.phase
                && current
                && (phase.is_terminal() || phase == ApplyPhase::Paused)
            {
                if interactive {
                    line(out, String::new())?;
                }
                return line(
                    out,
                    format!("apply/{name}: {phase}: {}", status.message, phase = phase.as_str()),
                );
            }
            tokio::time::sleep(WATCH_INTERVAL).await;
        }
    }
}

/// What an operation's gate says, when it says more than its message: it awaits an approval.
fn gate_note(apply: &Apply, op: &Operation, status: &OperationStatus) -> Option<String> {
    awaits_approval(&apply.spec, &op.spec.name, status.phase).then(|| {
        format!(
            "awaits approval: kubectl baton approve {} {}",
            apply.metadata.name.clone().unwrap_or_default(),
            op.spec.name
        )
    })
}

/// How long ago `since` was, as kubectl writes ages (`42s`, `3m5s`, `2h13m`).
pub fn age(since: Option<&Time>, now: Timestamp) -> String {
    let Some(since) = since else { return "-".to_owned() };
    let seconds = now.duration_since(since.0).as_secs().max(0);
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m{}s", seconds / 60, seconds % 60),
        _ => format!("{}h{}m", seconds / 3600, seconds % 3600 / 60),
    }
}

fn io_error(source: std::io::Error) -> Error {
    Error::Io { path: "standard output".into(), source }
}

/// Writes one line of `text`, escaped: nothing the plugin writes in a line is a control
/// character, so escaping the whole line escapes exactly what came from the cluster.
fn line(out: &mut impl Write, text: String) -> Result<()> {
    writeln!(out, "{}", printable(&text)).map_err(io_error)
}

/// `text` as it may reach a terminal: control characters (all of C0, newline and tab included,
/// DEL and C1) and the bidirectional formatting characters are written as escapes (`\x1b`,
/// `\n`, `\u{9b}`, `\u{202e}`), so text from the cluster can neither start an escape
/// sequence, move the cursor, reorder what follows, nor break a line or a column. Everything else
/// (é, 日本, box drawing) is kept as is, and text with nothing to escape is not copied.
pub fn printable(text: &str) -> Cow<'_, str> {
    use std::fmt::Write as _;
    if !text.chars().any(unprintable) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 16);
    for character in text.chars() {
        let code = u32::from(character);
        // Writing to a String cannot fail.
        let _ = match character {
            '\n' => escaped.write_str("\\n"),
            '\t' => escaped.write_str("\\t"),
            '\r' => escaped.write_str("\\r"),
            _ if unprintable(character) && code < 0x80 => write!(escaped, "\\x{code:02x}"),
            _ if unprintable(character) => write!(escaped, "\\u{{{code:x}}}"),
            _ => escaped.write_char(character),
        };
    }
    Cow::Owned(escaped)
}

/// A character a terminal acts on rather than shows: a control character (Unicode's `Cc`: C0,
/// DEL, C1) or a bidirectional formatting character.
fn unprintable(character: char) -> bool {
    let bidirectional = matches!(
        character,
        '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
    );
    character.is_control() || bidirectional
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        let now = Timestamp::from_second(10_000).expect("a valid instant");
        let at = |s: i64| Time(Timestamp::from_second(s).expect("a valid instant"));
        assert_eq!(age(Some(&at(9_990)), now), "10s");
        assert_eq!(age(Some(&at(9_000)), now), "16m40s");
        assert_eq!(age(Some(&at(2_000)), now), "2h13m");
        assert_eq!(age(None, now), "-");
    }

    #[test]
    fn control_characters_are_escaped_and_other_text_kept() {
        let table = [
            ("\x1b[2J\x1b[1;1Hall good", "\\x1b[2J\\x1b[1;1Hall good"),
            ("first\nsecond\tcolumn\r", "first\\nsecond\\tcolumn\\r"),
            ("\u{9b}31m red", "\\u{9b}31m red"),
            ("\u{0}\u{7}\u{7f}", "\\x00\\x07\\x7f"),
            ("\u{202e}txt.exe", "\\u{202e}txt.exe"),
            ("déployé sur 日本 ├─ ok", "déployé sur 日本 ├─ ok"),
            ("", ""),
        ];
        for (text, shown) in table {
            assert_eq!(printable(text), shown, "{text:?}");
        }
        assert!(matches!(printable("déployé 日本"), Cow::Borrowed(_)), "nothing copied");
    }

    #[test]
    fn a_line_from_the_cluster_stays_one_line_without_escape_sequences() {
        let mut out = Vec::new();
        line(&mut out, "├─ a  Failed  ready\n\x1b[2Kfake line\u{9b}0m".to_owned()).expect("a line");
        let text = String::from_utf8(out).expect("UTF-8");
        assert_eq!(text.lines().count(), 1, "{text:?}");
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{text:?}");
        assert_eq!(text, "├─ a  Failed  ready\\n\\x1b[2Kfake line\\u{9b}0m\n");
    }
}
