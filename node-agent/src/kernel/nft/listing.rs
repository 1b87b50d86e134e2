//! Reading what `nft` prints (pure): the JSON listing of a `weft` table, rebuilt as an
//! [`NftTable`] of rule ids and handles, and the echo of an `nft --echo --handle` run.

use std::collections::HashMap;

use serde_json::Value;

use crate::kernel::error::KernelError;
use crate::kernel::nft::plan::{AddedRules, base_chain};
use crate::model::{NFT_TABLE, NftChain, NftFamily, NftRule, NftTable};

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
                handle: rule.handle.and_then(|h| u64::try_from(h).ok()),
            });
        }
    }
    Ok(table)
}

/// The handles of the rules an `nft --echo --handle` run added, by (family, chain, rule id),
/// from lines like `add rule inet weft forward … comment "weft:<id>" # handle 12`.
pub(crate) fn echoed_handles(stdout: &str) -> AddedRules {
    let mut out = HashMap::new();
    for line in stdout.lines() {
        let mut words = line.split_whitespace();
        let (Some(verb), Some("rule"), Some(fam), Some(NFT_TABLE), Some(chain)) = (
            words.next(),
            words.next(),
            words.next(),
            words.next(),
            words.next(),
        ) else {
            continue;
        };
        if verb != "add" && verb != "insert" {
            continue;
        }
        let Some(family) = NftFamily::parse(fam) else {
            continue;
        };
        let id = line
            .split_once("comment \"weft:")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(id, _)| id);
        let handle = line
            .rsplit_once("# handle ")
            .and_then(|(_, h)| h.trim().parse::<u64>().ok());
        if let (Some(id), Some(handle)) = (id, handle) {
            out.insert((family, chain.to_string(), id.to_string()), handle);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::kernel::changes::Change;
    use crate::kernel::nft::plan::fixtures::{one_chain, r};
    use crate::kernel::nft::plan::tables_after;

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

    #[test]
    fn the_echo_gives_the_new_rules_handles() {
        let echo = "add table inet weft\n\
            add rule inet weft c handle 1 meta mark 2 drop comment \"weft:n1\" # handle 12\n\
            insert rule inet weft c meta mark 2 drop comment \"weft:n0\" # handle 13\n\
            # new generation 5 by process 99 (nft)\n";
        let h = echoed_handles(echo);
        assert_eq!(h[&(NftFamily::Inet, "c".into(), "n1".into())], 12);
        assert_eq!(h.len(), 2);
        let have = one_chain(vec![r("a", Some(1))]);
        let want = one_chain(vec![r("n0", None), r("a", None), r("n1", None)]);
        let observed = BTreeMap::from([(NftFamily::Inet, have)]);
        let change = Change::SetNftTable(NftFamily::Inet, want);
        let after = tables_after(&[&change], Some(&observed), &h).unwrap();
        let handles: Vec<_> = after[&NftFamily::Inet].as_ref().unwrap().chains["c"]
            .rules
            .iter()
            .map(|r| r.handle)
            .collect();
        assert_eq!(handles, [Some(13), Some(1), Some(12)]);
        // A rule whose handle is unknown makes the result unknown.
        assert!(tables_after(&[&change], None, &AddedRules::new()).is_none());
    }
}
