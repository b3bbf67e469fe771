//! podward-policy: a podward policy explained, linted, replayed against what a
//! pod did, and learnt from it, by the sidecar's own classification and policy
//! code (the `podward` core), never a second implementation.

#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod args;
mod explain;
mod learn;
mod lint;
mod logs;
mod replay;
mod requests;

use args::{flag, value, Args, Spec};
use podward::config::Config;
use podward::policy::Policy;
use requests::Stated;
use serde_json::{json, Value};
use std::io::Read;
use std::process::ExitCode;

const USAGE: &str = "\
podward-policy: a podward policy explained, linted, replayed and learnt, by the sidecar's own code

  podward-policy explain POLICY METHOD PATH [--pod-namespace NS] [--host HOST] [-o json]
  podward-policy explain POLICY --verb VERB --resource RESOURCE[/SUBRESOURCE] [--subresource S] [--group GROUP]
                                [-n NAMESPACE] [--name NAME] [--pod-namespace NS] [-o json]
  podward-policy explain POLICY --verb VERB --non-resource-url PATH [-o json]
      What the sidecar does with one request, and the rule that decides: exit 0 if it is forwarded,
      1 if podward refuses it. --pod-namespace is the pod's namespace, what $self means.
  podward-policy lint POLICY [--pod-namespace NS] [-o json]
      Rules shadowed by earlier ones, allow rules broader than their preset, deny rules that
      conservative semantics widen (and how), names that cannot match: exit 1 on any warning.
  podward-policy replay POLICY LOG [--pod NS/NAME | --service-account NS:NAME] [-o json]
      Which requests of the log the policy would deny (dry-run rules counted as enforced), by
      rule and request: exit 1 if any.
  podward-policy learn LOG [--pod NS/NAME | --service-account NS:NAME] [--no-names] [--max-names N] [--enforce]
      The least policy that allows every request of the log podward forwarded for one pod (a name
      may end in *) or service account, written to standard output, with \"dryRun\": true unless
      --enforce. A summary goes to standard error.

POLICY is a policy file (the policy.json of the podward-policy ConfigMap) or the ConfigMap as JSON
(kubectl get configmap podward-policy -o json); LOG is the API server's audit log (JSON lines) or the
sidecar's log (kubectl logs POD -c podward): \"-\" reads standard input. Errors exit 2.
";

const OUTPUT: Spec = value("output", Some('o'));
const POD_NAMESPACE: Spec = value("pod-namespace", None);
const POD: Spec = value("pod", None);
const SERVICE_ACCOUNT: Spec = value("service-account", None);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = match command.as_str() {
        "explain" => explain_command(rest),
        "lint" => lint_command(rest),
        "replay" => replay_command(rest),
        "learn" => learn_command(rest),
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(0)
        }
        other => Err(format!("unknown command {other:?}\n\n{USAGE}")),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(message) => {
            eprintln!("podward-policy: {message}");
            ExitCode::from(2)
        }
    }
}

fn json_output(args: &Args) -> Result<bool, String> {
    match args.value("output") {
        None => Ok(false),
        Some("json") => Ok(true),
        Some(other) => Err(format!(
            "-o {other:?}: the one output format besides text is json"
        )),
    }
}

fn read_input(path: &str) -> Result<String, String> {
    if path == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("standard input: {e}"))?;
        return Ok(text);
    }
    std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))
}

/// A policy file, or the ConfigMap that holds one.
fn read_policy(path: &str) -> Result<Policy, String> {
    let text = read_input(path)?;
    let from_configmap = serde_json::from_str::<Value>(&text).ok().and_then(|value| {
        (value.get("kind")? == "ConfigMap")
            .then(|| {
                value
                    .pointer("/data/policy.json")?
                    .as_str()
                    .map(str::to_string)
            })
            .flatten()
    });
    let policy_text = from_configmap.as_deref().unwrap_or(&text);
    Policy::parse(policy_text.as_bytes()).map_err(|e| {
        let yaml = text.contains("kind: ConfigMap");
        let hint = if yaml {
            " (a ConfigMap is read as JSON: kubectl get configmap podward-policy -o json)"
        } else {
            ""
        };
        format!("{path}: {e}{hint}")
    })
}

