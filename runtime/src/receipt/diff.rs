//! Which hashed fields differ between two receipts, named by path, causes first.

use super::Receipt;

impl Receipt {
    /// The hashed fields that differ between `self` (expected) and `other` (actual), as
    /// `(field, expected, actual)`, with nested fields named by path (`limits.fuel`,
    /// `inputs[books].root`).
    pub fn diff(&self, other: &Receipt) -> Vec<FieldDiff> {
        let (a, b) = (hashed_json(self), hashed_json(other));
        let mut out = Vec::new();
        diff_json("", &a, &b, &mut out);
        // Causes first (what was run, on what, how), then their consequences.
        const ORDER: &[&str] = &[
            "version",
            "runtime",
            "environment",
            "algorithm",
            "args",
            "inputs",
            "limits",
            "seed",
            "outcome",
            "fuel_consumed",
            "outputs_root",
            "stdout",
            "stderr",
            "deterministic",
        ];
        out.sort_by_key(|d| ORDER.iter().position(|p| d.field.starts_with(p)).unwrap_or(ORDER.len()));
        out
    }
}

/// One field that differs between two receipts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldDiff {
    /// The field's path (`limits.fuel`, `inputs[books].root`).
    pub field: String,
    /// Its value in the expected receipt, as JSON (`(absent)` when missing).
    pub expected: String,
    /// Its value in the actual receipt, as JSON (`(absent)` when missing).
    pub actual: String,
}

impl std::fmt::Display for FieldDiff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: expected {}, got {}", self.field, self.expected, self.actual)
    }
}

/// The hashed part of a receipt as JSON, with inputs keyed by name for readable diffs, and
/// their names in order beside (`inputs_order`): the hash covers the list, so two receipts whose
/// inputs differ only in order or by a repeated name differ here too.
fn hashed_json(r: &Receipt) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if let Some(obj) = v.as_object_mut() {
        for unhashed in ["receipt_hash", "signatures", "meta"] {
            obj.remove(unhashed);
        }
        let inputs: serde_json::Map<String, serde_json::Value> =
            r.inputs.iter().map(|i| (i.name.clone(), serde_json::json!({ "root": i.root }))).collect();
        let order: Vec<&str> = r.inputs.iter().map(|i| i.name.as_str()).collect();
        obj.insert("inputs_order".into(), serde_json::json!(order));
        obj.insert("inputs".into(), serde_json::Value::Object(inputs));
    }
    v
}

fn diff_json(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<FieldDiff>) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let sub = if path.is_empty() {
                    k.clone()
                } else if path == "inputs" {
                    format!("inputs[{k}]")
                } else {
                    format!("{path}.{k}")
                };
                diff_json(&sub, x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null), out);
            }
        }
        _ if a != b => out.push(FieldDiff {
            field: path.to_string(),
            expected: if a.is_null() { "(absent)".into() } else { a.to_string() },
            actual: if b.is_null() { "(absent)".into() } else { b.to_string() },
        }),
        _ => {}
    }
}
