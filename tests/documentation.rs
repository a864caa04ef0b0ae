//! The documentation holds together: every relative link and `#anchor` in README.md,
//! BENCHMARKS.md and docs/*.md resolves, every `docs/<file>.md#<anchor>` that code, scripts,
//! configuration and schemas cite exists, nothing cites a design document the repository does not
//! contain, and no Markdown table is split by a blank line (the rows after it would render as raw
//! pipes). Anchors are computed as GitHub renders them (lower case, punctuation dropped, spaces to
//! hyphens, `-1`, `-2`, … for repeated headings), plus explicit `<a id="…">` anchors.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The Markdown files a reader opens: README.md, BENCHMARKS.md and every file under docs/.
fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md"), root().join("BENCHMARKS.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// Lines outside fenced code blocks, with their 1-based numbers.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push((i + 1, line));
        }
    }
    out
}

/// A line with its inline code spans blanked out (links inside code are not links).
fn without_code_spans(line: &str) -> String {
    let mut in_code = false;
    line.chars()
        .map(|c| {
            if c == '`' {
                in_code = !in_code;
                ' '
            } else if in_code {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// GitHub's anchor of a heading's text.
fn slug(heading: &str) -> String {
    // Rendered text: links keep their text, code spans their content.
    let mut text = String::new();
    let mut rest = heading;
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find("](").map(|i| open + i) else {
            break;
        };
        let Some(end) = rest[close..].find(')').map(|i| close + i) else {
            break;
        };
        text.push_str(&rest[..open]);
        text.push_str(&rest[open + 1..close]);
        rest = &rest[end + 1..];
    }
    text.push_str(rest);
    text.trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every anchor a Markdown text defines.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for (_, line) in prose_lines(text) {
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if (1..=6).contains(&hashes) && line[hashes..].starts_with(' ') {
            let base = slug(&line[hashes..]);
            let n = seen.entry(base.clone()).or_insert(0);
            out.insert(if *n == 0 { base.clone() } else { format!("{base}-{n}") });
            *n += 1;
        }
        for marker in ["<a id=\"", "<a name=\""] {
            let mut rest = line;
            while let Some(i) = rest.find(marker) {
                rest = &rest[i + marker.len()..];
                if let Some(end) = rest.find('"') {
                    out.insert(rest[..end].to_string());
                }
            }
        }
    }
    out
}

/// The targets of the inline links `[text](target)` of a line (code spans excluded).
fn link_targets(line: &str) -> Vec<String> {
    let line = without_code_spans(line);
    let mut out = Vec::new();
    let mut rest = line.as_str();
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        if let Some(end) = rest.find(')') {
            out.push(rest[..end].trim().to_string());
        }
    }
    out
}

/// Why `target`, linked from `from`, does not resolve (None: it does).
fn broken(from: &Path, target: &str) -> Option<String> {
    if target.contains("://") || target.starts_with("mailto:") {
        return None;
    }
    let (path, anchor) = match target.split_once('#') {
        Some((p, a)) => (p, Some(a)),
        None => (target, None),
    };
    let file = if path.is_empty() {
        from.to_path_buf()
    } else {
        from.parent().expect("a file has a directory").join(path)
    };
    if !file.exists() {
        return Some(format!("{} does not exist", file.display()));
    }
    match anchor {
        Some(a) if file.extension().is_some_and(|x| x == "md") => {
            (!anchors(&read(&file)).contains(a)).then(|| format!("{} has no anchor #{a}", file.display()))
        }
        _ => None,
    }
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let mut problems = Vec::new();
    for file in markdown_files() {
        let text = read(&file);
        for (n, line) in prose_lines(&text) {
            for target in link_targets(line) {
                if let Some(why) = broken(&file, &target) {
                    problems.push(format!("{}:{n}: ({target}): {why}", file.display()));
                }
            }
        }
    }
    assert!(problems.is_empty(), "broken links:\n{}", problems.join("\n"));
}

/// Text files of the repository outside target/, .git/ and test data.
fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.expect("directory entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if path.is_dir() {
            if !["target", ".git", "data", "corpus", "artifacts"].contains(&name.as_str()) {
                source_files(&path, out);
            }
        } else {
            let ext = path.extension().and_then(|x| x.to_str()).unwrap_or_default();
            let in_scripts = path.parent().is_some_and(|p| p.ends_with("scripts"));
            if ["rs", "sh", "yaml", "yml", "toml", "json", "lua", "md", "tpl"].contains(&ext)
                || name == "Dockerfile"
                || (in_scripts && ext.is_empty())
            {
                out.push(path);
            }
        }
    }
}

