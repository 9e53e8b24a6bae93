//! `kv bench` (placeholder until the latency run lands).
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

/// Arguments of `kv bench`.
#[derive(Debug, Args)]
pub(super) struct BenchArgs {}

pub(super) fn run(_args: &BenchArgs) -> Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
