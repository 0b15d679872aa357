//! `berth`: one binary for every role — a control node, the embedded dev cluster, and the
//! client verbs that talk to a cluster over its public gRPC API.

mod bench;
mod client;
mod cmd;
mod config;
mod output;
mod server;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Serverless containers on your own machines"
)]
struct Cli {
    #[command(flatten)]
    opts: ClientOpts,
    /// How log lines are written (on stderr): for people, or one JSON object per line.
    #[arg(long, global = true, env = "BERTH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How client verbs reach the cluster and print answers.
#[derive(Args, Clone)]
pub struct ClientOpts {
    /// Control nodes' API addresses, comma-separated; tried in turn.
    #[arg(
        long,
        global = true,
        env = "BERTH_ENDPOINT",
        default_value = "127.0.0.1:7400"
    )]
    pub endpoint: String,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// Read from the answering node's state without asking the leader (may lag).
    #[arg(long, global = true)]
    pub stale: bool,
    /// The cluster CA (a `berth tls` directory's ca.pem): speak TLS to control nodes,
    /// trusting only certificates it signed. `berth dev` puts its own in the config file.
    #[arg(long, global = true, env = "BERTH_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// The API token (`berth_…`) every call carries; an admin makes them with
    /// `berth token create`.
    #[arg(
        long,
        global = true,
        env = "BERTH_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// A file whose first line is the token: the cluster's first admin token is the
    /// admin.token of its `berth tls` directory (`berth dev` puts that in the config file).
    /// --token wins over it.
    #[arg(long, global = true, env = "BERTH_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,
    /// The namespace calls act in: task definitions, tasks, services and usage belong to
    /// one (default: `default`); a token may use only the namespaces it was made for.
    #[arg(
        short = 'n',
        long,
        global = true,
        env = "BERTH_NAMESPACE",
        value_name = "NAME"
    )]
    pub namespace: Option<String>,
    /// Speak plaintext, to a cluster started with --insecure.
    #[arg(long, global = true, env = "BERTH_INSECURE", value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    /// The table's rows as CSV, for export.
    Csv,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// The cluster on one screen (agents with reserved and used CPU and memory, tasks by
    /// state, services and deployments), refreshed in place.
    Top(cmd::top::TopArgs),
    /// Print a completion script for a shell (bash, zsh, fish, elvish, powershell), e.g.
    /// `berth completions bash > /etc/bash_completion.d/berth`.
    Completions { shell: clap_complete::Shell },
    /// The cluster's certificates (a CA, one per control node and agent) and its first
    /// admin token.
    Tls {
        #[command(subcommand)]
        cmd: cmd::tls::TlsCmd,
    },
    /// Run a control node.
    Control(server::ControlArgs),
    /// Run a three-node control cluster in this process, on loopback.
    Dev(server::DevArgs),
    /// Cluster membership and settings.
    Cluster {
        #[command(subcommand)]
        cmd: cmd::ClusterCmd,
    },
    /// Task definitions.
    Taskdef {
        #[command(subcommand)]
        cmd: cmd::TaskdefCmd,
    },
    /// Tasks.
    Task {
        #[command(subcommand)]
        cmd: cmd::task::TaskCmd,
    },
    /// What happens in the cluster: tasks, agents, task definitions and services, in order.
    Events(cmd::events::EventsArgs),
    /// What tasks used and cost (vCPU-hours, GiB-hours), as Fargate bills.
    Usage(cmd::usage::UsageArgs),
    /// Services: task definitions kept running at a desired count.
    Service {
        #[command(subcommand)]
        cmd: cmd::service::ServiceCmd,
    },
    /// Schedules: a task definition launched on a cron, a rate or once, each scheduled time
    /// exactly once, with retries and overlap control.
    Schedule {
        #[command(subcommand)]
        cmd: cmd::schedule::ScheduleCmd,
    },
    /// API tokens: create, list and revoke them (an admin's).
    Token {
        #[command(subcommand)]
        cmd: cmd::token::TokenCmd,
    },
    /// Secrets: values tasks get in their environment (a container's `secrets`), never
    /// shown back.
    Secret {
        #[command(subcommand)]
        cmd: cmd::secret::SecretCmd,
    },
    /// Namespaces and their quotas (creating, setting quotas and deleting are an admin's).
    Namespace {
        #[command(subcommand)]
        cmd: cmd::namespace::NamespaceCmd,
    },
    /// Measure a local three-node cluster (throughput, latency, failover, stability), on
    /// TLS as clusters run by default, or plaintext with --insecure.
    Bench(bench::BenchArgs),
    /// Run an agent on this host (no subcommand), or manage agents (ls, describe, drain).
    #[command(args_conflicts_with_subcommands = true)]
    Agent {
        #[command(flatten)]
        run: Box<berth_agent::cli::AgentArgs>,
        #[command(subcommand)]
        cmd: Option<cmd::agent::AgentCmd>,
    },
}

fn init_tracing(default: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only on a terminal: a log file or journal would keep the escape codes.
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Pretty => fmt.try_init(),
        LogFormat::Json => fmt.json().try_init(),
    };
}

fn main() -> ExitCode {
    config::load_into_env();
    let cli = Cli::parse();
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "berth", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let server_role = matches!(
        cli.command,
        Command::Control(_) | Command::Dev(_) | Command::Agent { cmd: None, .. }
    );
    init_tracing(
        if server_role {
            // openraft logs routine events as WARN and ERROR (a vote answered after it changed,
            // a peer not yet listening or gone, a call after it stopped); what an operator must
            // act on reaches Berth's own logs, `berth cluster status` and /metrics.
            // RUST_LOG=info,openraft=warn shows openraft's own lines.
            "info,openraft=off,sled=warn"
        } else {
            "warn,openraft=error"
        },
        cli.log_format,
    );
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let opts = cli.opts;
    let result = rt.block_on(async move {
        match cli.command {
            Command::Control(a) => server::control(a).await,
            Command::Dev(a) => server::dev(a).await,
            Command::Bench(a) => bench::bench(a, opts.insecure).await,
            Command::Cluster { cmd } => cmd::cluster(&opts, cmd).await,
            Command::Taskdef { cmd } => cmd::taskdef(&opts, cmd).await,
            Command::Task { cmd } => cmd::task::task(&opts, cmd).await,
            Command::Service { cmd } => cmd::service::service(&opts, cmd).await,
            Command::Schedule { cmd } => cmd::schedule::schedule(&opts, cmd).await,
            Command::Usage(a) => cmd::usage::usage(&opts, a).await,
            Command::Events(a) => cmd::events::events(&opts, a).await,
            Command::Agent { cmd: Some(cmd), .. } => cmd::agent::agent(&opts, cmd).await,
            Command::Agent { cmd: None, run } => server::agent(*run).await,
            Command::Top(a) => cmd::top::top(&opts, a).await,
            Command::Token { cmd } => cmd::token::token(&opts, cmd).await,
            Command::Namespace { cmd } => cmd::namespace::namespace(&opts, cmd).await,
            Command::Secret { cmd } => cmd::secret::secret(&opts, cmd).await,
            Command::Tls { cmd } => cmd::tls::tls(cmd),
            Command::Completions { .. } => Ok(ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        // The reader went away (`| head`, `| grep -q`): nobody is left to tell.
        Err(e) if output::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Default data directory of `berth dev`.
pub fn default_dev_dir() -> PathBuf {
    PathBuf::from(".berth-dev")
}
