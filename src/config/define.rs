//! The macro that defines every setting once: [`settings!`].
//!
//! One entry per setting gives its section, name, type, default, documentation, command-line
//! flag and the commands that take it. From it come the [`super::Settings`] structs (read
//! from TOML with serde), their `Default`, the command-line flags of each command (with the
//! default in their help, never copied by hand), the code that applies those flags over the
//! settings, and [`super::Settings::toml_document`], which `config/lambda.toml` must equal (a
//! test checks it).
//!
//! ```text
//! /// Worker threads per process; 0 = one per core.
//! workers: usize = 0; flag "workers" short 'w' value "N" for [Batch, Run, Verify, Demo];
//! ```

/// Defines the settings; see the module documentation.
macro_rules! settings {
    (
        $(
            $(#[doc = $section_doc:literal])*
            [$section:ident] $Section:ident {
                $(
                    $(#[doc = $doc:literal])*
                    $field:ident : $ty:ty = $default:expr ;
                    flag $flag:literal $(short $short:literal)? value $value:literal
                    $(example $example:literal)?
                    for [$($command:ident),*] ;
                )*
            }
        )*
    ) => {
        /// Every setting of the program, by section (the tables of the TOML file).
        #[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize, PartialEq)]
        #[serde(default, deny_unknown_fields)]
        pub struct Settings {
            $(
                $(#[doc = $section_doc])*
                pub $section: $Section,
            )*
        }

        $(
            $(#[doc = $section_doc])*
            #[derive(Clone, Debug, serde::Deserialize, serde::Serialize, PartialEq)]
            #[serde(default, deny_unknown_fields)]
            pub struct $Section {
                $(
                    $(#[doc = $doc])*
                    pub $field: $ty,
                )*
            }

            impl Default for $Section {
                fn default() -> Self {
                    $Section { $( $field: $default, )* }
                }
            }
        )*

        impl Settings {
            /// Every setting, described: where it is in the TOML file, its flag and help.
            pub fn described() -> Vec<Described> {
                let defaults = Settings::default();
                vec![ $( $(
                    Described {
                        section: stringify!($section),
                        key: stringify!($field),
                        flag: $flag,
                        short: None $( .or(Some($short)) )?,
                        value_name: $value,
                        help: [$($doc),*].iter().map(|line| line.trim()).collect::<Vec<_>>().join(" "),
                        default: <$ty as flags::FlagValue>::shown(&defaults.$section.$field),
                        example: None $( .or(Some($example)) )?,
                        commands: &[$(CommandName::$command),*],
                        arg: <$ty as flags::FlagValue>::arg,
                    },
                )* )* ]
            }

            /// Applies the flags given in `matches` (those of the settings `command` takes).
            pub fn apply_flags(&mut self, command: CommandName, matches: &clap::ArgMatches) -> Result<(), ConfigError> {
                $( $(
                    if [$(CommandName::$command),*].contains(&command) {
                        if let Some(value) = <$ty as flags::FlagValue>::from_matches(matches, $flag) {
                            self.$section.$field = value.map_err(|why| {
                                ConfigError::Invalid(format!("--{} {why}", $flag))
                            })?;
                        }
                    }
                )* )*
                Ok(())
            }
        }
    };
}

pub(crate) use settings;
