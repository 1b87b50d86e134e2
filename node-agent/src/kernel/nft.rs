//! Weft's nftables tables (`inet weft`, `bridge weft`), written as nft text through one
//! `nft -f -` run per pass (one atomic transaction) and read back with `nft -j`.
//!
//! Rendering. A replaced table is `add table` + `delete table` (so the delete never fails
//! on a missing table) + the full table, all in one transaction, so a flushed or tampered
//! table comes back exactly and no packet ever sees a half-written one. Every rule gets
//! ` comment "weft:<id>"` appended.
//!
//! Reading back. Rebuilding a rule's text from nft's JSON is lossy, so observed rules carry
//! only their id (from the comment) and an empty body, and tables are compared by chain
//! names, base specs and rule ids in order ([`nft_tables_equivalent`]). Consequence for the
//! planner: a rule id must be a content hash of its body (a different body = a different
//! id), or a changed rule would never be rewritten. A rule without a Weft comment (added
//! by someone else) reads back with an id no planner produces, so the table is replaced.
//!
//! Canonical base-chain spec (what [`base_chain`] writes and what observing reconstructs):
//! `type <type> hook <hook> priority <integer>; policy <accept|drop>;` — numeric priority
//! (nft's JSON reports numbers, not names like `srcnat`), single spaces, trailing `;`.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::{ApplyReport, Change, KernelError, netns};
use crate::model::{NFT_TABLE, NftChain, NftFamily, NftRule, NftTable};

/// A base chain's hook spec in the one canonical form, e.g.
/// `base_chain("filter", "forward", 0, "accept")` =
/// `type filter hook forward priority 0; policy accept;`.
pub fn base_chain(kind: &str, hook: &str, priority: i32, policy: &str) -> String {
    format!("type {kind} hook {hook} priority {priority}; policy {policy};")
}

/// Whitespace-insensitive form of a base spec, so hand-written specs with other spacing
/// still compare equal to what observing reconstructs.
fn normalize_base(s: &str) -> String {
    let mut out = s
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace(" ;", ";");
    if !out.ends_with(';') {
        out.push(';');
    }
    out
}

