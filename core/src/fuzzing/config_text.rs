//! The `config_toml` target: configuration text, environment variables and flags.

use crate::config::{Config, ConfigError};

/// Parses arbitrary text as a `krest.toml`, with environment variables and flags on top.
///
/// Layout of `data` (as UTF-8, invalid sequences replaced): the text before the first NUL
/// character is the file; after it, each line `--section.key=value` is a command-line flag and
/// each other line `NAME=VALUE` an environment variable.
///
/// Checks: nothing panics; a configuration that loads validates, and its `to_toml` parses back
/// to an equal configuration; an error gives a reason and names the key it is about; a file
/// that does not parse on its own does not load with layers on top either, and without layers
/// `load` agrees with `from_toml`; flags applied one by one with `set` agree with `load`.
pub fn config_toml(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (file, layers) = text.split_once('\0').unwrap_or((&text, ""));
    let mut environment: Vec<(String, String)> = Vec::new();
    let mut flags: Vec<(&str, String)> = Vec::new();
    for line in layers.lines() {
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        match name.strip_prefix("--") {
            Some(key) => flags.push((key, value.to_string())),
            None => environment.push((name.to_string(), value.to_string())),
        }
    }

    let parsed = Config::from_toml(file);
    check_outcome(&parsed);
    let loaded = Config::load(Some(file), environment.clone(), &flags);
    check_outcome(&loaded);
    if parsed.is_err() {
        assert!(
            loaded.is_err(),
            "layers cannot repair a file that does not parse"
        );
    }
    if environment.is_empty() && flags.is_empty() {
        assert_eq!(loaded, parsed, "without layers, load is from_toml");
    }
    check_outcome(&Config::load(None, environment.clone(), &flags));

    // Flags alone, one `set` at a time, end where `load` ends when every set succeeds.
    if environment.is_empty() {
        if let Ok(mut config) = parsed {
            let all_set = flags
                .iter()
                .all(|(key, value)| config.set(key, value).is_ok());
            if all_set {
                let validated = config.validate().map(|()| config);
                check_outcome(&validated);
                assert_eq!(validated, loaded, "set one by one is what load does");
            }
        }
    }
}

/// A loaded configuration is valid and round-trips through TOML; an error explains itself.
fn check_outcome(outcome: &Result<Config, ConfigError>) {
    match outcome {
        Ok(config) => {
            assert_eq!(config.validate(), Ok(()), "what loads is valid");
            let printed = config.to_toml();
            match Config::from_toml(&printed) {
                Ok(again) => assert_eq!(&again, config, "printed configuration:\n{printed}"),
                Err(error) => panic!("the printed configuration does not parse: {error}"),
            }
        }
        Err(error) => {
            // The key is what the caller named, which may be empty (`--=1`); the reason is ours.
            assert!(
                !error.reason.trim().is_empty(),
                "an error gives a reason: {error:?}"
            );
            let message = error.to_string();
            assert!(message.contains(&error.key), "{message}");
        }
    }
}
