//! A small `--name value` argument parser (no dependency for a few flags).

use om_constants::config::parse_size;

/// Positional arguments and `--name value` / `--flag` options.
pub struct Opts<'a> {
    pub positional: Vec<&'a str>,
    named: Vec<(&'a str, Option<&'a str>)>,
}

impl<'a> Opts<'a> {
    /// Parses `args`; `valued` take a value, `flags` do not.
    pub fn parse(args: &'a [String], valued: &[&str], flags: &[&str]) -> Result<Opts<'a>, String> {
        let mut o = Opts {
            positional: Vec::new(),
            named: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let Some(name) = a.strip_prefix("--") else {
                o.positional.push(a);
                continue;
            };
            if flags.contains(&name) {
                o.named.push((name, None));
            } else if valued.contains(&name) {
                let v = it.next().ok_or(format!("--{name} needs a value"))?;
                o.named.push((name, Some(v)));
            } else {
                return Err(format!("unknown option --{name}"));
            }
        }
        Ok(o)
    }

    /// The last value given for `--name`.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.named
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| *v)
    }

    /// Whether `--name` was given.
    #[cfg_attr(not(unix), allow(dead_code))] // only bench has flags
    pub fn flag(&self, name: &str) -> bool {
        self.named.iter().any(|(n, _)| *n == name)
    }

    /// `--name` as a byte size (`64MiB`, `1G`, `4096`).
    pub fn size(&self, name: &str) -> Result<Option<u64>, String> {
        self.get(name)
            .map(|v| parse_size(v).ok_or(format!("--{name} {v}: expected a size such as 64MiB")))
            .transpose()
    }

    /// `--name` as a positive whole number.
    pub fn count(&self, name: &str, default: usize) -> Result<usize, String> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or(format!("--{name} {v}: expected a positive number")),
        }
    }
}
