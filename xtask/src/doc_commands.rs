//! Every `cargo xtask …` and `cargo run -p <service> …` command the documents show, parsed by
//! the command line it names (`cargo xtask docs --check`): a flag, subcommand, value or
//! environment variable that the code no longer has fails CI, with the file and line. So does
//! a default the prose states, "`READER_TRANSACTION_MAX_RECORDS` (50,000)", that differs from
//! the code's.
//!
//! Parsing, not running: a command that would start a stack or a service is checked against
//! its clap definition (every flag, value parser and required argument), and each `VAR=value`
//! in front of it against the settings of what it starts. `docker compose … up` lines are
//! checked by `docker/check-profiles.sh` with `docker compose config`.

use std::{fs, path::Path};

use anyhow::Context as _;
use clap::{Command, CommandFactory};

/// The documents whose commands are checked, relative to the repository root: all of
/// `docs/*.md` besides these.
const DOCUMENTS: &[&str] = &["README.md", "terminal.txt", "docker/README.md"];

/// Variables a documented command may set that no service defines: read by libraries or the
/// shell.
const EXTERNAL_ENV: &[&str] = &["RUST_LOG", "MALLOC_ARENA_MAX", "RUSTC_BOOTSTRAP"];

/// One documented command: where it is and its words.
#[derive(Debug)]
pub struct Documented {
    pub at: String,
    pub words: Vec<String>,
}

/// The command lines of a document: in Markdown the lines of fenced code blocks, in a text
/// file every line; continuation lines (`\`) joined.
pub fn commands(name: &str, text: &str) -> Vec<Documented> {
    let markdown = name.ends_with(".md");
    let mut out = Vec::new();
    let mut in_block = !markdown;
    let mut pending: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        if markdown && line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if !in_block {
            continue;
        }
        let (start, mut joined) = pending.take().unwrap_or((i + 1, String::new()));
        joined.push_str(line.trim());
        if let Some(stripped) = joined.strip_suffix('\\') {
            pending = Some((start, format!("{stripped} ")));
            continue;
        }
        if let Some(words) = shlex::split(&joined) {
            // `a | b` and `a && b`: each part is a command of its own.
            for part in words.split(|w| w == "|" || w == "&&" || w == ";") {
                if !part.is_empty() {
                    out.push(Documented {
                        at: format!("{name}:{start}"),
                        words: part.to_vec(),
                    });
                }
            }
        }
    }
    out
}

/// What a command runs, if it is one of ours: the binary's name and its arguments.
fn ours(words: &[String]) -> Option<(&'static str, Vec<String>, Vec<String>)> {
    let env: Vec<String> = words
        .iter()
        .take_while(|w| is_assignment(w))
        .map(|w| w.split('=').next().unwrap_or_default().to_owned())
        .collect();
    let rest: Vec<String> = words[env.len()..].iter().map(|w| unbracket(w)).collect();
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    match rest.as_slice() {
        ["cargo", "xtask", args @ ..] => Some(("xtask", env, to_vec(args))),
        ["cargo", "run", args @ ..] => {
            let mut args = args.to_vec();
            args.retain(|a| *a != "--release" && *a != "-q" && *a != "--quiet");
            let (name, args) = match args.as_slice() {
                ["-p", name, rest @ ..] | ["--package", name, rest @ ..] => (*name, rest),
                _ => return None,
            };
            let args = match args {
                ["--", rest @ ..] => rest,
                rest => rest,
            };
            let name = match name {
                "producer" => "producer",
                "stream-reader" => "stream-reader",
                "cassandra-writer" => "cassandra-writer",
                _ => return None,
            };
            Some((name, env, to_vec(args)))
        }
        _ => None,
    }
}

fn to_vec(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_')
    })
}

/// `[--clean]` in a synopsis is an optional part: checked as if given.
fn unbracket(word: &str) -> String {
    let word = word
        .strip_prefix("[-")
        .map_or(word.to_owned(), |w| format!("-{w}"));
    word.strip_suffix(']')
        .filter(|_| !word.contains('['))
        .map_or(word.clone(), str::to_owned)
}

