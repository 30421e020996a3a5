//! Ships an agent's log lines for each op to the control plane, so `tidemark logs` shows
//! what every node did without a shell on any of them.
//!
//! [`OpLogLayer`] is a `tracing` layer: every event logged inside an `op` span (see
//! [`op_span`]) is kept, in memory, under that op's id. [`ship`] writes what was kept as
//! one create-once chunk per op; the runner calls it every second and at the end of each
//! op. Memory is bounded: past [`MAX_PENDING`] lines an op's oldest unshipped lines are
//! dropped, and the next chunk says how many.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use chrono::Utc;
use tidemark_schema::control::{OpLogChunk, OpLogLine, op_log_key};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::control::ControlPlane;

/// Unshipped lines kept per op; a store that stays down must not grow the agent's memory.
pub const MAX_PENDING: usize = 10_000;

#[derive(Default)]
struct Pending {
    lines: VecDeque<OpLogLine>,
    dropped: u64,
}

/// The lines logged per op and not yet shipped. One per process: the subscriber is too.
fn pending() -> &'static Mutex<BTreeMap<String, Pending>> {
    static PENDING: OnceLock<Mutex<BTreeMap<String, Pending>>> = OnceLock::new();
    PENDING.get_or_init(Default::default)
}

/// The span an op runs in; the layer files every event inside it under `op_id`.
pub fn op_span(op_id: &str) -> tracing::Span {
    tracing::info_span!("op", op = %op_id)
}

/// The id of the op a span belongs to, kept in the span's extensions.
struct OpId(String);

/// The `tracing` layer that keeps the events of `op` spans for [`ship`].
pub struct OpLogLayer;

impl<S> Layer<S> for OpLogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "op" {
            return;
        }
        let mut v = Fields::default();
        attrs.record(&mut v);
        if let (Some(op), Some(span)) = (v.op, ctx.span(id)) {
            span.extensions_mut().insert(OpId(op));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        let Some(op) = scope
            .from_root()
            .find_map(|s| s.extensions().get::<OpId>().map(|o| o.0.clone()))
        else {
            return;
        };
        let mut v = Fields::default();
        event.record(&mut v);
        let line = OpLogLine {
            at: Utc::now(),
            level: event.metadata().level().to_string(),
            message: v.text(),
        };
        let mut all = pending().lock().expect("not poisoned");
        let p = all.entry(op).or_default();
        if p.lines.len() >= MAX_PENDING {
            p.lines.pop_front();
            p.dropped += 1;
        }
        p.lines.push_back(line);
    }
}

/// An event's message and fields as `message key=value …`; `op` is the span's own.
#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
    op: Option<String>,
}

impl Fields {
    fn text(self) -> String {
        if self.rest.is_empty() {
            self.message
        } else {
            format!("{}{}", self.message, self.rest)
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "op" => self.op = Some(format!("{value:?}")),
            name => {
                let _ = write!(self.rest, " {name}={value:?}");
            }
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_string(),
            "op" => self.op = Some(value.to_string()),
            name => {
                let _ = write!(self.rest, " {name}={value}");
            }
        }
    }
}

/// Whether lines of `op` wait to be shipped (a failed write puts them back).
pub fn pending_for(op: &str) -> bool {
    pending()
        .lock()
        .expect("not poisoned")
        .get(op)
        .is_some_and(|p| !p.lines.is_empty() || p.dropped > 0)
}

/// Writes every op's unshipped lines as one chunk each. A chunk that cannot be written
/// goes back to the front of its op's lines, to be tried on the next call. One call at a
/// time: a caller that returns has seen every line taken before it shipped or put back.
pub async fn ship(control: &ControlPlane, replica_set: &str, node: &str) {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    let taken: Vec<(String, Pending)> = std::mem::take(&mut *pending().lock().expect("ok"))
        .into_iter()
        .filter(|(_, p)| !p.lines.is_empty() || p.dropped > 0)
        .collect();
    for (op, mut p) in taken {
        if p.dropped > 0 {
            let first = p.lines.front().map_or_else(Utc::now, |l| l.at);
            p.lines.push_front(OpLogLine {
                at: first,
                level: "WARN".into(),
                message: format!(
                    "{} earlier log lines of this op were dropped: the control plane \
                         could not take them in time",
                    p.dropped
                ),
            });
        }
        // Millisecond stamps sort chunks across restarts; the sequence, within a process.
        let stamp = format!(
            "{:013}-{:06}",
            Utc::now().timestamp_millis(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let chunk = OpLogChunk {
            op_id: op.clone(),
            replica_set: replica_set.to_string(),
            node: node.to_string(),
            stamp: stamp.clone(),
            lines: p.lines.into(),
        };
        let key = op_log_key(&op, replica_set, node, &stamp);
        if let Err(e) = control.put(&key, &chunk).await {
            // Logging this inside no op span: it must not feed itself.
            tracing::debug!(error = %e, "cannot ship log lines; keeping them for the next try");
            let mut all = pending().lock().expect("not poisoned");
            let back = all.entry(op).or_default();
            let mut lines: VecDeque<OpLogLine> = chunk.lines.into();
            if p.dropped > 0 {
                lines.pop_front();
            }
            lines.append(&mut back.lines);
            let over = lines.len().saturating_sub(MAX_PENDING);
            lines.drain(..over);
            back.lines = lines;
            back.dropped += p.dropped + over as u64;
        }
    }
}
