//! Weft's nftables tables (`inet weft`, `bridge weft`), written as nft text through one
//! `nft -f -` run per pass (one atomic transaction) and read back with `nft -j`.
//!
//! Writing the difference. [`plan_update`] turns what the kernel holds into what is desired
//! with the fewest commands: new chains and rules are appended, rules that must go are
//! deleted by handle (order within a chain does not matter, see [`rule_steps`]). Only when
//! a base chain's hook changed is the whole table replaced (`add table` + `delete table` +
//! the full table).
//! Why not always replace: a transaction that deletes anything makes the kernel flush its
//! deferred destruction (an RCU grace period) when `nft` closes its socket — ~15 ms per run
//! here against ~2.5 ms for a transaction that only adds. Every transaction is still
//! atomic, so no packet ever sees a half-written table. Every rule gets
//! ` comment "weft:<id>"` appended.
//!
//! The handles of the rules a run added come from the kernel's notifications of its
//! transaction ([`OwnNft`]), or, when no event reader runs, from `nft --echo --handle`; so
//! the kernel module keeps its cached listing exact without listing again.
//!
//! Reading back. Rebuilding a rule's text from nft's JSON is lossy, so observed rules carry
//! only their id (from the comment) and an empty body, and tables are compared by chain
//! names, base specs and rule ids in order ([`nft_tables_equivalent`]). Consequence for the
//! planner: a rule id must be a content hash of its body (a different body = a different
//! id), or a changed rule would never be rewritten. A rule without a Weft comment (added
//! by someone else) reads back with an id no planner produces, so it is deleted by handle.
//!
//! Canonical base-chain spec (what [`base_chain`] writes and what observing reconstructs):
//! `type <type> hook <hook> priority <integer>; policy <accept|drop>;` — numeric priority
//! (nft's JSON reports numbers, not names like `srcnat`), single spaces, trailing `;`.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::libnft;
use super::{ApplyReport, Change, KernelError, netns};
use crate::model::{NFT_TABLE, NftChain, NftFamily, NftRule, NftTable};

/// Handles of the rules one transaction added, by (family, chain, rule id).
pub(crate) type AddedRules = HashMap<(NftFamily, String, String), u64>;

/// The agent's own `nft` runs, and what their transactions added.
///
/// The kernel-event reader matches each committed transaction to the run that made it (the
/// NEWGEN message names the committing process) and hands over the handles of the rules it
/// added, read from the NEWRULE notifications. That is how an `nft` run learns its new
/// handles without `--echo`, which makes `nft` fetch the whole ruleset before it writes
/// anything (measured: ~7.5 ms per run instead of ~2.5 ms with 400 rules, and growing with
/// the ruleset). The notifications are queued to the reader's socket before `nft` gets the
/// kernel's answer, so they are there by the time the run has ended.
#[derive(Clone, Debug, Default)]
pub(crate) struct OwnNft(Arc<OwnNftInner>);

#[derive(Default)]
struct OwnNftInner {
    state: Mutex<OwnNftState>,
    committed: tokio::sync::Notify,
    /// The in-process libnftables session, opened on first use (`None`: not available).
    session: tokio::sync::OnceCell<Option<Arc<libnft::Session>>>,
    /// How many transactions ran in-process.
    in_process: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for OwnNftInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnNftInner")
            .field("state", &self.state)
            .field("session_port", &self.session_port())
            .finish()
    }
}

impl OwnNftInner {
    fn session_port(&self) -> Option<u32> {
        self.session
            .get()
            .and_then(|s| s.as_ref())
            .map(|s| s.port())
    }
}

#[derive(Debug, Default)]
struct OwnNftState {
    /// Process ids of recent runs.
    pids: VecDeque<u32>,
    /// An event reader is running: runs learn their handles from it.
    listening: bool,
    /// Recent own transactions not yet claimed by their run: pid → rules added.
    commits: VecDeque<(u32, AddedRules)>,
    /// How many times notifications were lost (the socket overran).
    overruns: u64,
}