fn command_of(name: &str) -> Command {
    match name {
        "xtask" => crate::Cli::command(),
        "producer" => producer::Cli::command(),
        "stream-reader" => stream_reader::ReaderArgs::command(),
        _ => cassandra_writer::Cli::command(),
    }
}

/// Every environment variable a command (and its subcommands) reads.
fn env_names(cmd: &Command, out: &mut Vec<String>) {
    for a in cmd.get_arguments() {
        if let Some(e) = a.get_env() {
            out.push(e.to_string_lossy().into_owned());
        }
    }
    for sub in cmd.get_subcommands() {
        env_names(sub, out);
    }
}

/// The problems of one documented command, if it is ours.
pub fn check(doc: &Documented) -> Option<String> {
    let (name, env, args) = ours(&doc.words)?;
    let mut argv = vec![name.to_owned()];
    argv.extend(args);
    if let Err(error) = command_of(name).try_get_matches_from(&argv) {
        use clap::error::ErrorKind::{DisplayHelp, DisplayVersion};
        if !matches!(error.kind(), DisplayHelp | DisplayVersion) {
            let first = error.to_string();
            let first = first.lines().next().unwrap_or_default().to_owned();
            return Some(format!("{}: `{}`: {first}", doc.at, doc.words.join(" ")));
        }
    }
    // What a variable set in front may name: the settings of the binary, or with `xtask`
    // (which passes its environment to the services) of any service.
    let mut known: Vec<String> = EXTERNAL_ENV.iter().map(|s| (*s).to_owned()).collect();
    let binaries: &[&str] = if name == "xtask" {
        &["producer", "stream-reader", "cassandra-writer"]
    } else {
        std::slice::from_ref(&name)
    };
    for b in binaries {
        env_names(&command_of(b), &mut known);
    }
    let unknown: Vec<&String> = env.iter().filter(|e| !known.contains(e)).collect();
    (!unknown.is_empty()).then(|| {
        format!(
            "{}: `{}`: {unknown:?} is not a setting of {}",
            doc.at,
            doc.words.join(" "),
            binaries.join(", ")
        )
    })
}

/// Every setting's default, by environment variable, over all binaries; a variable two
/// binaries default differently (`METRICS_ADDR`) has none here.
fn defaults() -> std::collections::BTreeMap<String, Option<String>> {
    fn walk(cmd: &Command, out: &mut std::collections::BTreeMap<String, Option<String>>) {
        for a in cmd.get_arguments() {
            let (Some(env), [default]) = (a.get_env(), a.get_default_values()) else {
                continue;
            };
            let (env, default) = (
                env.to_string_lossy().into_owned(),
                default.to_string_lossy().into_owned(),
            );
            out.entry(env)
                .and_modify(|d| {
                    if d.as_deref() != Some(default.as_str()) {
                        *d = None;
                    }
                })
                .or_insert(Some(default));
        }
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut out = std::collections::BTreeMap::new();
    for b in ["producer", "stream-reader", "cassandra-writer"] {
        walk(&command_of(b), &mut out);
    }
    out
}

/// A stated value, "50,000", "100 ms", "2 s", "64 KiB", in the unit its setting's name gives
/// (`_MS`, `_SECS`, `_BYTES`); `None` when it is not a plain quantity.
fn quantity(setting: &str, stated: &str) -> Option<f64> {
    let stated = stated.strip_prefix("default ").unwrap_or(stated).trim();
    let (number, unit) = stated.split_once(' ').unwrap_or((stated, ""));
    let number: f64 = number.replace(',', "").parse().ok()?;
    let scale = match (unit, setting) {
        ("", _) => 1.0,
        ("ms", s) if s.ends_with("_MS") => 1.0,
        ("s", s) if s.ends_with("_MS") => 1_000.0,
        ("s", s) if s.ends_with("_SECS") => 1.0,
        ("min", s) if s.ends_with("_SECS") => 60.0,
        ("KiB", _) => 1024.0,
        ("MiB", _) => 1024.0 * 1024.0,
        _ => return None,
    };
    Some(number * scale)
}

/// Defaults the prose states as "`SETTING` (value)" that differ from the code's.
pub fn check_defaults(name: &str, text: &str) -> Vec<String> {
    let defaults = defaults();
    let pattern = regex::Regex::new(r"`([A-Z][A-Z0-9_]+)`,? \(([^)]*)\)").expect("pattern");
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        for m in pattern.captures_iter(line) {
            let (setting, stated) = (&m[1], &m[2]);
            let Some(Some(default)) = defaults.get(setting) else {
                continue;
            };
            let Some(stated_value) = quantity(setting, stated) else {
                continue;
            };
            if default.parse::<f64>().ok() != Some(stated_value) {
                out.push(format!(
                    "{name}:{}: `{setting}` ({stated}) but its default is {default}",
                    i + 1
                ));
            }
        }
    }
    out
}

