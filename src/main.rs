//! The `lambda` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use atelier_lambda::cli::{BatchArgs, Cli, Command, GenArgs};
use atelier_lambda::{batch, gen, output};
use clap::Parser;

/// Parsing and the dataflow allocate many small strings; mimalloc does that much faster.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mimalloc.h` (between `eager_commit_delay` = 14 and
/// `use_numa_nodes` = 16, which libmimalloc-sys names); the crate versions are pinned.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// By default mimalloc hands freed pages back to the OS after 10 ms, and the dataflow's
/// exchange buffers then fault them back in: 205k page faults for a 10M-row load, against
/// 11k with a one-second delay (and 13% less CPU).
fn keep_freed_pages_a_while() {
    // SAFETY: sets a plain integer option; mimalloc reads it when it next purges.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 1000) };
}

fn main() -> ExitCode {
    keep_freed_pages_a_while();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Batch(args) => run_batch(&args),
        Command::Gen(args) => run_gen(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_batch(args: &BatchArgs) -> anyhow::Result<()> {
    let settings = args.settings()?;
    let view_filter = settings.view_filter()?;
    let outcome = batch::run(&settings)?;
    print!("{}", output::customers_table(&outcome.reading, view_filter.as_ref(), settings.batch.show));
    let written = output::write_views(&settings.batch.out, &outcome.reading, view_filter.as_ref())?;
    eprintln!(
        "batch view at time 0: {} records, {} customers, {} refused ({}) in {:.3} s; {} files in {}",
        outcome.counts.records,
        outcome.reading.customer_count,
        outcome.counts.refused,
        settings.dead_letter_path().display(),
        outcome.elapsed.as_secs_f64(),
        written.len(),
        settings.batch.out.display(),
    );
    Ok(())
}

fn run_gen(args: &GenArgs) -> anyhow::Result<()> {
    let options = gen::GenOptions {
        rows: args.rows,
        customers: args.customers,
        skew: args.skew,
        corrections: args.corrections,
        deletes: args.deletes,
        bad: args.bad,
        seed: args.seed,
        id_prefix: args.id_prefix.clone(),
        csv: args.out.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")),
    };
    if args.out.as_os_str() == "-" {
        gen::generate(&options, &mut std::io::stdout().lock())?;
    } else {
        let mut file = std::fs::File::create(&args.out)?;
        gen::generate(&options, &mut file)?;
    }
    Ok(())
}
