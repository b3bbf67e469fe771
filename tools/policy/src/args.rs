//! The command line: positional arguments and `--option value` pairs, each
//! option declared by its command so that a typo is an error, not ignored.

use std::collections::BTreeMap;

/// One option a command takes.
pub struct Spec {
    pub long: &'static str,
    pub short: Option<char>,
    /// Takes a value (`--verb get`), or is a flag (`--enforce`).
    pub value: bool,
}

pub const fn value(long: &'static str, short: Option<char>) -> Spec {
    Spec {
        long,
        short,
        value: true,
    }
}

pub const fn flag(long: &'static str) -> Spec {
    Spec {
        long,
        short: None,
        value: false,
    }
}

#[derive(Debug, Default)]
pub struct Args {
    pub positional: Vec<String>,
    options: BTreeMap<&'static str, String>,
}

impl Args {
    pub fn parse(args: &[String], specs: &[Spec]) -> Result<Args, String> {
        let mut parsed = Args::default();
        let mut rest = args.iter();
        let mut only_positional = false;
        while let Some(arg) = rest.next() {
            if only_positional || arg == "-" || !arg.starts_with('-') {
                parsed.positional.push(arg.clone());
                continue;
            }
            if arg == "--" {
                only_positional = true;
                continue;
            }
            let (name, inline) = match arg.strip_prefix("--") {
                Some(long) => match long.split_once('=') {
                    Some((name, value)) => (name.to_string(), Some(value.to_string())),
                    None => (long.to_string(), None),
                },
                None => (arg[1..].to_string(), None),
            };
            let spec = specs
                .iter()
                .find(|spec| {
                    spec.long == name
                        || (name.chars().count() == 1 && spec.short == name.chars().next())
                })
                .ok_or_else(|| format!("unknown option {arg}"))?;
            let value = if spec.value {
                match inline {
                    Some(value) => value,
                    None => rest
                        .next()
                        .cloned()
                        .ok_or_else(|| format!("--{} needs a value", spec.long))?,
                }
            } else if inline.is_some() {
                return Err(format!("--{} takes no value", spec.long));
            } else {
                String::new()
            };
            if parsed.options.insert(spec.long, value).is_some() {
                return Err(format!("--{} is given twice", spec.long));
            }
        }
        Ok(parsed)
    }

    pub fn value(&self, long: &str) -> Option<&str> {
        self.options.get(long).map(String::as_str)
    }

    pub fn flag(&self, long: &str) -> bool {
        self.options.contains_key(long)
    }

    pub fn has_any(&self, longs: &[&str]) -> bool {
        longs.iter().any(|long| self.options.contains_key(long))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[Spec] = &[
        value("verb", None),
        value("namespace", Some('n')),
        value("host", None),
        flag("enforce"),
    ];

    fn parse(args: &[&str]) -> Result<Args, String> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        Args::parse(&args, SPECS)
    }

    #[test]
    fn options_values_flags_and_positionals() {
        let args = parse(&[
            "policy.json",
            "--verb",
            "get",
            "-n",
            "team-a",
            "--host=localhost:8001",
            "--enforce",
            "-",
        ])
        .unwrap();
        assert_eq!(args.positional, ["policy.json", "-"]);
        assert_eq!(args.value("verb"), Some("get"));
        assert_eq!(args.value("namespace"), Some("team-a"));
        assert_eq!(args.value("host"), Some("localhost:8001"));
        assert!(args.flag("enforce") && !args.flag("other"));
    }

    #[test]
    fn mistakes_are_errors() {
        for (args, error) in [
            (&["--verbs", "get"][..], "unknown option --verbs"),
            (&["--verb"][..], "--verb needs a value"),
            (&["--verb", "a", "--verb", "b"][..], "--verb is given twice"),
            (&["--enforce=yes"][..], "--enforce takes no value"),
        ] {
            assert_eq!(parse(args).unwrap_err(), error, "{args:?}");
        }
        assert_eq!(parse(&["--", "--verb"]).unwrap().positional, ["--verb"]);
    }
}