/// The documented commands of the repository at `root`, and the problems found.
pub fn check_all(root: &Path) -> anyhow::Result<(usize, Vec<String>)> {
    let mut names: Vec<String> = DOCUMENTS.iter().map(|s| (*s).to_owned()).collect();
    let mut pages: Vec<String> = fs::read_dir(root.join("docs"))
        .context("read docs/")?
        .filter_map(|e| e.ok())
        .map(|e| format!("docs/{}", e.file_name().to_string_lossy()))
        .filter(|n| n.ends_with(".md"))
        .collect();
    pages.sort();
    names.extend(pages);
    let mut checked = 0;
    let mut problems = Vec::new();
    for name in names {
        let text = fs::read_to_string(root.join(&name)).with_context(|| format!("read {name}"))?;
        for doc in commands(&name, &text) {
            if ours(&doc.words).is_some() {
                checked += 1;
            }
            problems.extend(check(&doc));
        }
        if name != "docs/configuration.md" {
            problems.extend(check_defaults(&name, &text));
        }
    }
    Ok((checked, problems))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        commands("x.txt", text).iter().filter_map(check).collect()
    }

    #[test]
    fn documented_commands_that_exist_pass() {
        let text = "cargo xtask services start [--clean]   # a comment\n\
                    READER_DELIVERY=exactly-once cargo run -p stream-reader\n\
                    cat a.jsonl | cargo run -p producer -- --input -\n\
                    cargo run -p producer -- --help\n";
        assert_eq!(problems(text), Vec::<String>::new());
    }

    #[test]
    fn a_flag_value_or_variable_the_code_lacks_fails() {
        let text = "cargo xtask services begin\n\
                    cargo run -p producer -- --rat 5\n\
                    cargo run -p stream-reader -- --delivery twice\n\
                    READER_DELIVERY_MODE=x cargo run -p stream-reader\n";
        let found = problems(text);
        assert_eq!(found.len(), 4, "{found:#?}");
        assert!(found[0].starts_with("x.txt:1: `cargo xtask services begin`"));
        assert!(found[3].contains("READER_DELIVERY_MODE"), "{}", found[3]);
    }

    #[test]
    fn a_stated_default_must_be_the_codes() {
        let text = "every `READER_TRANSACTION_INTERVAL_MS` (100 ms) or \
                    `READER_TRANSACTION_MAX_RECORDS` (5,000); `READER_TRANSACTION_TIMEOUT_MS` \
                    (10 s), `READER_ALLOWED_LATENESS_SECS` (the tests use 300 s)";
        assert_eq!(
            check_defaults("x.md", text),
            ["x.md:1: `READER_TRANSACTION_MAX_RECORDS` (5,000) but its default is 50000"]
        );
    }

    #[test]
    fn markdown_checks_only_code_blocks_and_joins_continuations() {
        let text = "cargo xtask nonsense in prose\n```sh\ncargo xtask services \\\n  stop\n```\n";
        let docs = commands("x.md", text);
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].at, "x.md:3");
        assert_eq!(docs[0].words, ["cargo", "xtask", "services", "stop"]);
    }
}
