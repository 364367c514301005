//! Tests of the settings: sources, precedence, bounds and the documented example file.
use super::*;

fn shipped() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/lambda.toml")
}

/// `config/lambda.toml` is the generated document: every setting, its default and its
/// help, once. (To regenerate it: `LAMBDA_WRITE_CONFIG=1 cargo test --lib config`.)
#[test]
fn the_shipped_file_is_the_document_of_the_defaults() {
    let document = Settings::toml_document();
    if std::env::var_os("LAMBDA_WRITE_CONFIG").is_some() {
        std::fs::write(shipped(), &document).unwrap();
    }
    assert_eq!(std::fs::read_to_string(shipped()).unwrap(), document, "config/lambda.toml is out of date");
    assert_eq!(Settings::from_toml(&document).unwrap(), Settings::default());
}

/// Each flag sets its own setting, in every command that takes it; the help shows the
/// default the settings have.
#[test]
fn every_flag_sets_its_setting_and_shows_its_default() {
    let cli = flags::with_setting_flags(
        clap::Command::new("lambda")
            .subcommands(CommandName::ALL.map(|c| clap::Command::new(c.as_str())))
            .subcommand_required(true),
    );
    for setting in Settings::described() {
        for command in setting.commands {
            let value = match (setting.section, setting.key) {
                ("state", "on_invalid") => "rebuild",
                ("filters", "event") => "amount >= 1",
                ("filters", "view") => "total > 1",
                ("dataflow", "workers") => "3",
                ("dataflow", "processes") => "2",
                ("dataflow", "process") => "1",
                _ => "17",
            };
            let mut args = vec!["lambda".to_owned(), command.as_str().to_owned(), format!("--{}", setting.flag)];
            if setting.default.is_some() || setting.example.is_some() || !setting.value_name.is_empty() {
                args.push(value.to_owned());
            }
            let matches = cli.clone().try_get_matches_from(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            let (_, sub) = matches.subcommand().unwrap();
            let mut settings = Settings::default();
            settings.apply_flags(*command, sub).unwrap();
            let changed = toml::Value::try_from(&settings).unwrap()[setting.section].get(setting.key).cloned();
            let default =
                toml::Value::try_from(Settings::default()).unwrap()[setting.section].get(setting.key).cloned();
            assert_ne!(
                changed,
                default,
                "--{} in {} changes {}.{}",
                setting.flag,
                command.as_str(),
                setting.section,
                setting.key
            );
        }
        let help = flags::arg(&setting).get_help().unwrap().to_string();
        if let Some(default) = &setting.default {
            assert!(help.ends_with(&format!("[default: {default}]")), "{help}");
        }
    }
}

#[test]
fn unknown_keys_are_errors() {
    assert!(Settings::from_toml("[input]\nfiels = []").is_err());
}

#[test]
fn cluster_options_are_checked() {
    let mut s = Settings::default();
    s.dataflow.processes = 2;
    s.dataflow.process = 2;
    assert!(s.timely_config().is_err());
}
