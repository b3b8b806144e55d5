//! GeoIP / ASN enrichment from MaxMind-format databases the user supplies (`READER_GEOIP_CITY_DB`: a
//! GeoLite2/GeoIP2 City or Country database; `READER_GEOIP_ASN_DB`: a GeoLite2 ASN database).
//!
//! Each database is read into memory and checked for a change (modification time, size and
//! inode) every `READER_GEOIP_RELOAD_INTERVAL_MS`; a changed file is loaded again and replaces the old one
//! for the records that follow, without a restart. A database that is not configured, absent
//! or unreadable means no enrichment from it, never an error: a warning says why, the old
//! database (if any) stays in use, and the file is tried again at the next check.
//!
//! Lookups are cached per address (up to [`CACHE_ENTRIES`], emptied when full and whenever a
//! database is reloaded): access logs repeat their addresses, and a lookup that decodes a City
//! record costs about as much as parsing and validating the record itself (BENCHMARKS.md).

use std::{
    collections::HashMap,
    net::IpAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use log_schema::Geo;
use maxminddb::Reader;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::watched::{Change, WatchedFile};

/// The fields read from a City or Country database.
#[derive(Deserialize)]
struct CityRecord<'a> {
    #[serde(borrow)]
    country: Option<Country<'a>>,
    #[serde(borrow)]
    city: Option<City<'a>>,
}

#[derive(Deserialize)]
struct Country<'a> {
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct City<'a> {
    #[serde(borrow)]
    names: Option<Names<'a>>,
}

#[derive(Deserialize)]
struct Names<'a> {
    en: Option<&'a str>,
}

/// The fields read from an ASN database.
#[derive(Deserialize)]
struct AsnRecord<'a> {
    autonomous_system_number: Option<u32>,
    autonomous_system_organization: Option<&'a str>,
}

/// Addresses whose enrichment is remembered.
pub const CACHE_ENTRIES: usize = 65_536;

/// One database file and what was loaded from it.
#[derive(Debug)]
struct Database {
    name: &'static str,
    file: Option<WatchedFile>,
    /// Bumped at every load, to invalidate cached lookups.
    generation: AtomicU64,
    loaded: RwLock<Option<Arc<Reader<Vec<u8>>>>>,
}

impl Database {
    fn new(name: &'static str, path: Option<PathBuf>) -> Self {
        let db = Self {
            name,
            file: path.map(WatchedFile::new),
            generation: AtomicU64::new(0),
            loaded: RwLock::new(None),
        };
        db.reload_if_changed();
        db
    }

    fn current(&self) -> Option<Arc<Reader<Vec<u8>>>> {
        self.loaded
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Loads the file again if its modification time, size or inode changed since the last look.
    fn reload_if_changed(&self) {
        let Some(file) = &self.file else { return };
        let path = file.path();
        match file.check() {
            Change::Same => return,
            Change::Gone => {
                warn!(db = self.name, path = %path.display(), "GeoIP database absent: no enrichment from it until it appears");
                return;
            }
            Change::Changed => {}
        }
        match Reader::open_readfile(path) {
            Ok(reader) => {
                info!(db = self.name, path = %path.display(), kind = %reader.metadata.database_type, "GeoIP database loaded");
                *self.loaded.write().unwrap_or_else(PoisonError::into_inner) =
                    Some(Arc::new(reader));
                self.generation.fetch_add(1, Ordering::Release);
            }
            Err(error) => {
                warn!(db = self.name, path = %path.display(), %error, "GeoIP database unreadable; keeping the previous one");
            }
        }
    }
}

/// The enrichment databases.
#[derive(Debug)]
pub struct GeoIp {
    city: Database,
    asn: Database,
    cache: Mutex<Cache>,
}

/// Lookups of the databases' current generations.
#[derive(Debug, Default)]
struct Cache {
    generations: (u64, u64),
    entries: HashMap<IpAddr, Option<Geo>>,
}

impl GeoIp {
    /// Opens what is configured (absent paths: no enrichment).
    pub fn open(city: Option<PathBuf>, asn: Option<PathBuf>) -> Arc<Self> {
        Arc::new(Self {
            city: Database::new("city", city),
            asn: Database::new("asn", asn),
            cache: Mutex::default(),
        })
    }

    /// True when a database is configured.
    pub fn configured(&self) -> bool {
        self.city.file.is_some() || self.asn.file.is_some()
    }

    /// What the databases say about `ip`; `None` when they say nothing (cached).
    pub fn lookup(&self, ip: IpAddr) -> Option<Geo> {
        if !self.configured() {
            return None;
        }
        let generations = (
            self.city.generation.load(Ordering::Acquire),
            self.asn.generation.load(Ordering::Acquire),
        );
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.generations != generations || cache.entries.len() >= CACHE_ENTRIES {
            cache.entries.clear();
            cache.generations = generations;
        }
        cache
            .entries
            .entry(ip)
            .or_insert_with(|| self.lookup_uncached(ip))
            .clone()
    }

    /// What the databases say about `ip`, read from them.
    pub fn lookup_uncached(&self, ip: IpAddr) -> Option<Geo> {
        let mut geo = Geo::default();
        if let Some(db) = self.city.current()
            && let Ok(Some(r)) = db.lookup::<CityRecord<'_>>(ip)
        {
            geo.country = r.country.and_then(|c| c.iso_code).map(str::to_owned);
            geo.city = r
                .city
                .and_then(|c| c.names)
                .and_then(|n| n.en)
                .map(str::to_owned);
        }
        if let Some(db) = self.asn.current()
            && let Ok(Some(r)) = db.lookup::<AsnRecord<'_>>(ip)
        {
            geo.asn = r.autonomous_system_number;
            geo.as_org = r.autonomous_system_organization.map(str::to_owned);
        }
        geo.non_empty()
    }

    /// Checks both files for a change every `interval` until `stop`.
    pub fn watch(self: &Arc<Self>, interval: Duration, stop: CancellationToken) {
        if !self.configured() {
            return;
        }
        let geo = self.clone();
        crate::watched::every(interval, stop, move || {
            geo.city.reload_if_changed();
            geo.asn.reload_if_changed();
        });
    }
}