impl OwnNft {
    /// How many recent runs (and unclaimed transactions) are remembered.
    const KEEP: usize = 32;
    /// How long a run waits for its transaction's notifications before the listing is
    /// treated as unknown (and read again by the next pass).
    const WAIT: Duration = Duration::from_millis(500);

    fn lock(&self) -> std::sync::MutexGuard<'_, OwnNftState> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn remember(&self, pid: u32) {
        let mut s = self.lock();
        if s.pids.len() == Self::KEEP {
            s.pids.pop_front();
        }
        s.pids.push_back(pid);
        // A reused pid must not claim an old run's transaction.
        s.commits.retain(|(p, _)| *p != pid);
    }

    /// Whether `pid` (a process id or a netlink port) is one of the agent's nft writers.
    pub(crate) fn contains(&self, pid: u32) -> bool {
        self.0.session_port() == Some(pid) || self.lock().pids.contains(&pid)
    }

    /// The in-process libnftables session for namespace `ns`, opened on first use.
    async fn session(&self, ns: Option<&Path>) -> Option<Arc<libnft::Session>> {
        self.0
            .session
            .get_or_init(|| async {
                libnft::Session::open(ns)
                    .await
                    .unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "cannot open libnftables; running nft instead");
                        None
                    })
                    .map(Arc::new)
            })
            .await
            .clone()
    }

    /// How many transactions ran through libnftables rather than a child `nft`.
    pub(crate) fn in_process_transactions(&self) -> u64 {
        self.0.in_process.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A transaction of the session with `port` is about to run: an unclaimed commit of an
    /// earlier one (whose notifications came after its run stopped waiting) must not be
    /// taken for this one's.
    fn begin(&self, port: u32) {
        self.lock().commits.retain(|(p, _)| *p != port);
    }

    /// An event reader now reports transactions (see [`OwnNft::committed`]).
    pub(crate) fn listen(&self) {
        self.lock().listening = true;
    }

    pub(crate) fn listening(&self) -> bool {
        self.lock().listening
    }

    /// The event reader saw the transaction of the agent's run `pid` commit.
    pub(crate) fn committed(&self, pid: u32, added: AddedRules) {
        {
            let mut s = self.lock();
            if s.commits.len() == Self::KEEP {
                s.commits.pop_front();
            }
            s.commits.push_back((pid, added));
        }
        self.0.committed.notify_waiters();
    }

    /// The event reader lost notifications: runs waiting for theirs stop waiting.
    pub(crate) fn overrun(&self) {
        self.lock().overruns += 1;
        self.0.committed.notify_waiters();
    }

    fn overruns(&self) -> u64 {
        self.lock().overruns
    }

    /// The rules that run `pid`'s transaction added; `None` when that cannot be known (its
    /// notifications were lost, or never came within [`OwnNft::WAIT`]).
    pub(crate) async fn added_by(&self, pid: u32, overruns_before: u64) -> Option<AddedRules> {
        let deadline = tokio::time::Instant::now() + Self::WAIT;
        loop {
            let notified = self.0.committed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.lock();
                if let Some(i) = s.commits.iter().position(|(p, _)| *p == pid) {
                    return s.commits.remove(i).map(|(_, added)| added);
                }
                if s.overruns != overruns_before {
                    return None;
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                tracing::debug!(pid, "no notifications from an own nft transaction");
                return None;
            }
        }
    }
}

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
/// same base specs, same rule ids in any order (bodies are not compared; order within a
/// chain does not matter, see [`rule_steps`]).
pub fn nft_tables_equivalent(a: &NftTable, b: &NftTable) -> bool {
    fn ids(c: &NftChain) -> Vec<&str> {
        let mut ids: Vec<&str> = c.rules.iter().map(|r| r.id.as_str()).collect();
        ids.sort_unstable();
        ids
    }
    a.chains.len() == b.chains.len()
        && a.chains
            .iter()
            .zip(b.chains.iter())
            .all(|((na, ca), (nb, cb))| {
                na == nb
                    && ca.base.as_deref().map(normalize_base)
                        == cb.base.as_deref().map(normalize_base)
                    && ca.rules.len() == cb.rules.len()
                    && ids(ca) == ids(cb)
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

/// One command of an incremental update of a `weft` table (borrowing from the tables it
/// was planned from: a table of thousands of rules is not copied to be written).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum NftOp<'a> {
    AddTable,
    AddChain {
        chain: &'a str,
        base: Option<&'a str>,
    },
    DeleteRule {
        chain: &'a str,
        handle: u64,
    },
    FlushChain(&'a str),
    DeleteChain(&'a str),
    /// At the end of the chain.
    AppendRule {
        chain: &'a str,
        rule: &'a NftRule,
    },
}

/// The commands that turn `observed` (with rule handles) into `desired`, in an order that is
/// valid inside one transaction: rule deletions and flushes, chain deletions, chain
/// additions, rule additions. `None` = replace the whole table (a base chain's hook changed).
pub(crate) fn plan_update<'a>(
    desired: &'a NftTable,
    observed: Option<&'a NftTable>,
) -> Option<Vec<NftOp<'a>>> {
    let append = |chain: &'a str, rules: &'a [NftRule]| -> Vec<NftOp<'a>> {
        rules
            .iter()
            .map(|rule| NftOp::AppendRule { chain, rule })
            .collect()
    };
    let (mut removals, mut chain_deletes, mut chain_adds, mut additions) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let Some(observed) = observed else {
        let mut ops = vec![NftOp::AddTable];
        for (name, chain) in &desired.chains {
            ops.push(NftOp::AddChain {
                chain: name,
                base: chain.base.as_deref(),
            });
        }
        for (name, chain) in &desired.chains {
            ops.extend(append(name, &chain.rules));
        }
        return Some(ops);
    };
    for name in observed.chains.keys() {
        if !desired.chains.contains_key(name) {
            // Flushed first: a chain that still has rules cannot be deleted.
            removals.push(NftOp::FlushChain(name));
            chain_deletes.push(NftOp::DeleteChain(name));
        }
    }
    for (name, want) in &desired.chains {
        let Some(have) = observed.chains.get(name) else {
            chain_adds.push(NftOp::AddChain {
                chain: name,
                base: want.base.as_deref(),
            });
            additions.extend(append(name, &want.rules));
            continue;
        };
        if have.base.as_deref().map(normalize_base) != want.base.as_deref().map(normalize_base) {
            return None;
        }
        match rule_steps(name, &want.rules, &have.rules) {
            Some((rm, add)) => {
                removals.extend(rm);
                additions.extend(add);
            }
            None => {
                removals.push(NftOp::FlushChain(name));
                additions.extend(append(name, &want.rules));
            }
        }
    }
    Some([removals, chain_deletes, chain_adds, additions].concat())
}

/// (removals, additions) of one chain.
type Steps<'a> = (Vec<NftOp<'a>>, Vec<NftOp<'a>>);

/// Deletions and additions that turn the rules `have` of one chain into `want`: rules
/// that must go are deleted by handle, new ones appended, the others stay untouched. `None`
/// when that cannot be done rule by rule (duplicate ids, a rule to delete without a
/// handle): the chain is refilled instead.
///
/// Order within a chain is not kept, and need not be: every Weft chain holds rules whose
/// verdicts agree or whose matches are disjoint (drops; masquerades of distinct subnets;
/// DNATs of distinct ports; one jump) — see `plan::firewall` and the test there that holds
/// the planners to it. Placing a rule (`position`, `insert … handle`) makes `nft` fetch the
/// whole chain first: ~8.5 ms a run instead of ~3.5 ms with 200 rules, growing with them.
fn rule_steps<'a>(chain: &'a str, want: &'a [NftRule], have: &'a [NftRule]) -> Option<Steps<'a>> {
    let want_ids: BTreeSet<&str> = want.iter().map(|r| r.id.as_str()).collect();
    let have_ids: BTreeSet<&str> = have.iter().map(|r| r.id.as_str()).collect();
    if want_ids.len() != want.len() || have_ids.len() != have.len() {
        return None;
    }
    let mut removals = Vec::new();
    for rule in have.iter().filter(|r| !want_ids.contains(r.id.as_str())) {
        removals.push(NftOp::DeleteRule {
            chain,
            handle: rule.handle?,
        });
    }
    let additions = want
        .iter()
        .filter(|r| !have_ids.contains(r.id.as_str()))
        .map(|rule| NftOp::AppendRule { chain, rule })
        .collect();
    Some((removals, additions))
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
fn render_update(
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

/// The handles of the rules an `nft --echo --handle` run added, by (family, chain, rule id),
/// from lines like `add rule inet weft forward … comment "weft:<id>" # handle 12`.
fn echoed_handles(stdout: &str) -> AddedRules {
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

/// What the tables hold after `changes` were committed: each table as desired, with the
/// handles of kept rules from `observed` and of new ones from `added`. `None` for a
/// family's entry = the table is gone. `None` overall = not known exactly (list again).
fn tables_after(
    changes: &[&Change],
    observed: Option<&BTreeMap<NftFamily, NftTable>>,
    added: &AddedRules,
) -> Option<BTreeMap<NftFamily, Option<NftTable>>> {
    let mut out = BTreeMap::new();
    for change in changes {
        match change {
            Change::SetNftTable(family, desired) => {
                let before = observed.and_then(|o| o.get(family));
                // As a listing reads back: ids and handles, no bodies.
                let mut table = NftTable::default();
                for (name, chain) in &desired.chains {
                    let old: HashMap<&str, u64> = before
                        .and_then(|t| t.chains.get(name))
                        .map(|c| {
                            c.rules
                                .iter()
                                .filter_map(|r| Some((r.id.as_str(), r.handle?)))
                                .collect()
                        })
                        .unwrap_or_default();
                    let mut seen = BTreeSet::new();
                    let mut rules = Vec::with_capacity(chain.rules.len());
                    for rule in &chain.rules {
                        if !seen.insert(rule.id.as_str()) {
                            return None; // duplicate ids: handles would be ambiguous
                        }
                        let key = (*family, name.clone(), rule.id.clone());
                        let handle = added.get(&key).or(old.get(rule.id.as_str())).copied()?;
                        rules.push(NftRule {
                            id: rule.id.clone(),
                            body: String::new(),
                            handle: Some(handle),
                        });
                    }
                    table.chains.insert(
                        name.clone(),
                        NftChain {
                            base: chain.base.clone(),
                            rules,
                        },
                    );
                }
                out.insert(*family, Some(table));
            }
            Change::DeleteNftTable(family) => {
                out.insert(*family, None);
            }
            _ => {}
        }
    }
    Some(out)
}

/// Exit status, stdout, stderr of one `nft` run inside the namespace.
struct Output {
    /// The process id `nft` ran as.
    pid: Option<u32>,
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Run `nft args…` inside `ns`, feeding `stdin` if given; the agent itself stays where it
/// is. A run that may
/// write is remembered in `own` before it reads its script, so the notifications of its
/// transaction are known to be the agent's.
async fn run(
    ns: Option<&Path>,
    args: &[&str],
    stdin: Option<&str>,
    own: Option<&OwnNft>,
) -> Result<Output, KernelError> {
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
    // Spawned from a thread inside the namespace, which the child inherits: no code has to
    // run between fork and exec, so the standard library can use posix_spawn (a vfork)
    // instead of copying the agent's address space for every run.
    let runtime = tokio::runtime::Handle::current();
    let mut child = netns::run_in(ns, move || {
        // The child's pipes register with the runtime's reactor.
        let _guard = runtime.enter();
        cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                KernelError::Nft(
                    "the nft program is not installed (apt-get install nftables)".into(),
                )
            } else {
                KernelError::Nft(format!("cannot start nft: {e}"))
            }
        })
    })
    .await?;
    let pid = child.id();
    if let (Some(own), Some(pid)) = (own, pid) {
        own.remember(pid);
    }
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
        pid,
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// Whether `nft list tables` works in the namespace (nftables usable).
pub(crate) async fn available(ns: Option<&Path>) -> bool {
    matches!(run(ns, &["list", "tables"], None, None).await, Ok(o) if o.ok)
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
                handle: rule.handle.and_then(|h| u64::try_from(h).ok()),
            });
        }
    }
    Ok(table)
}

