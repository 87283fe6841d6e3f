//! The `volbridge` binary: a thin shell over the library.

use clap::Parser;
use std::process::ExitCode;
use volbridge::cli::args::{Command, ConfigCommand, ServeArgs};
use volbridge::cli::Format;
use volbridge::cli::{self, Cli};
use volbridge::config::Config;
use volbridge::Error;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Serve(ref args) => serve(args),
        Command::Config {
            command: ConfigCommand::Show(ref args),
        } => show_config(args, cli.output),
        Command::Completion { shell } => match cli::completion(shell) {
            Ok(()) => 0,
            Err(e) => cli::report(&e),
        },
        Command::Man { ref dir } => match cli::man(dir) {
            Ok(()) => 0,
            Err(e) => cli::report(&e),
        },
        _ => client(cli),
    };
    ExitCode::from(code)
}

fn serve(args: &ServeArgs) -> u8 {
    let config = match effective_config(args) {
        Ok(c) => c,
        Err(e) => return cli::report(&e),
    };
    volbridge::logging::init(
        &config.log.level,
        config.log.format == "json",
        volbridge::logging::Streams::for_daemon(&config),
    );
    allocator_settings();
    let workers = match config.limits.worker_threads {
        0 => std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .min(4),
        n => n,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build();
    let result = match runtime {
        Ok(rt) => rt.block_on(volbridge::daemon::serve(config)),
        Err(e) => Err(Error::internal(format!("cannot start the runtime: {e}"))),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = %e.message, "volbridge serve failed");
            cli::report(&e)
        }
    }
}

/// glibc gives every thread that allocates an arena of its own, and memory freed in one
/// stays there: after a burst of load each worker and blocking thread keeps its own
/// high-water mark. The daemon's threads mostly wait on I/O, and small allocations go
/// through each thread's cache anyway, so one shared arena costs no measurable time.
///
/// Blocks of 128 KiB and more are mapped on their own and unmapped when freed. glibc would
/// otherwise raise that threshold to the size of each such block freed (up to 32 MiB), so
/// after the first large listing every later one (JSON bodies, vectors of thousands of
/// volumes: MiBs each) is carved from the heap and stays resident once freed. The daemon
/// makes such blocks only for large listings, so the extra mmap calls cost nothing
/// measurable. `cargo bench --bench scale` (10,000 volumes held, after three ListVolumes
/// walks and direct CSP listings): VmRSS 21.0 MiB without this setting, 16.0 with it.
fn allocator_settings() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator settings; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
}

fn show_config(args: &ServeArgs, format: Format) -> u8 {
    let shown = effective_config(args).and_then(|c| match format {
        Format::Json => c.shown_json(),
        _ => c.shown_toml(),
    });
    match shown {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(e) => cli::report(&e),
    }
}

fn effective_config(args: &ServeArgs) -> Result<Config, Error> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(d) = &args.state_dir {
        config.state_dir = d.clone();
    }
    if let Some(s) = &args.admin_socket {
        config.admin_socket = s.clone();
    }
    if let Some(d) = &args.csp_data_dir {
        config.local_csp.data_dir = Some(d.clone());
    }
    if let Some(l) = args.csp_listen {
        config.local_csp.listen = l;
    }
    if let Some(p) = args.csp_pool {
        config.local_csp.pool = p;
    }
    if args.no_local_csp {
        config.local_csp.enabled = false;
    }
    if let Some(l) = &args.log_level {
        config.log.level = l.clone();
    }
    if args.log_json {
        config.log.format = "json".into();
    }
    if let Some(e) = &args.csi_endpoint {
        config.csi.endpoint = Some(e.clone());
    }
    if let Some(m) = &args.csi_mode {
        config.csi.mode = m.clone();
    }
    if let Some(n) = &args.csi_driver_name {
        config.csi.driver_name = n.clone();
    }
    if let Some(n) = args.csi_max_volumes_per_node {
        config.csi.max_volumes_per_node = n;
    }
    if let Some(o) = &args.csi_orchestrator {
        config.csi.orchestrator = o.clone();
    }
    if let Some(a) = args.metrics_listen {
        config.metrics_listen = Some(a);
    }
    args.docker.apply(&mut config.docker);
    config.validate()?;
    Ok(config)
}

fn client(cli: Cli) -> u8 {
    // `csp serve` logs; client commands stay quiet unless RUST_LOG asks.
    let level = if matches!(cli.command, Command::Csp { .. }) {
        "info"
    } else {
        "warn"
    };
    volbridge::logging::init(level, false, volbridge::logging::Streams::Stderr);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result = match runtime {
        Ok(rt) => rt.block_on(cli::run_client(cli)),
        Err(e) => Err(Error::internal(format!("cannot start the runtime: {e}"))),
    };
    match result {
        Ok(()) => 0,
        Err(e) => cli::report(&e),
    }
}