/// `docs/<file>.md` and `docs/<file>.md#<anchor>` citations in a text.
fn doc_citations(text: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("docs/") {
        let preceded_by_word = i > 0 && rest.as_bytes()[i - 1].is_ascii_alphanumeric();
        rest = &rest[i + "docs/".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            .collect();
        let name = name.trim_end_matches('.');
        if preceded_by_word || !name.ends_with(".md") {
            continue;
        }
        let after = &rest[name.len()..];
        let anchor = after.strip_prefix('#').map(|a| {
            a.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
                .collect::<String>()
        });
        out.push((name.to_string(), anchor.filter(|a| !a.is_empty())));
    }
    out
}

#[test]
fn code_cites_only_documentation_the_repository_holds() {
    let mut files = Vec::new();
    for dir in [
        "src", "tests", "scripts", "config", "deploy", "schemas", "fuzz", "benches", "docs", ".config", ".cargo",
    ] {
        source_files(&root().join(dir), &mut files);
    }
    for top in [
        "README.md",
        "BENCHMARKS.md",
        "Cargo.toml",
        "Dockerfile",
        "docker-compose.yml",
    ] {
        files.push(root().join(top));
    }
    assert!(
        files.len() > 50,
        "found only {} files: has the layout changed?",
        files.len()
    );
    let outside = concat!("DESIGN", ".md");
    let this = root().join("tests").join("documentation.rs");
    let mut problems = Vec::new();
    let mut cited = 0;
    for file in files.iter().filter(|f| **f != this) {
        let text = read(file);
        let rel = file.strip_prefix(root()).unwrap_or(file).display().to_string();
        if text.contains(outside) || text.contains('§') {
            problems.push(format!(
                "{rel}: cites a design document outside the repository ({outside} / §)"
            ));
        }
        for (name, anchor) in doc_citations(&text) {
            cited += 1;
            let doc = root().join("docs").join(&name);
            if !doc.exists() {
                problems.push(format!("{rel}: cites docs/{name}, which does not exist"));
            } else if let Some(a) = anchor {
                if !anchors(&read(&doc)).contains(&a) {
                    problems.push(format!("{rel}: cites docs/{name}#{a}, which has no such anchor"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        cited > 20,
        "found only {cited} citations of docs/: has the citation style changed?"
    );
}

#[test]
fn no_table_is_split_by_a_blank_line() {
    let mut problems = Vec::new();
    for file in markdown_files() {
        let text = read(&file);
        let lines = prose_lines(&text);
        for w in lines.windows(3) {
            let [(_, before), (n, row), (_, next)] = w else {
                continue;
            };
            let separator = next.trim_start().starts_with("|-") || next.trim_start().starts_with("| -");
            if before.trim().is_empty() && row.trim_start().starts_with('|') && !separator {
                problems.push(format!(
                    "{}:{n}: a table row after a blank line without a header separator under it",
                    file.display()
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn anchors_follow_github() {
    assert_eq!(slug(" Shutdown (SIGTERM)"), "shutdown-sigterm");
    assert_eq!(
        slug(" Reliability: how the promises are tested"),
        "reliability-how-the-promises-are-tested"
    );
    assert_eq!(slug(" `executor: kubernetes` (default)"), "executor-kubernetes-default");
    assert_eq!(
        slug(" What is exact, and where it degrades"),
        "what-is-exact-and-where-it-degrades"
    );
    let a = anchors("# A\n## B\n```\n## not a heading\n```\n## B\n<a id=\"x\"></a>\n");
    assert_eq!(a, ["a", "b", "b-1", "x"].iter().map(|s| s.to_string()).collect());
    assert_eq!(link_targets("see [a](b.md#c) and `[x](y)`"), vec!["b.md#c".to_string()]);
    assert_eq!(
        doc_citations("(docs/design.md#decision-order). and docs/configuration.md."),
        vec![
            ("design.md".to_string(), Some("decision-order".to_string())),
            ("configuration.md".to_string(), None)
        ]
    );
}
