//! Version vectors on the command line and in output: `<author hex>:<seq>,...`, or the JSON
//! object `{"<author hex>": seq, ...}` that `verify`, `export` and `import` print (a whole
//! `--json` report with a `vector` member is accepted too).

use anyhow::{bail, Context};
use casesync_engine::model::ids::AuthorId;
use casesync_engine::model::vector_clock::VersionVector;

/// Parses a vector in either form.
pub fn parse_vector(text: &str) -> anyhow::Result<VersionVector> {
    let text = text.trim();
    if text.starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(text).context("the vector is not valid JSON")?;
        return from_json(&value);
    }
    let mut vector = VersionVector::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (author, seq) = pair.split_once(':').with_context(|| format!("{pair:?} is not <author hex>:<seq>"))?;
        let author = AuthorId::from_hex(author).with_context(|| format!("{pair:?}: bad author"))?;
        let seq: u64 = seq.trim().parse().with_context(|| format!("{pair:?}: bad seq"))?;
        vector.raise(author, seq);
    }
    Ok(vector)
}

fn from_json(value: &serde_json::Value) -> anyhow::Result<VersionVector> {
    let Some(object) = value.as_object() else { bail!("the vector must be a JSON object") };
    if let Some(inner) = object.get("vector") {
        return from_json(inner);
    }
    let mut vector = VersionVector::new();
    for (author, seq) in object {
        let author = AuthorId::from_hex(author).with_context(|| format!("{author:?} is not an author key"))?;
        let seq = seq.as_u64().with_context(|| format!("seq of {author} is not a number"))?;
        vector.raise(author, seq);
    }
    Ok(vector)
}

/// The JSON form: `{"<author hex>": seq}` in author order.
pub fn vector_json(vector: &VersionVector) -> serde_json::Value {
    serde_json::Value::Object(vector.iter().map(|(a, s)| (a.to_hex(), serde_json::Value::from(*s))).collect())
}

/// The text form: `<author hex>:<seq>,...`.
pub fn vector_text(vector: &VersionVector) -> String {
    vector.iter().map(|(a, s)| format!("{}:{s}", a.to_hex())).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_round_trip() {
        let vector: VersionVector = [(AuthorId([1; 32]), 5), (AuthorId([2; 32]), 9)].into_iter().collect();
        assert_eq!(parse_vector(&vector_text(&vector)).unwrap(), vector);
        assert_eq!(parse_vector(&vector_json(&vector).to_string()).unwrap(), vector);
        let report = serde_json::json!({ "events": 3, "vector": vector_json(&vector) });
        assert_eq!(parse_vector(&report.to_string()).unwrap(), vector);
        assert_eq!(parse_vector("").unwrap(), VersionVector::new());
        assert!(parse_vector("abc:1").is_err());
    }
}
