//! Rendering nft scripts (pure): whole tables, the planner's commands, and the script that
//! brings the kernel from what it holds to what a pass asks. Every rule gets
//! ` comment "weft:<id>"` appended; text that would break out of its command is refused.

use std::collections::BTreeMap;

use crate::kernel::changes::Change;
use crate::kernel::error::KernelError;
use crate::kernel::nft::plan::{NftOp, normalize_base, plan_update};
use crate::model::{NFT_TABLE, NftFamily, NftRule, NftTable};

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

/// `add chain …` for one chain, checked.
fn add_chain(fam: &str, name: &str, chain_base: Option<&str>) -> Result<String, KernelError> {
    if !valid_name(name) {
        return Err(KernelError::Invalid(format!(
            "nft chain name {name:?} is not [A-Za-z][A-Za-z0-9_-]*"
        )));
    }
    Ok(match chain_base {
        Some(base) => {
            let spec = normalize_base(base);
            check_text("base chain spec", &spec.replace(';', ""), true)?;
            format!("add chain {fam} {NFT_TABLE} {name} {{ {spec} }}\n")
        }
        None => format!("add chain {fam} {NFT_TABLE} {name}\n"),
    })
}

/// A rule's text after the chain (and position): its body and its id comment, checked.
fn rule_text(rule: &NftRule) -> Result<String, KernelError> {
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
    Ok(format!("{} comment \"weft:{}\"", rule.body.trim(), rule.id))
}

fn render_table(family: NftFamily, table: &NftTable, out: &mut String) -> Result<(), KernelError> {
    let fam = family.as_str();
    out.push_str(&format!(
        "add table {fam} {NFT_TABLE}\ndelete table {fam} {NFT_TABLE}\nadd table {fam} {NFT_TABLE}\n"
    ));
    // All chains first, so rules can jump to chains declared after them.
    for (name, chain) in &table.chains {
        out.push_str(&add_chain(fam, name, chain.base.as_deref())?);
    }
    for (name, chain) in &table.chains {
        for rule in &chain.rules {
            out.push_str(&format!(
                "add rule {fam} {NFT_TABLE} {name} {}\n",
                rule_text(rule)?
            ));
        }
    }
    Ok(())
}

