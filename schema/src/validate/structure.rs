//! The structure pass: walks a document tree against the generated JSON Schema and collects
//! every type error, unknown key and missing field, with positions and "did you mean" hints.
//!
//! It understands the subset of JSON Schema that schemars emits for our types: `$ref`,
//! `type`, `enum`, `const`, `properties`, `required`, `additionalProperties`, `items`,
//! `oneOf`/`anyOf`, `minimum`/`maximum` and integer `format`s.

use serde_json::Value as J;

use super::error::hint;
use super::node::{Node, Pos, Value};

/// A problem found by the walk, before it is tied to a file and document.
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    pub pos: Pos,
    pub field: String,
    pub message: String,
}

pub struct Walker<'a> {
    root: &'a J,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl<'a> Walker<'a> {
    pub fn new(root: &'a J) -> Self {
        Walker { root }
    }

    /// Follows a local `$ref` such as `#/$defs/ClusterSpec`.
    fn resolve(&self, schema: &'a J) -> &'a J {
        let mut s = schema;
        for _ in 0..32 {
            match s.get("$ref").and_then(J::as_str) {
                Some(r) => {
                    let pointer = r.trim_start_matches('#');
                    match self.root.pointer(pointer) {
                        Some(target) => s = target,
                        None => return s,
                    }
                }
                None => return s,
            }
        }
        s
    }

    pub fn walk(&self, schema: &'a J, node: &Node, path: &str, out: &mut Vec<Issue>) {
        let schema = self.resolve(schema);
        let issue = |message: String| Issue {
            pos: node.pos,
            field: path.to_string(),
            message,
        };
        if let Some(branches) = schema
            .get("oneOf")
            .or_else(|| schema.get("anyOf"))
            .and_then(J::as_array)
        {
            self.walk_branches(branches, node, path, out);
            return;
        }
        if let Some(c) = schema.get("const") {
            if node.to_json() != *c {
                out.push(issue(format!("must be {c}, found {}", show(node))));
            }
            return;
        }
        if let Some(values) = schema.get("enum").and_then(J::as_array) {
            let values: Vec<&J> = values.iter().collect();
            if let Some(problem) = not_one_of(node, &values) {
                out.push(issue(problem));
            }
            return;
        }
        if let Some(t) = schema.get("type") {
            let types: Vec<&str> = match t {
                J::String(s) => vec![s.as_str()],
                J::Array(a) => a.iter().filter_map(J::as_str).collect(),
                _ => vec![],
            };
            if !types.is_empty() && !types.iter().any(|t| type_matches(t, &node.value)) {
                let wanted: Vec<&str> = types
                    .iter()
                    .filter(|t| **t != "null")
                    .map(|t| type_words(t))
                    .collect();
                out.push(issue(format!(
                    "expected {}, found {}",
                    wanted.join(" or "),
                    show(node)
                )));
                return;
            }
        }
        match &node.value {
            Value::Map(entries) => self.walk_map(schema, node, entries, path, out),
            Value::Seq(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.walk(item_schema, item, &join(path, &i.to_string()), out);
                    }
                }
            }
            Value::Int(i) => {
                if let Some(problem) = integer_problem(schema, *i) {
                    out.push(issue(problem));
                }
            }
            _ => {}
        }
    }

    fn walk_map(
        &self,
        schema: &'a J,
        node: &Node,
        entries: &[(Node, Node)],
        path: &str,
        out: &mut Vec<Issue>,
    ) {
        let empty = serde_json::Map::new();
        let props = schema
            .get("properties")
            .and_then(J::as_object)
            .unwrap_or(&empty);
        let additional = schema.get("additionalProperties");
        for (key, value) in entries {
            let name = key.key_text();
            if let Some(prop) = props.get(&name) {
                self.walk(prop, value, &join(path, &name), out);
            } else if let Some(extra @ J::Object(_)) = additional {
                self.walk(extra, value, &join(path, &name), out);
            } else if additional == Some(&J::Bool(false)) {
                let known: Vec<&str> = props.keys().map(String::as_str).collect();
                out.push(Issue {
                    pos: key.pos,
                    field: path.to_string(),
                    message: format!(
                        "unknown field {name:?}{}; known fields are {}",
                        hint(&name, &known),
                        known.join(", ")
                    ),
                });
            }
        }
        if let Some(required) = schema.get("required").and_then(J::as_array) {
            for field in required.iter().filter_map(J::as_str) {
                if !entries.iter().any(|(k, _)| k.key_text() == field) {
                    out.push(Issue {
                        pos: node.pos,
                        field: path.to_string(),
                        message: format!("missing required field {field:?}"),
                    });
                }
            }
        }
    }

    fn walk_branches(&self, branches: &'a [J], node: &Node, path: &str, out: &mut Vec<Issue>) {
        let branches: Vec<&J> = branches.iter().map(|b| self.resolve(b)).collect();
        // A tagged union (our `kind`): pick the branch by its discriminator, so the user
        // hears about their document's fields, not about every other kind.
        if let Value::Map(_) = node.value
            && let Some((key, tags)) = discriminator(&branches)
        {
            let Some(tag_node) = node.get(key) else {
                let names: Vec<&str> = tags.iter().map(|(t, _)| *t).collect();
                out.push(Issue {
                    pos: node.pos,
                    field: path.to_string(),
                    message: format!(
                        "missing required field {key:?} (one of {})",
                        names.join(", ")
                    ),
                });
                return;
            };
            let given = tag_node.as_str().unwrap_or_default();
            match tags.iter().find(|(t, _)| *t == given) {
                Some((_, branch)) => self.walk(branch, node, path, out),
                None => {
                    let names: Vec<&str> = tags.iter().map(|(t, _)| *t).collect();
                    out.push(Issue {
                        pos: tag_node.pos,
                        field: join(path, key),
                        message: format!(
                            "{} is not a known {key}{}; the kinds are {}",
                            show(tag_node),
                            hint(given, &names),
                            names.join(", ")
                        ),
                    });
                }
            }
            return;
        }
        // A plain enum whose variants carry docs comes out as one `const` per branch.
        let consts: Option<Vec<&J>> = branches
            .iter()
            .map(|b| b.get("const").filter(|_| b.get("properties").is_none()))
            .collect();
        if let Some(values) = consts {
            if let Some(problem) = not_one_of(node, &values) {
                out.push(Issue {
                    pos: node.pos,
                    field: path.to_string(),
                    message: problem,
                });
            }
            return;
        }
        // Otherwise the first branch that fits wins; if none does, report the branch that
        // got furthest (fewest issues), which is the one the user most likely meant.
        let mut best: Option<Vec<Issue>> = None;
        for branch in branches {
            let mut issues = Vec::new();
            self.walk(branch, node, path, &mut issues);
            if issues.is_empty() {
                return;
            }
            if best.as_ref().is_none_or(|b| issues.len() < b.len()) {
                best = Some(issues);
            }
        }
        out.extend(best.unwrap_or_default());
    }
}

