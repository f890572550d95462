//! The `baton` command: the operator and its tools.

use std::io::Write;
use std::path::PathBuf;

use baton::{Error, Result, crd};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "baton",
    version,
    about = "Rollouts through an ordered list of targets"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator against the cluster in KUBECONFIG (or the in-cluster config).
    Run,
    /// Print the CustomResourceDefinitions, or write them to a directory.
    Crds {
        /// Write `apply.yaml` and `operation.yaml` into this directory instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Run => {
            eprintln!("baton run: the operator is not built yet; `baton crds` prints the CRDs");
            return std::process::ExitCode::from(2);
        }
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

fn print_crds(out_dir: Option<PathBuf>) -> Result<()> {
    let crds = crd::crds_yaml()?;
    match out_dir {
        Some(dir) => {
            for (file, yaml) in crds {
                let path = dir.join(file);
                std::fs::write(&path, yaml).map_err(|source| Error::Io {
                    path: path.display().to_string(),
                    source,
                })?;
            }
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            let stream = crds
                .iter()
                .map(|(_, yaml)| yaml.as_str())
                .collect::<Vec<_>>()
                .join("---\n");
            stdout
                .write_all(stream.as_bytes())
                .map_err(|source| Error::Io {
                    path: "standard output".into(),
                    source,
                })?;
        }
    }
    Ok(())
}
