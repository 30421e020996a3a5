//! Just enough of MongoDB's query language: filters, comparison order, updates, sort and projection.

use bson::{Bson, Document};
use std::cmp::Ordering;

/// BSON's canonical type order, used to compare values of different types like mongod does.
fn type_rank(v: &Bson) -> u8 {
    match v {
        Bson::MinKey => 0,
        Bson::Null | Bson::Undefined => 1,
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => 2,
        Bson::String(_) | Bson::Symbol(_) => 3,
        Bson::Document(_) => 4,
        Bson::Array(_) => 5,
        Bson::Binary(_) => 6,
        Bson::ObjectId(_) => 7,
        Bson::Boolean(_) => 8,
        Bson::DateTime(_) => 9,
        Bson::Timestamp(_) => 10,
        Bson::RegularExpression(_) => 11,
        Bson::MaxKey => 13,
        _ => 12,
    }
}

fn as_f64(v: &Bson) -> f64 {
    match v {
        Bson::Int32(i) => *i as f64,
        Bson::Int64(i) => *i as f64,
        Bson::Double(d) => *d,
        _ => 0.0,
    }
}

pub fn compare(a: &Bson, b: &Bson) -> Ordering {
    let (ra, rb) = (type_rank(a), type_rank(b));
    if ra != rb {
        return ra.cmp(&rb);
    }
    match (a, b) {
        (Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_), _) => {
            as_f64(a).partial_cmp(&as_f64(b)).unwrap_or(Ordering::Equal)
        }
        (Bson::String(x), Bson::String(y)) => x.cmp(y),
        (Bson::Document(x), Bson::Document(y)) => {
            for ((ka, va), (kb, vb)) in x.iter().zip(y.iter()) {
                let c = ka.cmp(kb).then_with(|| compare(va, vb));
                if c != Ordering::Equal {
                    return c;
                }
            }
            x.len().cmp(&y.len())
        }
        (Bson::Array(x), Bson::Array(y)) => {
            for (va, vb) in x.iter().zip(y.iter()) {
                let c = compare(va, vb);
                if c != Ordering::Equal {
                    return c;
                }
            }
            x.len().cmp(&y.len())
        }
        (Bson::Binary(x), Bson::Binary(y)) => x
            .bytes
            .len()
            .cmp(&y.bytes.len())
            .then_with(|| x.bytes.cmp(&y.bytes)),
        (Bson::ObjectId(x), Bson::ObjectId(y)) => x.bytes().cmp(&y.bytes()),
        (Bson::Boolean(x), Bson::Boolean(y)) => x.cmp(y),
        (Bson::DateTime(x), Bson::DateTime(y)) => x.cmp(y),
        (Bson::Timestamp(x), Bson::Timestamp(y)) => x.cmp(y),
        _ => Ordering::Equal,
    }
}

/// Looks up a dotted path.
pub fn get_path<'a>(doc: &'a Document, path: &str) -> Option<&'a Bson> {
    let mut cur = doc;
    let mut parts = path.split('.').peekable();
    while let Some(p) = parts.next() {
        let v = cur.get(p)?;
        if parts.peek().is_none() {
            return Some(v);
        }
        match v {
            Bson::Document(d) => cur = d,
            _ => return None,
        }
    }
    None
}

fn values_equal(field: Option<&Bson>, want: &Bson) -> bool {
    match field {
        None => matches!(want, Bson::Null),
        Some(Bson::Array(items)) if !matches!(want, Bson::Array(_)) => {
            items.iter().any(|i| compare(i, want) == Ordering::Equal)
        }
        Some(v) => type_rank(v) == type_rank(want) && compare(v, want) == Ordering::Equal,
    }
}

