//! The `baton` command: the operator and its tools.

use std::io::Write;
use std::path::PathBuf;

use baton::{Error, Result, crd};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "baton", version, about = "Rollouts through an ordered list of targets")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator against the cluster in KUBECONFIG (or the in-cluster config).
    Run(RunArgs),
    /// Print the CustomResourceDefinitions, or write them to a directory.
    Crds {
        /// Write `apply.yaml` and `operation.yaml` into this directory instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "BATON_NAMESPACE")]
    namespace: Option<String>,
    /// Service account impersonated for Applies that set no `serviceAccountName`.
    #[arg(long, env = "BATON_DEFAULT_SERVICE_ACCOUNT", default_value = "default")]
    default_service_account: String,
    /// Health comes from watches; this is how long, in seconds, an awaited object is trusted
    /// without news before it is read again (in case its watch stalled silently).
    #[arg(long, env = "BATON_HEALTH_REREAD_SECONDS", default_value_t = 60.0)]
    health_reread_seconds: f64,
    /// Apply lease duration, in seconds: how long a crashed replica's Applies wait for a successor.
    #[arg(long, env = "BATON_LEASE_DURATION_SECONDS", default_value_t = 15)]
    lease_duration_seconds: u64,
    /// Renew an apply lease this many seconds before it expires.
    #[arg(long, env = "BATON_LEASE_GRACE_SECONDS", default_value_t = 5)]
    lease_grace_seconds: u64,
    /// How long an idempotency key whose holder stopped renewing stays taken, in seconds.
    #[arg(long, env = "BATON_IDEMPOTENCY_TTL_SECONDS", default_value_t = 3600)]
    idempotency_ttl_seconds: u64,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "BATON_ADMIN_ADDRESS", default_value = "0.0.0.0:8080")]
    admin_address: std::net::SocketAddr,
    /// How many Applies are reconciled at once.
    #[arg(long, env = "BATON_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// Log format.
    #[arg(long, env = "BATON_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: baton::telemetry::LogFormat,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Run(args) => run(args),
        Command::Crds { out_dir } => print_crds(out_dir),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("baton: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> Result<()> {
    baton::telemetry::init(args.log_format);
    let settings = baton::controller::Settings {
        namespace: args.namespace,
        identity: baton::controller::replica_identity(),
        default_service_account: args.default_service_account,
        health_reread_interval: std::time::Duration::try_from_secs_f64(args.health_reread_seconds)
            .unwrap_or(std::time::Duration::from_secs(60))
            .clamp(std::time::Duration::from_secs(1), std::time::Duration::from_secs(3600)),
        lease: baton::lease::LeaseTiming {
            duration: std::time::Duration::from_secs(args.lease_duration_seconds.max(2)),
            grace: std::time::Duration::from_secs(
                args.lease_grace_seconds.clamp(1, args.lease_duration_seconds.max(2) - 1),
            ),
        },
        idempotency_ttl: std::time::Duration::from_secs(args.idempotency_ttl_seconds.max(1)),
        admin_address: args.admin_address,
        concurrency: args.concurrency.max(1),
    };
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|source| Error::Io { path: "the async runtime".into(), source })?;
    let outcome = runtime.block_on(baton::controller::run(settings));
    // Whatever is still running in the background (watches, lease renewals, Events, passes
    // dropped at the grace) does not hold the exit.
    runtime.shutdown_background();
    outcome
}

fn print_crds(out_dir: Option<PathBuf>) -> Result<()> {
    let crds = crd::crds_yaml()?;
    match out_dir {
        Some(dir) => {
            for (file, yaml) in crds {
                let path = dir.join(file);
                std::fs::write(&path, yaml)
                    .map_err(|source| Error::Io { path: path.display().to_string(), source })?;
            }
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            let stream =
                crds.iter().map(|(_, yaml)| yaml.as_str()).collect::<Vec<_>>().join("---\n");
            stdout
                .write_all(stream.as_bytes())
                .map_err(|source| Error::Io { path: "standard output".into(), source })?;
        }
    }
    Ok(())
}
