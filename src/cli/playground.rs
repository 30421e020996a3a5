//! `tidemark playground`: flags to settings; the work is in `src/playground/`.

use super::args::PlaygroundArgs;
use super::exit::ExitStatus;

pub fn run(args: PlaygroundArgs) -> anyhow::Result<ExitStatus> {
    crate::playground::run(crate::playground::Settings {
        dir: args.dir,
        policies: args.policies,
        nodes: args.nodes,
        base_port: args.base_port,
        cron: args.cron,
        sim: args.sim,
        stop_leftovers: args.stop_leftovers,
        break_node: args.break_node,
        sharded: args.sharded,
        metrics: args.metrics,
    })?;
    Ok(ExitStatus::Ok)
}
