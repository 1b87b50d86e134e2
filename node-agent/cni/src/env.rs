//! The CNI environment variables: which command, which attachment, and `CNI_ARGS`.

use std::collections::HashMap;

use crate::proto::{self, Failure, codes};
use crate::result::failure;

/// `CNI_COMMAND`, as the runtime spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CniCommand {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl CniCommand {
    /// Exact, upper-case match, as libcni's skel does.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "ADD" => Some(Self::Add),
            "DEL" => Some(Self::Del),
            "CHECK" => Some(Self::Check),
            "STATUS" => Some(Self::Status),
            "GC" => Some(Self::Gc),
            "VERSION" => Some(Self::Version),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Add => "ADD",
            Self::Del => "DEL",
            Self::Check => "CHECK",
            Self::Status => "STATUS",
            Self::Gc => "GC",
            Self::Version => "VERSION",
        }
    }

    /// The agent's command; `None` for VERSION, which the plugin answers alone.
    pub fn to_proto(self) -> Option<proto::Command> {
        match self {
            Self::Add => Some(proto::Command::Add),
            Self::Del => Some(proto::Command::Del),
            Self::Check => Some(proto::Command::Check),
            Self::Status => Some(proto::Command::Status),
            Self::Gc => Some(proto::Command::Gc),
            Self::Version => None,
        }
    }

    /// ADD, DEL and CHECK act on one attachment and need the container variables.
    pub fn is_per_attachment(self) -> bool {
        matches!(self, Self::Add | Self::Del | Self::Check)
    }
}

/// Reads `CNI_COMMAND`; a person running the binary by hand gets told what it is.
pub fn command(env: &HashMap<String, String>) -> Result<CniCommand, Failure> {
    let Some(value) = env.get("CNI_COMMAND").filter(|v| !v.is_empty()) else {
        return Err(failure(
            codes::INVALID_ENVIRONMENT,
            "CNI_COMMAND is not set: weft-cni is a CNI plugin, started by the container runtime",
        ));
    };
    CniCommand::parse(value).ok_or_else(|| {
        failure(
            codes::INVALID_ENVIRONMENT,
            format!(
                "CNI_COMMAND {value:?} is unknown; expected ADD, DEL, CHECK, STATUS, GC or VERSION"
            ),
        )
    })
}

/// The attachment one ADD/DEL/CHECK acts on. Empty for STATUS and GC.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attachment {
    pub container_id: String,
    /// May be empty on DEL: the sandbox can be gone already.
    pub netns: String,
    pub if_name: String,
    pub args: CniArgs,
}

/// The `CNI_ARGS` keys Weft reads; every other key is ignored (as `IgnoreUnknown` asks).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
    /// `IP=`: a requested address, without prefix.
    pub ip: Option<String>,
    /// `MAC=`: a requested hardware address.
    pub mac: Option<String>,
    /// `GW_PRIORITY=`: the attachment's default-route priority (the config's `gwPriority`
    /// wins).
    pub gw_priority: Option<String>,
}

/// Reads and checks the variables `command` needs (SPEC.md, "Parameters").
pub fn attachment(
    command: CniCommand,
    env: &HashMap<String, String>,
) -> Result<Attachment, Failure> {
    if !command.is_per_attachment() {
        return Ok(Attachment::default());
    }
    let container_id = required(env, command, "CNI_CONTAINERID", "the container's id")?;
    let if_name = required(
        env,
        command,
        "CNI_IFNAME",
        "the interface name inside the container",
    )?;
    let netns = if command == CniCommand::Del {
        // DEL must clean up even when the runtime no longer has a namespace.
        env.get("CNI_NETNS").cloned().unwrap_or_default()
    } else {
        required(
            env,
            command,
            "CNI_NETNS",
            "the path of the container's network namespace",
        )?
    };
    if command == CniCommand::Add {
        check_if_name(&if_name)?;
    }
    let args = parse_args(env.get("CNI_ARGS").map(String::as_str).unwrap_or_default())?;
    Ok(Attachment {
        container_id,
        netns,
        if_name,
        args,
    })
}

fn required(
    env: &HashMap<String, String>,
    command: CniCommand,
    name: &str,
    what: &str,
) -> Result<String, Failure> {
    match env.get(name) {
        Some(value) if !value.is_empty() => Ok(value.clone()),
        _ => Err(failure(
            codes::INVALID_ENVIRONMENT,
            format!(
                "{name} is not set, but {} needs it ({what})",
                command.name()
            ),
        )),
    }
}

/// SPEC.md: not empty, not "." or "..", under 16 bytes, no '/', ':' or whitespace. Checked
/// here so a bad name is refused before the agent allocates anything for it.
pub fn check_if_name(name: &str) -> Result<(), Failure> {
    let reason = if name == "." || name == ".." {
        Some("it may not be \".\" or \"..\"")
    } else if name.len() > 15 {
        Some("it must be shorter than 16 characters")
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        Some("it may not contain '/', ':' or whitespace")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(failure(
            codes::INVALID_ENVIRONMENT,
            format!("CNI_IFNAME {name:?} is not a valid interface name: {reason}"),
        )),
    }
}