/// One `nft --echo --handle -f -` run of a script; its echo on success.
async fn transaction(
    ns: Option<&Path>,
    own: &OwnNft,
    script: &str,
) -> Result<Option<AddedRules>, KernelError> {
    if own.listening() {
        let overruns = own.overruns();
        if script.len() <= libnft::MAX_IN_PROCESS_SCRIPT
            && let Some(session) = own.session(ns).await
        {
            let port = session.port();
            own.begin(port);
            let text = script.to_string();
            tokio::task::spawn_blocking(move || session.run(&text))
                .await
                .map_err(|e| KernelError::Nft(format!("libnftables: {e}")))??;
            own.0
                .in_process
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(script = script.len(), "nft transaction in-process");
            return Ok(own.added_by(port, overruns).await);
        }
        let out = run(ns, &["-f", "-"], Some(script), Some(own)).await?;
        tracing::debug!(script = script.len(), "nft run");
        if !out.ok {
            return Err(KernelError::Nft(out.stderr));
        }
        return Ok(match out.pid {
            Some(pid) => own.added_by(pid, overruns).await,
            None => None,
        });
    }
    let out = run(ns, &["-e", "-a", "-f", "-"], Some(script), Some(own)).await?;
    tracing::debug!(
        script = script.len(),
        echo = out.stdout.len(),
        "nft run (echo)"
    );
    if out.ok {
        Ok(Some(echoed_handles(&out.stdout)))
    } else {
        Err(KernelError::Nft(out.stderr))
    }
}