/// The nft script that replaces whole tables (one transaction); it does not depend on what
/// the kernel holds.
pub(crate) fn render(changes: &[&Change]) -> Result<String, KernelError> {
    let mut out = String::new();
    for change in changes {
        match change {
            Change::SetNftTable(family, table) => render_table(*family, table, &mut out)?,
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

/// The nft text of some commands on one family's table.
pub(crate) fn render_ops(family: NftFamily, ops: &[NftOp]) -> Result<String, KernelError> {
    let fam = family.as_str();
    let t = NFT_TABLE;
    let mut out = String::new();
    let chain_ok = |name: &str| {
        if valid_name(name) {
            Ok(())
        } else {
            Err(KernelError::Invalid(format!(
                "nft chain name {name:?} is not [A-Za-z][A-Za-z0-9_-]*"
            )))
        }
    };
    for op in ops {
        match op {
            NftOp::AddTable => out.push_str(&format!("add table {fam} {t}\n")),
            NftOp::AddChain { chain, base } => out.push_str(&add_chain(fam, chain, *base)?),
            NftOp::DeleteRule { chain, handle } => {
                chain_ok(chain)?;
                out.push_str(&format!("delete rule {fam} {t} {chain} handle {handle}\n"));
            }
            NftOp::FlushChain(chain) => {
                chain_ok(chain)?;
                out.push_str(&format!("flush chain {fam} {t} {chain}\n"));
            }
            NftOp::DeleteChain(chain) => {
                chain_ok(chain)?;
                out.push_str(&format!("delete chain {fam} {t} {chain}\n"));
            }
            NftOp::AppendRule { chain, rule } => {
                chain_ok(chain)?;
                out.push_str(&format!(
                    "add rule {fam} {t} {chain} {}\n",
                    rule_text(rule)?
                ));
            }
        }
    }
    Ok(out)
}

/// The script that brings the kernel from `observed` to what `changes` ask, writing only the
/// difference where it can.
pub(crate) fn render_update(
    changes: &[&Change],
    observed: &BTreeMap<NftFamily, NftTable>,
) -> Result<String, KernelError> {
    let mut out = String::new();
    for change in changes {
        match change {
            Change::SetNftTable(family, table) => match plan_update(table, observed.get(family)) {
                Some(ops) => out.push_str(&render_ops(*family, &ops)?),
                None => render_table(*family, table, &mut out)?,
            },
            Change::DeleteNftTable(_) => out.push_str(&render(&[*change])?),
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::nft::plan::fixtures::{chain, one_chain, r, table};
    use crate::model::NftChain;

    #[test]
    fn renders_one_transaction_with_comments() {
        let t = table();
        let c = Change::SetNftTable(NftFamily::Inet, t);
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
        assert!(render(&[&Change::SetNftTable(NftFamily::Inet, t)]).is_err());
        let mut t = table();
        t.chains.get_mut("isolate").unwrap().rules[0].id = "x\" ; flush".into();
        assert!(render(&[&Change::SetNftTable(NftFamily::Inet, t)]).is_err());
        let mut t = table();
        t.chains.insert(
            "bad name".into(),
            NftChain {
                base: None,
                rules: vec![],
            },
        );
        assert!(render(&[&Change::SetNftTable(NftFamily::Inet, t)]).is_err());
    }

    #[test]
    fn new_rules_are_appended_and_gone_ones_deleted_by_handle() {
        let have = one_chain(vec![
            r("a", Some(1)),
            r("b", Some(2)),
            r("x", Some(3)),
            r("c", Some(4)),
        ]);
        let want = one_chain(vec![
            r("n0", None),
            r("a", None),
            r("n1", None),
            r("n2", None),
            r("b", None),
            r("c", None),
            r("n3", None),
        ]);
        let ops = plan_update(&want, Some(&have)).unwrap();
        let script = render_ops(NftFamily::Inet, &ops).unwrap();
        assert_eq!(
            script,
            "delete rule inet weft c handle 3\n\
             add rule inet weft c meta mark 2 drop comment \"weft:n0\"\n\
             add rule inet weft c meta mark 2 drop comment \"weft:n1\"\n\
             add rule inet weft c meta mark 2 drop comment \"weft:n2\"\n\
             add rule inet weft c meta mark 2 drop comment \"weft:n3\"\n"
        );
        // Nothing to do when they match.
        assert_eq!(
            plan_update(
                &one_chain(vec![r("a", None)]),
                Some(&one_chain(vec![r("a", Some(1))]))
            ),
            Some(vec![])
        );
    }

    #[test]
    fn chains_come_and_go_and_a_missing_table_is_only_added() {
        let mut have = one_chain(vec![r("a", Some(1))]);
        have.chains
            .insert("old".into(), chain(vec![r("z", Some(9))]));
        let mut want = one_chain(vec![r("a", None)]);
        want.chains.insert("new".into(), chain(vec![r("y", None)]));
        let script =
            render_ops(NftFamily::Bridge, &plan_update(&want, Some(&have)).unwrap()).unwrap();
        assert_eq!(
            script,
            "flush chain bridge weft old\ndelete chain bridge weft old\nadd chain bridge weft new\n\
             add rule bridge weft new meta mark 1 drop comment \"weft:y\"\n"
        );
        let script = render_ops(NftFamily::Inet, &plan_update(&want, None).unwrap()).unwrap();
        assert!(
            script.starts_with(
                "add table inet weft\nadd chain inet weft c\nadd chain inet weft new\n"
            )
        );
        assert!(!script.contains("delete"));
    }

    /// A pass's script writes only what differs from the listing: nothing when the tables
    /// already match, the new rule alone when one was added, a whole replacement when a base
    /// chain's hook changed, and a table that is gone is deleted whatever it held.
    #[test]
    fn an_update_writes_only_the_difference_from_the_listing() {
        let observed = BTreeMap::from([(NftFamily::Inet, one_chain(vec![r("a", Some(1))]))]);
        let same = Change::SetNftTable(NftFamily::Inet, one_chain(vec![r("a", None)]));
        assert_eq!(render_update(&[&same], &observed).unwrap(), "");

        let more =
            Change::SetNftTable(NftFamily::Inet, one_chain(vec![r("a", None), r("b", None)]));
        assert_eq!(
            render_update(&[&more], &observed).unwrap(),
            "add rule inet weft c meta mark 1 drop comment \"weft:b\"\n"
        );

        let mut hooked = one_chain(vec![r("a", None)]);
        hooked.chains.get_mut("c").unwrap().base = Some(crate::kernel::nft::plan::base_chain(
            "filter", "forward", 0, "accept",
        ));
        let rehook = Change::SetNftTable(NftFamily::Inet, hooked);
        assert_eq!(
            render_update(&[&rehook], &observed).unwrap(),
            render(&[&rehook]).unwrap()
        );

        let gone = Change::DeleteNftTable(NftFamily::Bridge);
        assert_eq!(
            render_update(&[&gone], &observed).unwrap(),
            "add table bridge weft\ndelete table bridge weft\n"
        );
    }
}