/// Desired and observed tables are the same as far as nft's read-back can tell: same chains,
/// same base specs, same rule ids in the same order (bodies are not compared).
pub fn nft_tables_equivalent(a: &NftTable, b: &NftTable) -> bool {
    a.chains.len() == b.chains.len()
        && a.chains
            .iter()
            .zip(b.chains.iter())
            .all(|((na, ca), (nb, cb))| {
                na == nb
                    && ca.base.as_deref().map(normalize_base)
                        == cb.base.as_deref().map(normalize_base)
                    && ca.rules.len() == cb.rules.len()
                    && ca
                        .rules
                        .iter()
                        .zip(&cb.rules)
                        .all(|(ra, rb)| ra.id == rb.id)
            })
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Text nft must never see inside one rule or spec: anything that would end the command
/// (`;`, newline), start a comment (`#`) or a block (`{`/`}` in a base spec).
fn check_text(what: &str, s: &str, forbid_braces: bool) -> Result<(), KernelError> {
    let bad = s.contains(['\n', '\r', ';', '#']) || (forbid_braces && s.contains(['{', '}']));
    if bad {
        return Err(KernelError::Invalid(format!(
            "nft {what} {s:?} contains a newline, ';', '#' or a brace"
        )));
    }
    Ok(())
}

fn render_table(family: NftFamily, table: &NftTable, out: &mut String) -> Result<(), KernelError> {
    let fam = family.as_str();
    out.push_str(&format!(
        "add table {fam} {NFT_TABLE}\ndelete table {fam} {NFT_TABLE}\nadd table {fam} {NFT_TABLE}\n"
    ));
    // All chains first, so rules can jump to chains declared after them.
    for (name, chain) in &table.chains {
        if !valid_name(name) {
            return Err(KernelError::Invalid(format!(
                "nft chain name {name:?} is not [A-Za-z][A-Za-z0-9_-]*"
            )));
        }
        match &chain.base {
            Some(base) => {
                let spec = normalize_base(base);
                check_text("base chain spec", &spec.replace(';', ""), true)?;
                out.push_str(&format!(
                    "add chain {fam} {NFT_TABLE} {name} {{ {spec} }}\n"
                ));
            }
            None => out.push_str(&format!("add chain {fam} {NFT_TABLE} {name}\n")),
        }
    }
    for (name, chain) in &table.chains {
        for rule in &chain.rules {
            if rule.id.is_empty()
                || rule.id.len() > 120
                || !rule
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/'))
            {
                return Err(KernelError::Invalid(format!(
                    "nft rule id {:?} must be 1-120 of [A-Za-z0-9_.:/-]",
                    rule.id
                )));
            }
            check_text("rule", &rule.body, false)?;
            out.push_str(&format!(
                "add rule {fam} {NFT_TABLE} {name} {} comment \"weft:{}\"\n",
                rule.body.trim(),
                rule.id
            ));
        }
    }
    Ok(())
}

/// The nft script for some changes (one transaction).
pub(crate) fn render(changes: &[&Change]) -> Result<String, KernelError> {
    let mut out = String::new();
    for change in changes {
        match change {
            Change::ReplaceNftTable(family, table) => render_table(*family, table, &mut out)?,
            Change::DeleteNftTable(family) => {
                let fam = family.as_str();
                out.push_str(&format!(
                    "add table {fam} {NFT_TABLE}\ndelete table {fam} {NFT_TABLE}\n"
                ));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Exit status, stdout, stderr of one `nft` run inside the namespace.
struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Run `nft args…` inside `ns`, feeding `stdin` if given. The child enters the namespace
/// with setns between fork and exec; the agent itself stays where it is.
async fn run(ns: Option<&Path>, args: &[&str], stdin: Option<&str>) -> Result<Output, KernelError> {
    let target: Option<File> = match ns {
        Some(p) => Some(netns::open(p)?),
        None => None,
    };
    let mut cmd = tokio::process::Command::new("nft");
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(file) = &target {
        let fd = file.as_raw_fd();
        // SAFETY: only the async-signal-safe setns(2) runs between fork and exec; `fd` stays
        // open in the parent (`target` outlives the spawn) and is inherited by the child.
        unsafe {
            cmd.as_std_mut().pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            KernelError::Nft("the nft program is not installed (apt-get install nftables)".into())
        } else {
            KernelError::Nft(format!("cannot start nft: {e}"))
        }
    })?;
    drop(target);
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .await
            .map_err(|e| KernelError::Nft(format!("cannot feed nft: {e}")))?;
        drop(pipe);
    }
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .map_err(|_| KernelError::Nft("nft did not finish within 20 s".into()))?
        .map_err(|e| KernelError::Nft(format!("nft: {e}")))?;
    Ok(Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// Whether `nft list tables` works in the namespace (nftables usable).
pub(crate) async fn available(ns: Option<&Path>) -> bool {
    matches!(run(ns, &["list", "tables"], None).await, Ok(o) if o.ok)
}

/// Read one family's `weft` table; `None` when it does not exist.
async fn observe_family(
    ns: Option<&Path>,
    family: NftFamily,
) -> Result<Option<NftTable>, KernelError> {
    let out = run(
        ns,
        &["-j", "list", "table", family.as_str(), NFT_TABLE],
        None,
    )
    .await?;
    if !out.ok {
        if out.stderr.contains("No such file or directory") {
            return Ok(None);
        }
        return Err(KernelError::Nft(format!(
            "list table {} {NFT_TABLE}: {}",
            family.as_str(),
            out.stderr
        )));
    }
    parse_json(&out.stdout).map(Some)
}

pub(crate) async fn observe(
    ns: Option<&Path>,
) -> Result<BTreeMap<NftFamily, NftTable>, KernelError> {
    let (inet, bridge) = futures::join!(
        observe_family(ns, NftFamily::Inet),
        observe_family(ns, NftFamily::Bridge)
    );
    let mut out = BTreeMap::new();
    if let Some(t) = inet? {
        out.insert(NftFamily::Inet, t);
    }
    if let Some(t) = bridge? {
        out.insert(NftFamily::Bridge, t);
    }
    Ok(out)
}

/// The parts of `nft -j list table` Weft reads. Everything else (above all each rule's
/// `expr` tree, most of the output) is skipped by serde without being built, so reading a
/// table of thousands of rules costs little memory.
#[derive(serde::Deserialize)]
struct ListOutput {
    nftables: Vec<ListItem>,
}

#[derive(serde::Deserialize)]
struct ListItem {
    chain: Option<ChainJson>,
    rule: Option<RuleJson>,
}

#[derive(serde::Deserialize)]
struct ChainJson {
    name: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    hook: Option<String>,
    prio: Option<Value>,
    policy: Option<String>,
}

#[derive(serde::Deserialize)]
struct RuleJson {
    chain: String,
    comment: Option<String>,
    handle: Option<i64>,
}

fn json_int(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// Rebuild an [`NftTable`] from `nft -j list table` output.
pub(crate) fn parse_json(text: &str) -> Result<NftTable, KernelError> {
    let out: ListOutput = serde_json::from_str(text)
        .map_err(|e| KernelError::Nft(format!("cannot parse nft -j output: {e}")))?;
    let mut table = NftTable::default();
    let mut rules = Vec::new();
    for item in out.nftables {
        if let Some(chain) = item.chain {
            let base = match (chain.kind.as_deref(), chain.hook.as_deref()) {
                (Some(kind), Some(hook)) => {
                    let prio = chain.prio.as_ref().and_then(json_int).unwrap_or(0);
                    let policy = chain.policy.as_deref().unwrap_or("accept");
                    Some(base_chain(
                        kind,
                        hook,
                        i32::try_from(prio).unwrap_or(i32::MAX),
                        policy,
                    ))
                }
                _ => None,
            };
            table.chains.insert(
                chain.name,
                NftChain {
                    base,
                    rules: Vec::new(),
                },
            );
        } else if let Some(rule) = item.rule {
            rules.push(rule);
        }
    }
    for rule in rules {
        let id = match rule
            .comment
            .as_deref()
            .and_then(|c| c.strip_prefix("weft:"))
        {
            Some(id) => id.to_string(),
            None => format!("<not weft's: handle {}>", rule.handle.unwrap_or(-1)),
        };
        if let Some(c) = table.chains.get_mut(&rule.chain) {
            c.rules.push(NftRule {
                id,
                body: String::new(),
            });
        }
    }
    Ok(table)
}

/// One `nft -f -` run of the rendered changes.
async fn transaction(ns: Option<&Path>, changes: &[&Change]) -> Result<(), KernelError> {
    let script = render(changes)?;
    let out = run(ns, &["-f", "-"], Some(&script)).await?;
    if out.ok {
        Ok(())
    } else {
        Err(KernelError::Nft(out.stderr))
    }
}

/// Apply every nft change of a pass in one atomic `nft -f -` run. If that run fails and it
/// held several changes, each is retried alone so one bad table cannot block the others.
pub(crate) async fn apply(ns: Option<&Path>, changes: &[&Change], report: &mut ApplyReport) {
    if changes.is_empty() {
        return;
    }
    report.writes += 1;
    let first = transaction(ns, changes).await;
    match first {
        Ok(()) => {}
        Err(e) if changes.len() == 1 => report.failed.push(((*changes[0]).clone(), e.to_string())),
        Err(_) => {
            for change in changes {
                report.writes += 1;
                if let Err(e) = transaction(ns, &[*change]).await {
                    report.failed.push(((*change).clone(), e.to_string()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> NftTable {
        let mut t = NftTable::default();
        t.chains.insert(
            "forward".into(),
            NftChain {
                base: Some(base_chain("filter", "forward", 0, "accept")),
                rules: vec![NftRule {
                    id: "a1".into(),
                    body: "ct state established accept".into(),
                }],
            },
        );
        t.chains.insert(
            "isolate".into(),
            NftChain {
                base: None,
                rules: vec![NftRule {
                    id: "b2".into(),
                    body: "drop".into(),
                }],
            },
        );
        t
    }

    #[test]
    fn canonical_base_chain() {
        assert_eq!(
            base_chain("nat", "postrouting", 100, "accept"),
            "type nat hook postrouting priority 100; policy accept;"
        );
        assert_eq!(
            normalize_base("type  filter hook forward priority 0 ; policy accept"),
            base_chain("filter", "forward", 0, "accept")
        );
    }

    #[test]
    fn renders_one_transaction_with_comments() {
        let t = table();
        let c = Change::ReplaceNftTable(NftFamily::Inet, t);
        let s = render(&[&c, &Change::DeleteNftTable(NftFamily::Bridge)]).unwrap();
        assert_eq!(
            s,
            "add table inet weft\ndelete table inet weft\nadd table inet weft\n\
             add chain inet weft forward { type filter hook forward priority 0; policy accept; }\n\
             add chain inet weft isolate\n\
             add rule inet weft forward ct state established accept comment \"weft:a1\"\n\
             add rule inet weft isolate drop comment \"weft:b2\"\n\
             add table bridge weft\ndelete table bridge weft\n"
        );
    }

    #[test]
    fn rejects_text_that_would_break_the_script() {
        let mut t = table();
        t.chains.get_mut("isolate").unwrap().rules[0].body = "drop; flush ruleset".into();
        assert!(render(&[&Change::ReplaceNftTable(NftFamily::Inet, t)]).is_err());
        let mut t = table();
        t.chains.get_mut("isolate").unwrap().rules[0].id = "x\" ; flush".into();
        assert!(render(&[&Change::ReplaceNftTable(NftFamily::Inet, t)]).is_err());
        let mut t = table();
        t.chains.insert(
            "bad name".into(),
            NftChain {
                base: None,
                rules: vec![],
            },
        );
        assert!(render(&[&Change::ReplaceNftTable(NftFamily::Inet, t)]).is_err());
    }

    #[test]
    fn equivalence_ignores_bodies_but_not_ids_order_or_bases() {
        let a = table();
        let mut b = table();
        for c in b.chains.values_mut() {
            for r in &mut c.rules {
                r.body.clear();
            }
        }
        assert!(nft_tables_equivalent(&a, &b));
        let mut c = table();
        c.chains.get_mut("forward").unwrap().rules[0].id = "other".into();
        assert!(!nft_tables_equivalent(&a, &c));
        let mut d = table();
        d.chains.get_mut("forward").unwrap().base =
            Some(base_chain("filter", "forward", 0, "drop"));
        assert!(!nft_tables_equivalent(&a, &d));
        let mut e = table();
        e.chains.get_mut("forward").unwrap().rules.clear();
        assert!(!nft_tables_equivalent(&a, &e));
    }

    #[test]
    fn parses_nft_json() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
          {"table": {"family": "inet", "name": "weft", "handle": 1}},
          {"chain": {"family": "inet", "table": "weft", "name": "forward", "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}},
          {"chain": {"family": "inet", "table": "weft", "name": "post", "handle": 2, "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}},
          {"chain": {"family": "inet", "table": "weft", "name": "isolate", "handle": 3}},
          {"rule": {"family": "inet", "table": "weft", "chain": "forward", "handle": 4, "comment": "weft:a1", "expr": [{"accept": null}]}},
          {"rule": {"family": "inet", "table": "weft", "chain": "forward", "handle": 5, "expr": [{"drop": null}]}},
          {"rule": {"family": "inet", "table": "weft", "chain": "post", "handle": 6, "comment": "weft:m", "expr": [{"masquerade": null}]}}]}"#;
        let t = parse_json(json).unwrap();
        assert_eq!(t.chains.len(), 3);
        assert_eq!(
            t.chains["forward"].base.as_deref(),
            Some("type filter hook forward priority 0; policy accept;")
        );
        assert_eq!(
            t.chains["post"].base.as_deref(),
            Some("type nat hook postrouting priority 100; policy accept;")
        );
        assert_eq!(t.chains["isolate"].base, None);
        let ids: Vec<_> = t.chains["forward"]
            .rules
            .iter()
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(ids, ["a1", "<not weft's: handle 5>"]);
        assert_eq!(t.chains["post"].rules[0].id, "m");
    }
}
