//! Settings that were renamed. A variable under its old name would be ignored without a word
//! (clap reads only the new one), so a service refuses to start while an old name is set and
//! says what to set instead.

/// `(old, new)` environment variable names.
pub type Renamed = [(&'static str, &'static str)];

/// Fails when any old name of `renamed` is set (`is_set`), naming each with its new name.
pub fn refuse(renamed: &Renamed, is_set: impl Fn(&str) -> bool) -> anyhow::Result<()> {
    let set: Vec<String> = renamed
        .iter()
        .filter(|(old, _)| is_set(old))
        .map(|(old, new)| format!("{old} is now {new}"))
        .collect();
    if set.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "renamed settings are set under their old names ({}): set the new names instead",
            set.join(", ")
        )
    }
}

/// [`refuse`] against the process's environment.
pub fn refuse_in_env(renamed: &Renamed) -> anyhow::Result<()> {
    refuse(renamed, |name| std::env::var_os(name).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RENAMED: &Renamed = &[("OLD_A", "NEW_A"), ("OLD_B", "NEW_B")];

    #[test]
    fn an_old_name_set_is_refused_with_its_new_name() {
        let error = refuse(RENAMED, |name| name == "OLD_B").expect_err("refused");
        assert_eq!(
            error.to_string(),
            "renamed settings are set under their old names (OLD_B is now NEW_B): set the new \
             names instead"
        );
    }

    #[test]
    fn new_names_alone_pass() {
        refuse(RENAMED, |name| name == "NEW_A").expect("nothing old is set");
    }
}