/// Parses `K=V;K=V`. Empty segments (a trailing `;`) are skipped; a segment without `=` is
/// the runtime's mistake and is refused rather than guessed at.
pub fn parse_args(raw: &str) -> Result<CniArgs, Failure> {
    let mut args = CniArgs::default();
    for pair in raw.split(';').filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(failure(
                codes::INVALID_ENVIRONMENT,
                format!("CNI_ARGS entry {pair:?} is not KEY=VALUE"),
            ));
        };
        let value = (!value.is_empty()).then(|| value.to_owned());
        match key {
            "K8S_POD_NAMESPACE" => args.pod_namespace = value,
            "K8S_POD_NAME" => args.pod_name = value,
            "IP" => args.ip = value,
            "MAC" => args.mac = value,
            "GW_PRIORITY" => args.gw_priority = value,
            _ => {}
        }
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_kubelet_args_and_ignores_unknown_keys() {
        let args = parse_args(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;\
             K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1;IP=10.0.0.7;MAC=02:00:00:00:00:07;GW_PRIORITY=-3",
        )
        .expect("valid CNI_ARGS");
        assert_eq!(
            args,
            CniArgs {
                pod_namespace: Some("shop".into()),
                pod_name: Some("web-0".into()),
                ip: Some("10.0.0.7".into()),
                mac: Some("02:00:00:00:00:07".into()),
                gw_priority: Some("-3".into()),
            }
        );
    }

    #[test]
    fn empty_args_and_empty_values_are_absent() {
        assert_eq!(parse_args("").expect("empty is fine"), CniArgs::default());
        assert_eq!(
            parse_args("K8S_POD_NAME=").expect("empty value").pod_name,
            None
        );
    }

    #[test]
    fn a_value_may_contain_equals() {
        let args = parse_args("K8S_POD_NAME=a=b").expect("split at the first '='");
        assert_eq!(args.pod_name.as_deref(), Some("a=b"));
    }

    #[test]
    fn refuses_an_entry_without_equals() {
        let err = parse_args("K8S_POD_NAME=x;garbage").expect_err("no '='");
        assert_eq!(err.code, codes::INVALID_ENVIRONMENT);
        assert!(err.msg.contains("\"garbage\""), "{}", err.msg);
    }

    #[test]
    fn command_is_exact_and_named_when_missing() {
        assert_eq!(
            command(&env(&[("CNI_COMMAND", "GC")])).ok(),
            Some(CniCommand::Gc)
        );
        let missing = command(&env(&[])).expect_err("unset");
        assert!(
            missing.msg.contains("CNI_COMMAND is not set"),
            "{}",
            missing.msg
        );
        let unknown = command(&env(&[("CNI_COMMAND", "add")])).expect_err("lower case");
        assert_eq!(unknown.code, codes::INVALID_ENVIRONMENT);
        assert!(unknown.msg.contains("\"add\""), "{}", unknown.msg);
    }

    #[test]
    fn add_names_the_missing_variable() {
        let err = attachment(
            CniCommand::Add,
            &env(&[("CNI_CONTAINERID", "c1"), ("CNI_NETNS", "/run/netns/x")]),
        )
        .expect_err("no ifname");
        assert_eq!(err.code, codes::INVALID_ENVIRONMENT);
        assert!(err.msg.starts_with("CNI_IFNAME is not set"), "{}", err.msg);
    }

    #[test]
    fn add_and_check_need_a_netns_but_del_does_not() {
        let vars = env(&[
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", ""),
        ]);
        for command in [CniCommand::Add, CniCommand::Check] {
            let err = attachment(command, &vars).expect_err("empty netns");
            assert!(err.msg.starts_with("CNI_NETNS is not set"), "{}", err.msg);
        }
        let del = attachment(CniCommand::Del, &vars).expect("DEL without netns");
        assert_eq!(del.netns, "");
        assert_eq!(del.container_id, "c1");
    }

    #[test]
    fn status_and_gc_need_no_container_variables() {
        for command in [CniCommand::Status, CniCommand::Gc] {
            assert_eq!(
                attachment(command, &env(&[])).ok(),
                Some(Attachment::default())
            );
        }
    }

    #[test]
    fn interface_names_follow_the_spec() {
        for good in ["eth0", "net1", "a-very-long-na"] {
            assert!(check_if_name(good).is_ok(), "{good}");
        }
        for bad in [".", "..", "sixteen-chars-xx", "eth 0", "a/b", "a:b"] {
            assert!(check_if_name(bad).is_err(), "{bad}");
        }
    }
}
