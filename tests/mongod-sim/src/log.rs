//! mongod's structured JSON log lines (`{"t":{"$date":…},"s":…,"c":…,"id":…,"ctx":…,"msg":…,"attr":{…}}`).

use bson::{Bson, Document};
use serde_json::{Map, Value, json};
use std::io::Write;
use std::sync::{Mutex, OnceLock};

static SINK: OnceLock<Mutex<Box<dyn Write + Send>>> = OnceLock::new();

/// Sends log lines to `path` (appending, as mongod does with `--logappend`) or to stdout.
pub fn init(path: Option<&std::path::Path>) -> std::io::Result<()> {
    let sink: Box<dyn Write + Send> = match path {
        Some(p) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)?,
        ),
        None => Box::new(std::io::stdout()),
    };
    let _ = SINK.set(Mutex::new(sink));
    Ok(())
}

#[derive(Clone, Copy, Debug)]
pub enum Sev {
    I,
    W,
    E,
    F,
}

/// Writes one log line. `attr` is rendered as relaxed extended JSON, like mongod's.
pub fn log(sev: Sev, component: &str, id: u32, ctx: &str, msg: &str, attr: Document) {
    let now = chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3f+00:00")
        .to_string();
    let mut line = json!({
        "t": {"$date": now},
        "s": format!("{sev:?}"),
        "c": component,
        "id": id,
        "ctx": ctx,
        "msg": msg,
    });
    if !attr.is_empty() {
        line["attr"] = to_json(&Bson::Document(attr));
    }
    let text = format!("{line}\n");
    match SINK.get() {
        Some(sink) => {
            let mut w = sink.lock().unwrap_or_else(|e| e.into_inner());
            let _ = w.write_all(text.as_bytes());
            let _ = w.flush();
        }
        None => print!("{text}"),
    }
}

/// Relaxed extended JSON, enough for log attributes.
pub fn to_json(v: &Bson) -> Value {
    match v {
        Bson::Double(d) => json!(d),
        Bson::String(s) => json!(s),
        Bson::Array(a) => Value::Array(a.iter().map(to_json).collect()),
        Bson::Document(d) => Value::Object(
            d.iter()
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect::<Map<_, _>>(),
        ),
        Bson::Boolean(b) => json!(b),
        Bson::Null => Value::Null,
        Bson::Int32(i) => json!(i),
        Bson::Int64(i) => json!(i),
        Bson::Timestamp(ts) => json!({"$timestamp": {"t": ts.time, "i": ts.increment}}),
        Bson::ObjectId(o) => json!({"$oid": o.to_hex()}),
        Bson::DateTime(d) => json!({"$date": d.try_to_rfc3339_string().unwrap_or_default()}),
        Bson::Binary(b) if b.subtype == bson::spec::BinarySubtype::Uuid => {
            let hex: String = b.bytes.iter().map(|x| format!("{x:02x}")).collect();
            json!({"$uuid": format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])})
        }
        other => json!(format!("{other}")),
    }
}

/// Logs at a given severity with a short call.
#[macro_export]
macro_rules! slog {
    ($sev:ident, $c:expr, $id:expr, $ctx:expr, $msg:expr) => {
        $crate::log::log(
            $crate::log::Sev::$sev,
            $c,
            $id,
            $ctx,
            $msg,
            bson::Document::new(),
        )
    };
    ($sev:ident, $c:expr, $id:expr, $ctx:expr, $msg:expr, $attr:expr) => {
        $crate::log::log($crate::log::Sev::$sev, $c, $id, $ctx, $msg, $attr)
    };
}