/// Why `node` is none of `values`, or `None` when it is one of them.
fn not_one_of(node: &Node, values: &[&J]) -> Option<String> {
    let json = node.to_json();
    if values.contains(&&json) {
        return None;
    }
    let names: Vec<&str> = values.iter().filter_map(|v| v.as_str()).collect();
    if let [only] = names.as_slice() {
        return Some(format!("must be {only:?}, found {}", show(node)));
    }
    let suggestion = node.as_str().map(|s| hint(s, &names)).unwrap_or_default();
    Some(format!(
        "{} is not one of {}{suggestion}",
        show(node),
        names.join(", ")
    ))
}

/// `(property, [(tag value, branch)])` when every branch fixes one property with `const`.
fn discriminator<'a>(branches: &[&'a J]) -> Option<(&'a str, Vec<(&'a str, &'a J)>)> {
    let first = branches.first()?;
    let props = first.get("properties")?.as_object()?;
    let key = props
        .iter()
        .find(|(_, p)| p.get("const").is_some())
        .map(|(k, _)| k.as_str())?;
    let mut tags = Vec::new();
    for b in branches {
        let tag = b.pointer(&format!("/properties/{key}/const"))?.as_str()?;
        tags.push((tag, *b));
    }
    Some((key, tags))
}

fn type_matches(t: &str, v: &Value) -> bool {
    matches!(
        (t, v),
        ("object", Value::Map(_))
            | ("array", Value::Seq(_))
            | ("string", Value::Str(_))
            | ("integer", Value::Int(_))
            | ("number", Value::Int(_) | Value::Float(_))
            | ("boolean", Value::Bool(_))
            | ("null", Value::Null)
    )
}

fn type_words(t: &str) -> &'static str {
    match t {
        "object" => "a mapping",
        "array" => "a list",
        "string" => "a string",
        "integer" => "an integer",
        "number" => "a number",
        "boolean" => "true or false",
        "null" => "null",
        _ => "a value",
    }
}

/// A short rendering of what the user wrote, for messages.
fn show(node: &Node) -> String {
    match &node.value {
        Value::Str(s) => format!("{s:?}"),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        other => other.type_name().to_string(),
    }
}

fn integer_problem(schema: &J, i: i128) -> Option<String> {
    let (lo, hi): (i128, i128) = match schema.get("format").and_then(J::as_str) {
        Some("uint32") => (0, u32::MAX.into()),
        Some("int32") => (i32::MIN.into(), i32::MAX.into()),
        Some("uint64" | "uint") => (0, u64::MAX.into()),
        Some("int64" | "int") => (i64::MIN.into(), i64::MAX.into()),
        _ => (i128::MIN, i128::MAX),
    };
    let lo = schema
        .get("minimum")
        .and_then(J::as_f64)
        .map_or(lo, |m| lo.max(m.ceil() as i128));
    let hi = schema
        .get("maximum")
        .and_then(J::as_f64)
        .map_or(hi, |m| hi.min(m.floor() as i128));
    if i < lo {
        Some(format!("{i} is too small; the minimum is {lo}"))
    } else if i > hi {
        Some(format!("{i} is too large; the maximum is {hi}"))
    } else {
        None
    }
}
