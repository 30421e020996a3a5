//! mongod 5.0+'s `$v: 2` update oplog entries: the diff an operator update (`$set`, `$unset`,
//! `$inc`) logs, `{d: {f: false}, u: {f: v}, i: {f: v}, s<f>: {…}}`, and applying such a diff
//! (array diffs `{a: true, l, u<n>, s<n>}` included) wherever oplog entries are applied.

use crate::query::{compare_paths, get_path};
use bson::{Bson, Document, doc};

/// The diff sections of one level, in the order mongod serializes them.
#[derive(Default)]
struct Level {
    deletes: Document,
    updates: Document,
    inserts: Document,
    children: Vec<(String, Level)>,
}

impl Level {
    fn child(&mut self, name: &str) -> &mut Level {
        let at = match self.children.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                self.children.push((name.to_string(), Level::default()));
                self.children.len() - 1
            }
        };
        &mut self.children[at].1
    }

    fn is_empty(&self) -> bool {
        self.deletes.is_empty()
            && self.updates.is_empty()
            && self.inserts.is_empty()
            && self.children.iter().all(|(_, c)| c.is_empty())
    }

    fn to_doc(&self) -> Document {
        let mut d = Document::new();
        for (key, section) in [
            ("d", &self.deletes),
            ("u", &self.updates),
            ("i", &self.inserts),
        ] {
            if !section.is_empty() {
                d.insert(key, section.clone());
            }
        }
        for (name, c) in self.children.iter().filter(|(_, c)| !c.is_empty()) {
            d.insert(format!("s{name}"), c.to_doc());
        }
        d
    }
}

enum Change {
    Delete,
    Update(Bson),
    Insert(Bson),
}

/// Records `change` at `parts` unless an enclosing field is already set whole.
fn record(root: &mut Level, parts: &[&str], change: Change) {
    let Some((last, parents)) = parts.split_last() else {
        return;
    };
    let mut level = root;
    for p in parents {
        if level.updates.contains_key(*p) || level.inserts.contains_key(*p) {
            return;
        }
        level = level.child(p);
    }
    match change {
        Change::Delete => level.deletes.insert(*last, false),
        Change::Update(v) => level.updates.insert(*last, v),
        Change::Insert(v) => level.inserts.insert(*last, v),
    };
}

/// The `$v: 2` entry body (`{$v: 2, diff}`) of an operator update that turned `old` into
/// `new`, as mongod's update driver logs it: a field the update sets is `u` when it was
/// there and `i` (at the first missing level) when it was not, an unset one is `d`, and the
/// levels above are `s<field>` sub-diffs. `None` when nothing changed.
pub fn update_entry(old: &Document, update: &Document, new: &Document) -> Option<Document> {
    let mut paths: Vec<(&str, &str)> = update
        .iter()
        .filter(|(op, _)| op.as_str() != "$setOnInsert")
        .filter_map(|(op, args)| Some((op.as_str(), args.as_document()?)))
        .flat_map(|(op, args)| args.keys().map(move |p| (op, p.as_str())))
        .collect();
    paths.sort_by(|a, b| compare_paths(a.1, b.1));
    let mut root = Level::default();
    for (op, path) in paths {
        let parts: Vec<&str> = path.split('.').collect();
        // The first level that is missing, or is not a document to descend into.
        let mut cur = Some(old);
        let mut depth = 0;
        while depth + 1 < parts.len() {
            match cur.and_then(|d| d.get(parts[depth])) {
                Some(Bson::Document(sub)) => cur = Some(sub),
                _ => break,
            }
            depth += 1;
        }
        let here = &parts[..=depth];
        let existed = cur.is_some_and(|d| d.contains_key(parts[depth]));
        let after = get_path(new, &here.join(".")).cloned();
        if op == "$unset" {
            if existed && depth + 1 == parts.len() {
                record(&mut root, here, Change::Delete);
            }
            continue;
        }
        let before = cur.and_then(|d| d.get(parts[depth]));
        match (after, existed) {
            (Some(v), true) if before != Some(&v) => record(&mut root, here, Change::Update(v)),
            (Some(v), false) => record(&mut root, here, Change::Insert(v)),
            _ => {}
        }
    }
    (!root.is_empty()).then(|| doc! {"$v": 2, "diff": root.to_doc()})
}

