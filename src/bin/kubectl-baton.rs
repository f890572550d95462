//! `kubectl baton`: the kubectl plugin for baton rollouts. Installed as `kubectl-baton` on the
//! PATH, kubectl runs it for `kubectl baton ...`.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use baton::dashboard::{self, AllowedHost};
use baton::plugin::{Plugin, printable};
use baton::{Error, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kubectl baton",
    version,
    about = "Status, stop, resume, dismiss, approve and watch baton rollouts, or look at them in a browser"
)]
struct Cli {
    /// Namespace of the Apply (default: the kubeconfig context's namespace).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The Apply and its operations as a tree: phase, attempt, age, message.
    Status { name: String },
    /// Request a stop: pending operations become Stopped, running ones stop at their next check.
    Stop { name: String },
    /// Withdraw the stop: stopped operations go back to Pending and the rollout goes on.
    Resume { name: String },
    /// Dismiss the current error by its id (read from the status); failed operations run again.
    Dismiss { name: String },
    /// Approve an operation whose `approval` is `Required` (adds it to `spec.approvals`).
    Approve { name: String, operation: String },
    /// Show live progress until the rollout settles.
    Watch { name: String },
    /// Serve a live web page of the namespace's rollouts, with your credentials, on loopback.
    Dashboard {
        /// Where to listen. Anything but loopback lets whoever reaches it act as you.
        #[arg(long, default_value = dashboard::DEFAULT_ADDRESS)]
        address: SocketAddr,
        /// A name the page may be reached by besides localhost, 127.0.0.1, [::1] and the
        /// address bound (repeatable; the port bound unless given). Requests naming any other
        /// Host are refused.
        #[arg(long = "allowed-host", value_name = "NAME[:PORT]")]
        allowed_hosts: Vec<AllowedHost>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kubectl baton: starting: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The API server's words may quote what a tenant wrote.
            eprintln!("kubectl baton: {}", printable(&error.to_string()));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let config = kube::Config::infer().await.map_err(|error| Error::Config(error.to_string()))?;
    let namespace = cli.namespace.unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config).map_err(|source| Error::Kube {
        step: baton::Step::Client,
        context: "building the client".into(),
        source,
    })?;
    let plugin = Plugin::new(client.clone(), &namespace);
    let mut out = std::io::stdout().lock();
    match &cli.command {
        Command::Status { name } => plugin.status(name, &mut out).await,
        Command::Stop { name } => print(&mut out, plugin.stop(name).await?),
        Command::Resume { name } => print(&mut out, plugin.resume(name).await?),
        Command::Dismiss { name } => print(&mut out, plugin.dismiss(name).await?),
        Command::Approve { name, operation } => {
            print(&mut out, plugin.approve(name, operation).await?)
        }
        Command::Watch { name } => plugin.watch(name, &mut out).await,
        Command::Dashboard { address, allowed_hosts } => {
            drop(plugin);
            dashboard::serve(client, &namespace, *address, allowed_hosts, &mut out).await
        }
    }
}

/// Writes an action's line, its control characters escaped: it quotes names and ids read back
/// from the cluster.
fn print(out: &mut impl Write, line: String) -> Result<()> {
    writeln!(out, "{}", printable(&line))
        .map_err(|source| Error::Io { path: "standard output".into(), source })
}