/// What the tables hold after an [`apply`], per family (`None` = gone), when known exactly.
pub(crate) type Written = Option<BTreeMap<NftFamily, Option<NftTable>>>;

/// Apply every nft change of a pass in one atomic transaction: the difference from
/// `observed` when it is known, whole tables otherwise. If that fails (a stale observation,
/// a bad rule), each change is retried alone as a whole-table replacement, so one bad table
/// cannot block the others.
pub(crate) async fn apply(
    ns: Option<&Path>,
    own: &OwnNft,
    observed: Option<&BTreeMap<NftFamily, NftTable>>,
    changes: &[&Change],
    report: &mut ApplyReport,
) -> Written {
    if changes.is_empty() {
        return Some(BTreeMap::new());
    }
    let script = match observed {
        Some(o) => render_update(changes, o),
        None => render(changes),
    };
    let first = match script {
        // Another writer (a CNI ADD) already made the tables what this pass wanted.
        Ok(script) if script.is_empty() => {
            return tables_after(changes, observed, &AddedRules::new());
        }
        Ok(script) => {
            report.writes += 1;
            transaction(ns, own, &script).await
        }
        Err(e) => {
            report.writes += 1;
            Err(e)
        }
    };
    let error = match first {
        Ok(Some(added)) => return tables_after(changes, observed, &added),
        Ok(None) => return None,
        Err(e) => e,
    };
    if changes.len() == 1 && observed.is_none() {
        report
            .failed
            .push(((*changes[0]).clone(), error.to_string()));
        return None;
    }
    let mut written = BTreeMap::new();
    let mut known = true;
    for change in changes {
        report.writes += 1;
        let alone = match render(&[*change]) {
            Ok(script) => transaction(ns, own, &script).await,
            Err(e) => Err(e),
        };
        match alone.map(|added| tables_after(&[*change], None, &added?)) {
            Ok(Some(t)) => written.extend(t),
            Ok(None) => known = false,
            Err(e) => {
                known = false;
                report.failed.push(((*change).clone(), e.to_string()));
            }
        }
    }
    known.then_some(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run whose transaction's notifications never come stops waiting after
    /// [`OwnNft::WAIT`] (and the listing then counts as unknown); a commit that does come is
    /// handed over at once, and so is an overrun (as "unknown").
    #[tokio::test]
    async fn a_run_waits_for_its_notifications_at_most_the_wait() {
        let own = OwnNft::default();
        own.remember(7);
        let started = std::time::Instant::now();
        assert!(own.added_by(7, own.overruns()).await.is_none());
        let waited = started.elapsed();
        assert!(
            waited >= OwnNft::WAIT && waited < OwnNft::WAIT * 3,
            "waited {waited:?}"
        );

        let mut added = AddedRules::new();
        added.insert((NftFamily::Inet, "forward".into(), "a1".into()), 42);
        let waiting = {
            let own = own.clone();
            tokio::spawn(async move { own.added_by(7, own.overruns()).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        own.committed(7, added.clone());
        assert_eq!(waiting.await.unwrap(), Some(added));
        assert!(started.elapsed() < OwnNft::WAIT / 2);

        let waiting = {
            let own = own.clone();
            let before = own.overruns();
            tokio::spawn(async move { own.added_by(8, before).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        own.overrun();
        assert!(waiting.await.unwrap().is_none());
        assert!(started.elapsed() < OwnNft::WAIT / 2);
    }

    fn table() -> NftTable {
        let mut t = NftTable::default();
        t.chains.insert(
            "forward".into(),
            NftChain {
                base: Some(base_chain("filter", "forward", 0, "accept")),
                rules: vec![NftRule {
                    id: "a1".into(),
                    body: "ct state established accept".into(),
                    handle: None,
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
                    handle: None,
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
    fn equivalence_ignores_bodies_and_order_but_not_ids_or_bases() {
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
        let mut f = table();
        let rules = &mut f.chains.get_mut("forward").unwrap().rules;
        rules.push(NftRule {
            id: "z9".into(),
            body: "drop".into(),
            handle: None,
        });
        let mut g = f.clone();
        g.chains.get_mut("forward").unwrap().rules.reverse();
        assert!(nft_tables_equivalent(&f, &g));
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

    fn r(id: &str, handle: Option<u64>) -> NftRule {
        NftRule {
            id: id.into(),
            body: format!("meta mark {} drop", id.len()),
            handle,
        }
    }

    fn chain(rules: Vec<NftRule>) -> NftChain {
        NftChain { base: None, rules }
    }

    fn one_chain(rules: Vec<NftRule>) -> NftTable {
        let mut t = NftTable::default();
        t.chains.insert("c".into(), chain(rules));
        t
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
    fn order_costs_nothing_ambiguous_chains_are_refilled_and_hook_changes_replace_the_table() {
        let have = one_chain(vec![r("a", Some(1)), r("b", Some(2))]);
        let want = one_chain(vec![r("b", None), r("a", None)]);
        assert_eq!(plan_update(&want, Some(&have)), Some(vec![]));
        // Duplicate ids: handles would be ambiguous.
        let twice = one_chain(vec![r("a", Some(1)), r("a", Some(2))]);
        let ops = plan_update(&want, Some(&twice)).unwrap();
        assert_eq!(ops[0], NftOp::FlushChain("c"));
        assert_eq!(ops.len(), 3);
        // A foreign rule has an id no planner makes: deleted by its handle.
        let foreign = one_chain(vec![r("a", Some(1)), r("<not weft's: handle 7>", Some(7))]);
        assert_eq!(
            plan_update(&one_chain(vec![r("a", None)]), Some(&foreign)),
            Some(vec![NftOp::DeleteRule {
                chain: "c",
                handle: 7
            }])
        );
        // Observed rules without handles cannot be addressed.
        let no_handles = one_chain(vec![r("a", None), r("b", None)]);
        assert_eq!(
            plan_update(&one_chain(vec![r("a", None)]), Some(&no_handles)).unwrap()[0],
            NftOp::FlushChain("c")
        );
        let mut based = one_chain(vec![]);
        based.chains.get_mut("c").unwrap().base =
            Some(base_chain("filter", "forward", 0, "accept"));
        assert_eq!(plan_update(&based, Some(&one_chain(vec![]))), None);
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