fn positional<'a>(args: &'a Args, index: usize, what: &str) -> Result<&'a str, String> {
    args.positional
        .get(index)
        .map(String::as_str)
        .ok_or_else(|| format!("{what} is missing\n\n{USAGE}"))
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

fn explain_command(rest: &[String]) -> Result<u8, String> {
    let stated_options = [
        "verb",
        "resource",
        "subresource",
        "group",
        "namespace",
        "name",
        "non-resource-url",
    ];
    let args = Args::parse(
        rest,
        &[
            OUTPUT,
            POD_NAMESPACE,
            value("host", None),
            value("verb", None),
            value("resource", None),
            value("subresource", None),
            value("group", None),
            value("namespace", Some('n')),
            value("name", None),
            value("non-resource-url", None),
        ],
    )?;
    let json = json_output(&args)?;
    let policy = read_policy(positional(&args, 0, "POLICY")?)?;
    let (method, target) = if args.has_any(&stated_options) {
        if args.positional.len() > 1 {
            return Err("give the request as METHOD PATH or with --verb, not both".into());
        }
        stated_request(&args)?.to_http()?
    } else {
        match &args.positional[1..] {
            // As sent: podward reads methods case-sensitively, as the API server does.
            [method, target] => (method.clone(), target.clone()),
            _ => {
                return Err(format!(
                    "give the request as METHOD PATH, or with --verb and --resource\n\n{USAGE}"
                ))
            }
        }
    };
    let self_namespace =
        match args.value("pod-namespace") {
            Some(namespace) => namespace.to_string(),
            None if explain::uses_self_namespace(&policy) => return Err(
                "the policy uses $self: say which namespace the pod runs in, with --pod-namespace"
                    .into(),
            ),
            None => String::new(),
        };
    let config = Config::parse(b"").map_err(|e| e.to_string())?;
    let host = args.value("host").unwrap_or("localhost");
    let request = explain::request_headers(&method, &target, host);
    let explained = explain::explain(&config, &policy, &self_namespace, &request)?;
    if json {
        print_json(&explained.to_json());
    } else {
        println!("{}", explained.to_text(&policy));
    }
    Ok(if explained.allowed { 0 } else { 1 })
}

/// The request as `kubectl auth can-i` would take it.
fn stated_request(args: &Args) -> Result<Stated, String> {
    let verb = args.value("verb").ok_or("--verb is needed")?.to_string();
    if let Some(url) = args.value("non-resource-url") {
        if args.has_any(&["resource", "subresource", "group", "namespace", "name"]) {
            return Err("--non-resource-url takes no resource, group, namespace or name".into());
        }
        return Ok(Stated {
            verb,
            url: url.to_string(),
            ..Stated::default()
        });
    }
    let resource = args
        .value("resource")
        .ok_or("--resource (or --non-resource-url) is needed")?;
    let (resource, subresource) = match (resource.split_once('/'), args.value("subresource")) {
        (Some(_), Some(_)) => {
            return Err("give the subresource in --resource or --subresource, not both".into())
        }
        (Some((resource, subresource)), None) => (resource, subresource),
        (None, subresource) => (resource, subresource.unwrap_or_default()),
    };
    Ok(Stated {
        verb,
        group: args.value("group").unwrap_or_default().to_string(),
        resource: resource.to_string(),
        subresource: subresource.to_string(),
        namespace: args.value("namespace").unwrap_or_default().to_string(),
        name: args.value("name").unwrap_or_default().to_string(),
        url: String::new(),
    })
}

