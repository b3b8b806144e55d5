//! The queries of docs/data-model.md's "Query cookbook", read from that page itself: what a test
//! runs is what the documentation shows. Std only, so `cargo xtask bench --data-model` includes this
//! file too (`#[path]`) and times the same queries.

/// One cookbook entry: the question in words (its `-- ` comment) and the CQL, verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub question: String,
    pub cql: String,
}

/// The data-model page of the documentation, which holds the cookbook.
pub fn readme() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/data-model.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// The entries of the `sql` blocks under the `### Query cookbook` heading of `readme`: each
/// `-- question` line followed by one statement ending in `;`.
pub fn parse(readme: &str) -> Vec<Query> {
    let section = readme
        .split("\n### Query cookbook\n")
        .nth(1)
        .unwrap_or_default();
    let section = section.split("\n## ").next().unwrap_or_default();
    let section = section.split("\n### ").next().unwrap_or_default();
    let mut out = Vec::new();
    let mut in_block = false;
    let mut question: Option<String> = None;
    let mut cql = String::new();
    for line in section.lines() {
        let line = line.trim();
        if line.starts_with("```") {
            in_block = line == "```sql";
            continue;
        }
        if !in_block || line.is_empty() {
            continue;
        }
        if let Some(q) = line.strip_prefix("-- ") {
            question = Some(q.to_owned());
            continue;
        }
        if !cql.is_empty() {
            cql.push(' ');
        }
        cql.push_str(line);
        if line.ends_with(';') {
            out.push(Query {
                question: question.take().unwrap_or_default(),
                cql: std::mem::take(&mut cql),
            });
        }
    }
    out
}
