//! Threat-list enrichment (`READER_THREAT_LISTS`): the user's IP/CIDR block lists (FireHOL
//! `.netset`/`.ipset`, Spamhaus DROP, most feeds: one address or block a line, `#` or `;`
//! comments), looked up for both addresses of every validated record, which then names the
//! lists each address is on (`source_threats`, `destination_threats`).
//!
//! Every list file is checked for a change like the GeoIP databases
//! (`READER_THREAT_RELOAD_INTERVAL_MS`); a changed file is read again and the lookup table
//! rebuilt off the runtime's workers, then swapped in for the records that follow. A list that
//! is absent or unreadable marks nothing (a warning says why) until it can be read; lines that
//! are neither an address nor a block are skipped and counted in the warning.
//!
//! The table is one prefix trie for both families ([`prefix_trie::joint::JointPrefixMap`])
//! whose values are bitsets of lists; a block's bitset holds the lists of every block that
//! covers it, so one longest-prefix match answers for all lists (`cargo bench -p
//! stream-reader --bench threats`).

use std::{
    net::IpAddr,
    path::PathBuf,
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use ipnet::IpNet;
use prefix_trie::joint::map::JointPrefixMap;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::watched::{Change, WatchedFile};

/// Most lists (one bit each).
pub const MAX_LISTS: usize = 64;

/// The configured lists: `name=path` or `path` (named by the file's stem), comma-separated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListSpecs(pub Vec<(String, PathBuf)>);

impl ListSpecs {
    /// Parses `READER_THREAT_LISTS`; an empty text is no list.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut specs: Vec<(String, PathBuf)> = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, path) = match entry.split_once('=') {
                Some((name, path)) => (name.trim().to_owned(), PathBuf::from(path.trim())),
                None => {
                    let path = PathBuf::from(entry);
                    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
                    (stem.unwrap_or_default(), path)
                }
            };
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
            {
                return Err(format!(
                    "`{entry}`: a list name is letters, digits, `_`, `-` and `.` (name=path)"
                ));
            }
            if specs.iter().any(|(n, _)| *n == name) {
                return Err(format!("the list name `{name}` is given twice"));
            }
            specs.push((name, path));
        }
        if specs.len() > MAX_LISTS {
            return Err(format!("at most {MAX_LISTS} lists"));
        }
        Ok(Self(specs))
    }
}

/// The blocks of one list's text, and how many lines were neither an address nor a block.
pub fn parse_list(text: &str) -> (Vec<IpNet>, usize) {
    let mut nets = Vec::new();
    let mut invalid = 0;
    for line in text.lines() {
        let entry = line.split(['#', ';']).next().unwrap_or_default().trim();
        // Some feeds put more columns after the block (Spamhaus' JSON-less `1.10.16.0/20 ; SBL…`
        // is handled above; `addr<TAB>comment` here).
        let Some(entry) = entry.split_whitespace().next() else {
            continue;
        };
        match entry
            .parse::<IpNet>()
            .map(|n| n.trunc())
            .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
        {
            Ok(net) => nets.push(net),
            Err(_) => invalid += 1,
        }
    }
    (nets, invalid)
}

/// A lookup table: block → bitset of the lists that contain it or a block covering it.
#[derive(Debug, Default)]
pub struct Table {
    names: Vec<Arc<str>>,
    blocks: JointPrefixMap<IpNet, u64>,
}

impl Table {
    /// The table of `lists` (name, blocks), list `i` being bit `i`.
    pub fn build(lists: &[(Arc<str>, Vec<IpNet>)]) -> Self {
        let mut direct: JointPrefixMap<IpNet, u64> = JointPrefixMap::new();
        for (i, (_, nets)) in lists.iter().enumerate().take(MAX_LISTS) {
            for net in nets {
                *direct.entry(*net).or_default() |= 1 << i;
            }
        }
        // Each block also carries the lists of the blocks covering it.
        let mut blocks = JointPrefixMap::new();
        for (net, _) in direct.iter() {
            let mask = direct.cover_values(&net).fold(0, |m, v| m | v);
            blocks.insert(net, mask);
        }
        Self {
            names: lists.iter().map(|(n, _)| n.clone()).collect(),
            blocks,
        }
    }

    /// The lists `ip` is on, as a bitset.
    pub fn lookup(&self, ip: IpAddr) -> u64 {
        self.blocks
            .get_lpm(&IpNet::from(ip.to_canonical()))
            .map_or(0, |(_, mask)| *mask)
    }

    /// The names of the lists in `mask`, in configuration order.
    pub fn names(&self, mask: u64) -> Vec<String> {
        self.names
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, n)| n.to_string())
            .collect()
    }

    /// Blocks in the table.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Whether the table holds no block.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }
}

/// One configured list: its file and the blocks last read from it.
#[derive(Debug)]
struct List {
    name: Arc<str>,
    file: WatchedFile,
    nets: Vec<IpNet>,
}

/// The configured lists and their current table.
#[derive(Debug)]
pub struct ThreatLists {
    /// Whether any list is configured.
    configured: bool,
    lists: std::sync::Mutex<Vec<List>>,
    table: RwLock<Arc<Table>>,
}

impl ThreatLists {
    /// Reads the configured lists (file I/O: call it off the runtime's workers).
    pub fn open(specs: &ListSpecs) -> Arc<Self> {
        let lists = specs
            .0
            .iter()
            .map(|(name, path)| List {
                name: Arc::from(name.as_str()),
                file: WatchedFile::new(path.clone()),
                nets: Vec::new(),
            })
            .collect();
        let t = Arc::new(Self {
            configured: !specs.0.is_empty(),
            lists: std::sync::Mutex::new(lists),
            table: RwLock::default(),
        });
        t.reload_if_changed();
        t
    }

    /// Whether any list is configured.
    pub fn configured(&self) -> bool {
        self.configured
    }

    /// The current table.
    pub fn current(&self) -> Arc<Table> {
        self.table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads the lists whose files changed and rebuilds the table if any did.
    fn reload_if_changed(&self) {
        let mut lists = self.lists.lock().unwrap_or_else(PoisonError::into_inner);
        let mut changed = false;
        for list in lists.iter_mut() {
            let path = list.file.path().display().to_string();
            match list.file.check() {
                Change::Same => continue,
                Change::Gone => {
                    warn!(list = %list.name, %path, "threat list absent: it marks nothing until it appears");
                    list.nets.clear();
                }
                Change::Changed => match std::fs::read_to_string(list.file.path()) {
                    Ok(text) => {
                        let (nets, invalid) = parse_list(&text);
                        if invalid > 0 {
                            warn!(list = %list.name, %path, invalid, "threat list lines skipped: neither an address nor a CIDR block");
                        }
                        info!(list = %list.name, %path, blocks = nets.len(), "threat list loaded");
                        list.nets = nets;
                    }
                    Err(error) => {
                        warn!(list = %list.name, %path, %error, "threat list unreadable; keeping what it held");
                        continue;
                    }
                },
            }
            changed = true;
        }
        if changed {
            let table = Table::build(
                &lists
                    .iter()
                    .map(|l| (l.name.clone(), l.nets.clone()))
                    .collect::<Vec<_>>(),
            );
            *self.table.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(table);
        }
    }

    /// Checks the files for a change every `interval` until `stop`.
    pub fn watch(self: &Arc<Self>, interval: Duration, stop: CancellationToken) {
        if !self.configured() {
            return;
        }
        let lists = self.clone();
        crate::watched::every(interval, stop, move || lists.reload_if_changed());
    }
}

#[cfg(test)]
mod tests;