fn lint_command(rest: &[String]) -> Result<u8, String> {
    let args = Args::parse(rest, &[OUTPUT, POD_NAMESPACE])?;
    let json = json_output(&args)?;
    let path = positional(&args, 0, "POLICY")?;
    let policy = read_policy(path)?;
    let findings = lint::lint(&policy, args.value("pod-namespace"));
    let warnings = findings
        .iter()
        .filter(|f| f.severity == lint::Severity::Warning)
        .count();
    if json {
        print_json(&json!({
            "warnings": warnings,
            "notes": findings.len() - warnings,
            "findings": findings.iter().map(lint::Finding::to_json).collect::<Vec<_>>(),
        }));
    } else {
        println!(
            "{path}: {warnings} warnings, {} notes",
            findings.len() - warnings
        );
        for finding in &findings {
            println!("{}", finding.to_text());
        }
    }
    Ok(if warnings > 0 { 1 } else { 0 })
}

fn who(args: &Args) -> Result<Option<logs::Who>, String> {
    match (args.value("pod"), args.value("service-account")) {
        (Some(_), Some(_)) => Err("--pod or --service-account, not both".into()),
        (Some(pod), None) => logs::Who::parse_pod(pod).map(Some),
        (None, Some(account)) => logs::Who::parse_service_account(account).map(Some),
        (None, None) => Ok(None),
    }
}

fn replay_command(rest: &[String]) -> Result<u8, String> {
    let args = Args::parse(rest, &[OUTPUT, POD, SERVICE_ACCOUNT])?;
    let json = json_output(&args)?;
    let policy = read_policy(positional(&args, 0, "POLICY")?)?;
    let log = logs::read(&read_input(positional(&args, 1, "LOG")?)?);
    let (who, observed) = logs::select(&log, who(&args)?)?;
    let replayed = replay::replay(&policy, who.namespace(), &observed);
    if json {
        let mut value = replayed.to_json();
        value["client"] = Value::from(who.describe());
        print_json(&value);
    } else {
        println!("{}", replayed.to_text(&who.describe()));
    }
    Ok(if replayed.denied_count() > 0 { 1 } else { 0 })
}

fn learn_command(rest: &[String]) -> Result<u8, String> {
    let args = Args::parse(
        rest,
        &[
            POD,
            SERVICE_ACCOUNT,
            flag("no-names"),
            value("max-names", None),
            flag("enforce"),
        ],
    )?;
    let log = logs::read(&read_input(positional(&args, 0, "LOG")?)?);
    let (who, observed) = logs::select(&log, who(&args)?)?;
    let max_names = match args.value("max-names") {
        Some(number) => number
            .parse()
            .map_err(|_| format!("--max-names {number:?}: expected a number"))?,
        None => 10,
    };
    let options = learn::Options {
        names: !args.flag("no-names"),
        max_names,
        dry_run: !args.flag("enforce"),
    };
    let learnt = learn::learn(&observed, who.namespace(), &options)?;
    print!("{}", learnt.text);
    let mut summary = vec![format!(
        "podward-policy: {} rules learnt from {} requests of {} that podward forwarded{}",
        learnt.rules,
        learnt.learnt_from,
        who.describe(),
        if options.dry_run {
            "; in dry-run until the line \"dryRun\": true is deleted"
        } else {
            ""
        }
    )];
    if let (count @ 1.., Some(example)) = &learnt.refused_when_recorded {
        summary.push(format!(
            "  not learnt: {count} requests podward refused when they were made (e.g. {example})"
        ));
    }
    for (stated, count, rule) in &learnt.left_denied {
        summary.push(format!(
            "  left denied: {} ({count} requests), which {rule} refuses; allow it by hand if it must be",
            stated.describe()
        ));
    }
    if learnt.refused_upstream > 0 {
        summary.push(format!(
            "  {} of them the API server refused (401 or 403): allowed here all the same, as the pod asks \
             for them; RBAC still decides",
            learnt.refused_upstream
        ));
    }
    for dropped in &learnt.names_dropped {
        summary.push(format!(
            "  any name: {dropped}, more than --max-names {max_names}"
        ));
    }
    replay::push_problems(&mut summary, &learnt.unclassifiable, &learnt.disagreements);
    eprintln!("{}", summary.join("\n"));
    Ok(0)
}