/// Applies a `$v: 2` diff to `doc`, as mongod's diff applier does: deletes go, updates stay
/// in place (or are appended when missing), sub-diffs apply to the fields they name, and
/// inserts are appended (moved to the end when present, which keeps replays idempotent).
pub fn apply(doc: &Document, diff: &Document) -> Document {
    let section = |k: &str| diff.get_document(k).cloned().unwrap_or_default();
    let (deletes, updates, inserts) = (section("d"), section("u"), section("i"));
    let mut out = Document::new();
    for (k, v) in doc {
        if deletes.contains_key(k) || inserts.contains_key(k) {
            continue;
        }
        if let Some(u) = updates.get(k) {
            out.insert(k.clone(), u.clone());
        } else if let Ok(sub) = diff.get_document(format!("s{k}")) {
            out.insert(k.clone(), apply_sub(v, sub));
        } else {
            out.insert(k.clone(), v.clone());
        }
    }
    for (k, v) in updates.iter().chain(inserts.iter()) {
        if !out.contains_key(k) {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

/// A sub-diff applied to one field: an array diff (`a: true`) to an array, a document diff to
/// a document; anything else (the field changed type since, in a replay) is left as it is.
fn apply_sub(v: &Bson, sub: &Document) -> Bson {
    match v {
        Bson::Document(d) if !sub.get_bool("a").unwrap_or(false) => Bson::Document(apply(d, sub)),
        Bson::Array(items) if sub.get_bool("a").unwrap_or(false) => {
            let mut items = items.clone();
            if let Some(len) = sub
                .get("l")
                .and_then(|l| l.as_i64().or(l.as_i32().map(i64::from)))
            {
                items.resize(len.max(0) as usize, Bson::Null);
            }
            for (k, val) in sub {
                let (kind, idx) = k.split_at(1.min(k.len()));
                let Ok(i) = idx.parse::<usize>() else {
                    continue;
                };
                if items.len() <= i {
                    items.resize(i + 1, Bson::Null);
                }
                match (kind, val) {
                    ("u", v) => items[i] = v.clone(),
                    ("s", Bson::Document(s)) => items[i] = apply_sub(&items[i], s),
                    _ => {}
                }
            }
            Bson::Array(items)
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::apply_update;

    fn check(old: Document, update: Document, want_diff: Document) {
        let new = apply_update(&old, &update, false).unwrap();
        let entry = update_entry(&old, &update, &new).expect("a change");
        assert_eq!(entry, doc! {"$v": 2, "diff": want_diff.clone()});
        assert_eq!(
            apply(&old, &want_diff),
            new,
            "applying gives the update's result"
        );
        assert_eq!(apply(&new, &want_diff), new, "and again changes nothing");
    }

    #[test]
    fn operator_updates_log_mongods_diffs() {
        let old = doc! {"_id": 1, "n": 1, "x": {"y": 2}, "gone": true};
        check(
            old.clone(),
            doc! {"$inc": {"n": 2}, "$set": {"x.z": 3, "new": "v"}, "$unset": {"gone": "", "nope": ""}},
            doc! {"d": {"gone": false}, "u": {"n": 3}, "i": {"new": "v"}, "sx": {"i": {"z": 3}}},
        );
        check(
            old.clone(),
            doc! {"$set": {"a.b.c": 1, "x.y": 5}},
            doc! {"i": {"a": {"b": {"c": 1}}}, "sx": {"u": {"y": 5}}},
        );
        check(
            old.clone(),
            doc! {"$unset": {"x.y": 1}},
            doc! {"sx": {"d": {"y": false}}},
        );
        // mongod 5.0+ processes fields in lexicographic order: `a` is appended before `b`.
        let new = apply_update(&doc! {"_id": 1}, &doc! {"$set": {"b": 1, "a": 1}}, false).unwrap();
        assert_eq!(new, doc! {"_id": 1, "a": 1, "b": 1});
        let same = apply_update(&old, &doc! {"$set": {"n": 1}}, false).unwrap();
        assert!(update_entry(&old, &doc! {"$set": {"n": 1}}, &same).is_none());
    }

    #[test]
    fn array_diffs_apply() {
        let d = doc! {"_id": 1, "arr": [1, {"k": 1}, 3]};
        let diff = doc! {"sarr": {"a": true, "l": 2, "u0": 9, "s1": {"u": {"k": 2}}}};
        assert_eq!(apply(&d, &diff), doc! {"_id": 1, "arr": [9, {"k": 2}]});
    }
}
