//! Enumerated settings as users type them: `KAFKA_SECURITY_PROTOCOL=SASL_SSL`, `sasl_ssl` and
//! `sasl-ssl` are the same value. Kafka's own documentation spells values in upper case with
//! underscores, clap in lower case with hyphens; every service accepts both, in any case.

use std::{ffi::OsStr, marker::PhantomData};

use clap::{
    Arg, Command, ValueEnum,
    builder::{PossibleValue, TypedValueParser},
    error::ErrorKind,
};

/// A clap value parser for the enum `E` that ignores case and takes `_` for `-`. The help
/// still lists the possible values.
#[derive(Debug)]
pub struct Lenient<E>(PhantomData<fn() -> E>);

impl<E> Lenient<E> {
    /// The parser (`#[arg(value_parser = Lenient::<E>::new())]`).
    pub const fn new() -> Self {
        Self(PhantomData)
    }
}

impl<E> Default for Lenient<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E> Clone for Lenient<E> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl<E: ValueEnum + Clone + Send + Sync + 'static> Lenient<E> {
    /// `value` as `E`, or `None`.
    pub fn parse(value: &str) -> Option<E> {
        E::from_str(&value.trim().replace('_', "-"), true).ok()
    }
}

impl<E: ValueEnum + Clone + Send + Sync + 'static> TypedValueParser for Lenient<E> {
    type Value = E;

    fn parse_ref(&self, cmd: &Command, arg: Option<&Arg>, value: &OsStr) -> Result<E, clap::Error> {
        let text = value.to_string_lossy();
        Self::parse(&text).ok_or_else(|| {
            let names: Vec<String> = E::value_variants()
                .iter()
                .filter_map(ValueEnum::to_possible_value)
                .map(|p| p.get_name().to_owned())
                .collect();
            let setting = arg.map_or_else(String::new, |a| {
                let env = a
                    .get_env()
                    .map(|e| format!(" ({})", e.to_string_lossy()))
                    .unwrap_or_default();
                format!(" for '--{}'{env}", a.get_long().unwrap_or_default())
            });
            clap::Error::raw(
                ErrorKind::InvalidValue,
                format!(
                    "invalid value '{text}'{setting}: expected one of {} (any case, `_` or `-`)\n",
                    names.join(", ")
                ),
            )
            .with_cmd(cmd)
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            E::value_variants()
                .iter()
                .filter_map(ValueEnum::to_possible_value),
        ))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::kafka::config::SecurityProtocol;

    #[derive(Debug, Parser)]
    struct Args {
        #[arg(long, value_parser = Lenient::<SecurityProtocol>::new(), default_value = "plaintext")]
        protocol: SecurityProtocol,
    }

    #[test]
    fn the_spellings_users_type_are_one_value() {
        for spelling in ["SASL_SSL", "sasl_ssl", "sasl-ssl", "Sasl_Ssl", " SASL_SSL "] {
            let args = Args::try_parse_from(["t", "--protocol", spelling]).expect(spelling);
            assert_eq!(args.protocol, SecurityProtocol::SaslSsl, "{spelling}");
        }
        assert_eq!(
            Args::try_parse_from(["t"]).expect("default").protocol,
            SecurityProtocol::Plaintext
        );
    }

    #[test]
    fn an_unknown_value_names_the_setting_and_the_choices() {
        let error = Args::try_parse_from(["t", "--protocol", "tls"])
            .expect_err("tls is not a protocol")
            .to_string();
        assert!(
            error.contains("invalid value 'tls' for '--protocol'"),
            "{error}"
        );
        assert!(error.contains("sasl-ssl"), "{error}");
    }
}
