//! `tidemark logs [--op ID] [--follow]`: what the agents logged while working on an
//! operation, merged by time, one line per event with its node. Reads the chunks agents
//! ship under `logs/<op>/`, or the op's archive once it has been compacted.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::bail;
use serde_json::json;
use tidemark_schema::control::{
    ONESHOTS_PREFIX, OneShotRecord, OpArchive, OpLogChunk, archive_key, op_logs_prefix, result_key,
};
use tidemark_store::control::ControlPlane;

use super::args::{LogsArgs, OutputFormat};
use super::exit::ExitStatus;

/// How often `--follow` looks for new chunks.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

pub fn run(args: LogsArgs) -> anyhow::Result<ExitStatus> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let control = ControlPlane::open(&args.control)?;
        let records = control
            .all_lenient::<OneShotRecord>(ONESHOTS_PREFIX)
            .await?
            .0;
        let roots = match &args.op {
            Some(op) => vec![op.clone()],
            None => default_ops(&records),
        };
        if roots.is_empty() {
            bail!("no operation has started in {}", control.url());
        }
        let mut reader = Reader {
            control: &control,
            seen: BTreeSet::new(),
            read_keys: BTreeSet::new(),
            many: roots.len() > 1,
            output: args.output,
        };
        let mut found = false;
        for root in &roots {
            found |= reader.known(root).await?;
        }
        if !found {
            bail!(
                "no op {:?} in {} (the op ids are in `describe-backup` and `describe-restore`)",
                roots.join(", "),
                control.url()
            );
        }
        loop {
            // Read whether they ended before reading lines: every line of an ended op is
            // shipped before its outcome is written, so this read catches the last ones.
            let ended = ended(&control, &roots).await?;
            reader.print_new(&roots).await?;
            if !args.follow || ended {
                return Ok(ExitStatus::Ok);
            }
            tokio::time::sleep(FOLLOW_EVERY).await;
        }
    })
}

/// Without `--op`: every operation still running, or else the one started last.
fn default_ops(records: &[OneShotRecord]) -> Vec<String> {
    let running: Vec<String> = records
        .iter()
        .filter(|r| !r.is_final())
        .map(|r| r.op_id.clone())
        .collect();
    if !running.is_empty() {
        return running;
    }
    records
        .iter()
        .max_by_key(|r| r.started_at)
        .map(|r| vec![r.op_id.clone()])
        .unwrap_or_default()
}

/// Whether every one of `roots` has ended: its one-shot record is final, or (an op with no
/// record) its result is written.
async fn ended(control: &ControlPlane, roots: &[String]) -> anyhow::Result<bool> {
    let records = control
        .all_lenient::<OneShotRecord>(ONESHOTS_PREFIX)
        .await?
        .0;
    for root in roots {
        let done = match records.iter().find(|r| &r.op_id == root) {
            Some(r) => r.is_final(),
            None => {
                control.exists(&result_key(root)).await?
                    || control.exists(&archive_key(root)).await?
            }
        };
        if !done {
            return Ok(false);
        }
    }
    Ok(true)
}

struct Reader<'a> {
    control: &'a ControlPlane,
    /// Chunks already printed, by [`OpLogChunk::identity`].
    seen: BTreeSet<String>,
    /// Live chunk keys already read.
    read_keys: BTreeSet<String>,
    /// Several root ops: each line names its op.
    many: bool,
    output: OutputFormat,
}

impl Reader<'_> {
    /// Whether the op exists, live or archived.
    async fn known(&self, root: &str) -> anyhow::Result<bool> {
        Ok(self.control.op(root).await?.is_some()
            || self.control.exists(&archive_key(root)).await?)
    }

    /// The op and its follow-up steps (`<op>.<stage>`), live or archived.
    async fn family(&self, root: &str) -> anyhow::Result<Vec<String>> {
        let stage = format!("{root}.");
        let mut ids: BTreeSet<String> = self
            .control
            .op_ids()
            .await?
            .into_iter()
            .filter(|id| id == root || id.starts_with(&stage))
            .collect();
        for key in self.control.keys("ledger/archive/").await? {
            if let Some(id) = key
                .strip_prefix("ledger/archive/")
                .and_then(|k| k.strip_suffix(".json"))
                && (id == root || id.starts_with(&stage))
            {
                ids.insert(id.to_string());
            }
        }
        Ok(ids.into_iter().collect())
    }

    /// Chunks of `op` not printed yet.
    async fn new_chunks(&mut self, op: &str) -> anyhow::Result<Vec<OpLogChunk>> {
        // The archive, once there is one, is whole; live chunks may be half deleted.
        let archived: Option<OpArchive> = self.control.get(&archive_key(op)).await?;
        let chunks: Vec<OpLogChunk> = match archived {
            Some(archive) => archive.logs,
            None => {
                let mut read = Vec::new();
                for key in self.control.keys(&op_logs_prefix(op)).await? {
                    // Each chunk is written once: read each key once, however long
                    // `--follow` runs.
                    if self.read_keys.insert(key.clone())
                        && let Some(chunk) = self.control.get::<OpLogChunk>(&key).await?
                    {
                        read.push(chunk);
                    }
                }
                read
            }
        };
        Ok(chunks
            .into_iter()
            .filter(|c| self.seen.insert(c.identity()))
            .collect())
    }

    async fn print_new(&mut self, roots: &[String]) -> anyhow::Result<()> {
        let mut lines = Vec::new();
        for root in roots {
            for op in self.family(root).await? {
                for chunk in self.new_chunks(&op).await? {
                    for line in chunk.lines {
                        lines.push((
                            line,
                            chunk.replica_set.clone(),
                            chunk.node.clone(),
                            op.clone(),
                        ));
                    }
                }
            }
        }
        // Merged by time; a stable sort keeps each node's own order for equal stamps.
        lines.sort_by_key(|(l, ..)| l.at);
        let mut out = String::new();
        for (line, rs, node, op) in lines {
            match self.output {
                OutputFormat::Json => {
                    let v = json!({
                        "at": line.at, "op": op, "replicaSet": rs, "node": node,
                        "level": line.level, "message": line.message,
                    });
                    out.push_str(&v.to_string());
                }
                OutputFormat::Text => {
                    let at = line.at.format("%Y-%m-%dT%H:%M:%S%.3fZ");
                    let op = if self.many || op.contains('.') {
                        format!(" [{op}]")
                    } else {
                        String::new()
                    };
                    out.push_str(&format!(
                        "{at} {rs}/{node}{op} {:>5} {}",
                        line.level, line.message
                    ));
                }
            }
            out.push('\n');
        }
        print!("{out}");
        Ok(())
    }
}
