//! Settings on the command line: each setting's flag, built from its description, and its
//! value read back from clap's matches — the same code for every setting of every type.

use std::path::PathBuf;
use std::str::FromStr;

use clap::{Arg, ArgAction, ArgMatches};

use super::{CommandName, Described, OnInvalid};

/// A setting's type as a command-line value.
pub trait FlagValue: Sized {
    /// Configures the flag's arity and action (one value, several, or a switch).
    fn arg(arg: Arg) -> Arg {
        arg.num_args(1).action(ArgAction::Set)
    }
    /// The value given on the command line, if the flag was.
    fn from_matches(matches: &ArgMatches, id: &str) -> Option<Result<Self, String>>;
    /// How a value is shown in `--help` (`None`: no default is shown).
    fn shown(&self) -> Option<String>;
}

/// The one string given for flag `id`, parsed as `T`.
fn one<T: FromStr>(matches: &ArgMatches, id: &str) -> Option<Result<T, String>>
where
    T::Err: std::fmt::Display,
{
    let text = matches.get_one::<String>(id)?;
    Some(text.parse::<T>().map_err(|e| format!("{text:?}: {e}")))
}

macro_rules! parsed {
    ($($ty:ty),*) => {$(
        impl FlagValue for $ty {
            fn from_matches(matches: &ArgMatches, id: &str) -> Option<Result<Self, String>> {
                one(matches, id)
            }
            fn shown(&self) -> Option<String> {
                Some(self.to_string())
            }
        }
    )*};
}

parsed!(usize, u64, String, OnInvalid);

impl FlagValue for PathBuf {
    fn from_matches(matches: &ArgMatches, id: &str) -> Option<Result<Self, String>> {
        one(matches, id)
    }
    fn shown(&self) -> Option<String> {
        (!self.as_os_str().is_empty()).then(|| self.display().to_string())
    }
}

/// A switch: given, it turns the setting on.
impl FlagValue for bool {
    fn arg(arg: Arg) -> Arg {
        arg.num_args(0).action(ArgAction::SetTrue)
    }
    fn from_matches(matches: &ArgMatches, id: &str) -> Option<Result<Self, String>> {
        matches.get_flag(id).then_some(Ok(true))
    }
    fn shown(&self) -> Option<String> {
        None
    }
}

/// One or more values after the flag.
impl FlagValue for Vec<PathBuf> {
    fn arg(arg: Arg) -> Arg {
        arg.num_args(1..).action(ArgAction::Append)
    }
    fn from_matches(matches: &ArgMatches, id: &str) -> Option<Result<Self, String>> {
        let values = matches.get_many::<String>(id)?;
        Some(Ok(values.map(PathBuf::from).collect()))
    }
    fn shown(&self) -> Option<String> {
        Some(self.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" "))
    }
}

/// Given once per value (`--sink a=x --sink b=y`).
impl FlagValue for Vec<String> {
    fn arg(arg: Arg) -> Arg {
        arg.num_args(1).action(ArgAction::Append)
    }
    fn from_matches(matches: &ArgMatches, id: &str) -> Option<Result<Self, String>> {
        let values = matches.get_many::<String>(id)?;
        Some(Ok(values.cloned().collect()))
    }
    fn shown(&self) -> Option<String> {
        (!self.is_empty()).then(|| self.join(" "))
    }
}

impl<T: FlagValue> FlagValue for Option<T> {
    fn from_matches(matches: &ArgMatches, id: &str) -> Option<Result<Self, String>> {
        T::from_matches(matches, id).map(|v| v.map(Some))
    }
    fn shown(&self) -> Option<String> {
        self.as_ref().and_then(T::shown)
    }
}

/// The flag of a described setting, its help ending with the default.
pub fn arg(setting: &Described) -> Arg {
    let mut help = setting.help.clone();
    if let Some(default) = &setting.default {
        help.push_str(&format!(" [default: {default}]"));
    }
    let mut arg = Arg::new(setting.flag).long(setting.flag).value_name(setting.value_name).help(help);
    if let Some(short) = setting.short {
        arg = arg.short(short);
    }
    let arg = (setting.arg)(arg);
    // Given twice, the last one counts (as a wrapper script adding a flag expects); a list
    // (`--input a b`) takes every value instead.
    if matches!(arg.get_action(), ArgAction::Append) {
        arg
    } else {
        arg.overrides_with(setting.flag)
    }
}

/// Adds the flags of the settings each command takes to that command.
pub fn with_setting_flags(mut cli: clap::Command) -> clap::Command {
    let described = super::Settings::described();
    for command in CommandName::ALL {
        let args: Vec<Arg> = described.iter().filter(|s| s.commands.contains(&command)).map(arg).collect();
        if !args.is_empty() {
            cli = cli.mut_subcommand(command.as_str(), |sub| sub.args(args));
        }
    }
    cli
}