fn cmp_op(field: Option<&Bson>, want: &Bson, ok: fn(Ordering) -> bool) -> bool {
    let Some(v) = field else { return false };
    let candidates: Vec<&Bson> = match v {
        Bson::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    // Comparisons only match values of the same type family, as in mongod.
    candidates
        .into_iter()
        .any(|c| type_rank(c) == type_rank(want) && ok(compare(c, want)))
}

fn field_matches(field: Option<&Bson>, cond: &Bson) -> Result<bool, String> {
    if let Bson::Document(ops) = cond
        && ops.keys().next().is_some_and(|k| k.starts_with('$'))
    {
        for (op, arg) in ops {
            let ok = match op.as_str() {
                "$eq" => values_equal(field, arg),
                "$ne" => !values_equal(field, arg),
                "$gt" => cmp_op(field, arg, |o| o == Ordering::Greater),
                "$gte" => cmp_op(field, arg, |o| o != Ordering::Less),
                "$lt" => cmp_op(field, arg, |o| o == Ordering::Less),
                "$lte" => cmp_op(field, arg, |o| o != Ordering::Greater),
                "$in" => as_array(arg)?.iter().any(|w| values_equal(field, w)),
                "$nin" => !as_array(arg)?.iter().any(|w| values_equal(field, w)),
                "$exists" => field.is_some() == truthy(arg),
                other => return Err(format!("unknown operator: {other}")),
            };
            if !ok {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    Ok(values_equal(field, cond))
}

fn as_array(v: &Bson) -> Result<&Vec<Bson>, String> {
    match v {
        Bson::Array(a) => Ok(a),
        _ => Err("$in needs an array".into()),
    }
}

pub fn truthy(v: &Bson) -> bool {
    match v {
        Bson::Boolean(b) => *b,
        Bson::Int32(i) => *i != 0,
        Bson::Int64(i) => *i != 0,
        Bson::Double(d) => *d != 0.0,
        Bson::Null | Bson::Undefined => false,
        _ => true,
    }
}

/// Whether `doc` matches `filter`. Errors carry mongod's BadValue message.
pub fn matches(doc: &Document, filter: &Document) -> Result<bool, String> {
    for (k, cond) in filter {
        let ok = match k.as_str() {
            "$and" | "$or" | "$nor" => {
                let mut results = Vec::new();
                for sub in as_array(cond)? {
                    match sub {
                        Bson::Document(d) => results.push(matches(doc, d)?),
                        _ => return Err(format!("{k} argument's entries must be objects")),
                    }
                }
                match k.as_str() {
                    "$and" => results.iter().all(|r| *r),
                    "$or" => results.iter().any(|r| *r),
                    _ => !results.iter().any(|r| *r),
                }
            }
            "$comment" => true,
            _ => field_matches(get_path(doc, k), cond)?,
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

fn set_path(doc: &mut Document, path: &str, value: Bson) {
    match path.split_once('.') {
        None => {
            doc.insert(path, value);
        }
        Some((head, rest)) => {
            if !matches!(doc.get(head), Some(Bson::Document(_))) {
                doc.insert(head, Document::new());
            }
            if let Some(Bson::Document(sub)) = doc.get_mut(head) {
                set_path(sub, rest, value);
            }
        }
    }
}

fn unset_path(doc: &mut Document, path: &str) {
    match path.split_once('.') {
        None => {
            doc.remove(path);
        }
        Some((head, rest)) => {
            if let Some(Bson::Document(sub)) = doc.get_mut(head) {
                unset_path(sub, rest);
            }
        }
    }
}

pub fn is_operator_update(u: &Document) -> bool {
    u.keys().next().is_some_and(|k| k.starts_with('$'))
}

/// Applies an update document (operators or a replacement) to `doc`; `inserting` enables `$setOnInsert`.
pub fn apply_update(doc: &Document, u: &Document, inserting: bool) -> Result<Document, String> {
    if !is_operator_update(u) {
        let mut out = Document::new();
        if let Some(id) = doc.get("_id") {
            out.insert("_id", id.clone());
        }
        for (k, v) in u {
            if k != "_id" || !out.contains_key("_id") {
                out.insert(k.clone(), v.clone());
            }
        }
        return Ok(out);
    }
    // mongod 5.0+ applies the fields of all operators in path order (numeric components by
    // value), so new fields are appended in that order whatever the update's order.
    let mut changes: Vec<(&str, &str, &Bson)> = Vec::new();
    for (op, args) in u {
        let Bson::Document(args) = args else {
            return Err(format!(
                "Modifiers operate on fields but we found type {args} instead"
            ));
        };
        changes.extend(args.iter().map(|(path, v)| (op.as_str(), path.as_str(), v)));
    }
    changes.sort_by(|a, b| compare_paths(a.1, b.1));
    let mut out = doc.clone();
    for (op, path, v) in changes {
        match op {
            "$set" => set_path(&mut out, path, v.clone()),
            "$setOnInsert" => {
                if inserting {
                    set_path(&mut out, path, v.clone())
                }
            }
            "$unset" => unset_path(&mut out, path),
            "$inc" => {
                let cur = get_path(&out, path).cloned().unwrap_or(Bson::Int32(0));
                let new = match (&cur, v) {
                    (Bson::Int32(a), Bson::Int32(b)) => Bson::Int32(a + b),
                    (Bson::Int32(_) | Bson::Int64(_), Bson::Int32(_) | Bson::Int64(_)) => {
                        Bson::Int64(as_f64(&cur) as i64 + as_f64(v) as i64)
                    }
                    _ => Bson::Double(as_f64(&cur) + as_f64(v)),
                };
                set_path(&mut out, path, new);
            }
            other => return Err(format!("Unknown modifier: {other}")),
        }
    }
    Ok(out)
}

/// mongod's order of update paths: component by component, numeric components (array
/// indexes) by value, others by their bytes.
pub fn compare_paths(a: &str, b: &str) -> Ordering {
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    for (x, y) in a.split('.').zip(b.split('.')) {
        let c = if numeric(x) && numeric(y) {
            (x.len(), x).cmp(&(y.len(), y))
        } else {
            x.cmp(y)
        };
        if c != Ordering::Equal {
            return c;
        }
    }
    a.split('.').count().cmp(&b.split('.').count())
}

/// The document an upsert starts from: the filter's equality fields.
pub fn upsert_seed(filter: &Document) -> Document {
    let mut seed = Document::new();
    for (k, v) in filter {
        if k.starts_with('$') {
            continue;
        }
        match v {
            Bson::Document(d) if d.keys().next().is_some_and(|k| k.starts_with('$')) => {
                if let Some(eq) = d.get("$eq") {
                    set_path(&mut seed, k, eq.clone());
                }
            }
            other => set_path(&mut seed, k, other.clone()),
        }
    }
    seed
}

/// Sorts in place; `{$natural: -1}` reverses insertion order.
pub fn sort_docs(docs: &mut [Document], spec: &Document) {
    if let Some(n) = spec.get("$natural") {
        if as_f64(n) < 0.0 {
            docs.reverse();
        }
        return;
    }
    docs.sort_by(|a, b| {
        for (k, dir) in spec {
            let null = Bson::Null;
            let c = compare(
                get_path(a, k).unwrap_or(&null),
                get_path(b, k).unwrap_or(&null),
            );
            let c = if as_f64(dir) < 0.0 { c.reverse() } else { c };
            if c != Ordering::Equal {
                return c;
            }
        }
        Ordering::Equal
    });
}

/// Top-level inclusion or exclusion projection.
pub fn project(doc: Document, proj: &Document) -> Document {
    if proj.is_empty() {
        return doc;
    }
    let including = proj.iter().any(|(k, v)| k != "_id" && truthy(v));
    let keep_id = proj.get("_id").is_none_or(truthy);
    let mut out = Document::new();
    for (k, v) in doc {
        let listed = proj.get(&k).map(truthy);
        let keep = if k == "_id" {
            keep_id
        } else if including {
            listed == Some(true)
        } else {
            listed != Some(false)
        };
        if keep {
            out.insert(k, v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{Timestamp, doc};

    #[test]
    fn filters_compare_like_mongod() {
        let d = doc! {"a": 5, "ts": Timestamp{time: 10, increment: 2}, "tags": ["x", "y"], "s": {"n": 1}};
        assert!(matches(&d, &doc! {"a": {"$gt": 4.5}}).unwrap());
        assert!(!matches(&d, &doc! {"a": {"$gt": "4"}}).unwrap());
        assert!(matches(&d, &doc! {"ts": {"$gt": Timestamp{time: 10, increment: 1}}}).unwrap());
        assert!(matches(&d, &doc! {"tags": "y", "s.n": 1}).unwrap());
        assert!(
            matches(
                &d,
                &doc! {"$or": [{"a": 1}, {"missing": {"$exists": false}}]}
            )
            .unwrap()
        );
        assert!(matches(&d, &doc! {"a": {"$bad": 1}}).is_err());
    }

    #[test]
    fn updates_apply() {
        let d = doc! {"_id": 1, "n": 1, "x": {"y": 2}};
        let out = apply_update(
            &d,
            &doc! {"$inc": {"n": 2}, "$set": {"x.z": 3}, "$unset": {"x.y": ""}},
            false,
        )
        .unwrap();
        assert_eq!(out, doc! {"_id": 1, "n": 3, "x": {"z": 3}});
        let out = apply_update(&d, &doc! {"k": 1}, false).unwrap();
        assert_eq!(out, doc! {"_id": 1, "k": 1});
    }
}
