use rand::{Rng as _, SeedableRng as _, rngs::StdRng};

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

#[test]
fn the_feeds_formats_parse_and_bad_lines_are_counted() {
    // FireHOL netset header, Spamhaus DROP `; SBL` comments, a bare address, IPv6, tabs.
    let text = "#\n# firehol_level1\n#\n1.10.16.0/20 ; SBL256894\n5.8.37.0/24\n\
                192.0.2.7\n2001:db8::/32\t# doc range\n10.1.2.3/8\nnot-an-address\n300.1.1.1\n\n";
    let (nets, invalid) = parse_list(text);
    let want: Vec<IpNet> = [
        "1.10.16.0/20",
        "5.8.37.0/24",
        "192.0.2.7/32",
        "2001:db8::/32",
        "10.0.0.0/8",
    ]
    .iter()
    .map(|s| s.parse().expect("net"))
    .collect();
    assert_eq!(nets, want);
    assert_eq!(invalid, 2);
}

#[test]
fn list_settings_name_their_lists() {
    let specs =
        ListSpecs::parse("drop=/lists/drop.txt, /lists/firehol_level1.netset").expect("parse");
    assert_eq!(
        specs.0,
        vec![
            ("drop".to_owned(), PathBuf::from("/lists/drop.txt")),
            (
                "firehol_level1".to_owned(),
                PathBuf::from("/lists/firehol_level1.netset")
            ),
        ]
    );
    assert!(ListSpecs::parse("").expect("empty").0.is_empty());
    assert!(
        ListSpecs::parse("a=/x,a=/y")
            .expect_err("twice")
            .contains("twice")
    );
    assert!(ListSpecs::parse("bad name=/x").is_err());
}

#[test]
fn an_address_is_on_every_list_whose_block_covers_it() {
    let nets = |v: &[&str]| {
        v.iter()
            .map(|s| s.parse().expect("net"))
            .collect::<Vec<IpNet>>()
    };
    let table = Table::build(&[
        (Arc::from("wide"), nets(&["10.0.0.0/8", "2001:db8::/32"])),
        (Arc::from("narrow"), nets(&["10.1.2.0/24", "192.0.2.7/32"])),
    ]);
    assert_eq!(
        table.names(table.lookup(ip("10.1.2.3"))),
        ["wide", "narrow"]
    );
    assert_eq!(table.names(table.lookup(ip("10.9.9.9"))), ["wide"]);
    assert_eq!(table.names(table.lookup(ip("192.0.2.7"))), ["narrow"]);
    assert_eq!(table.lookup(ip("192.0.2.8")), 0);
    assert_eq!(table.names(table.lookup(ip("2001:db8:1::5"))), ["wide"]);
    assert_eq!(
        table.names(table.lookup(ip("::ffff:10.1.2.3"))),
        ["wide", "narrow"],
        "IPv4-mapped"
    );
}

/// The table against a plain scan of every block of every list, on random lists and addresses
/// (addresses drawn near the blocks, so that most of them hit).
#[test]
fn lookups_match_a_linear_scan() {
    let mut rng = StdRng::seed_from_u64(7);
    let lists: Vec<(Arc<str>, Vec<IpNet>)> = (0..5)
        .map(|i| {
            let nets = (0..400)
                .map(|_| {
                    let len = rng.random_range(8..=32);
                    let addr = std::net::Ipv4Addr::from(rng.random::<u32>() & 0x0fff_ffff);
                    IpNet::new(IpAddr::V4(addr), len).expect("len").trunc()
                })
                .collect();
            (Arc::from(format!("list{i}").as_str()), nets)
        })
        .collect();
    let table = Table::build(&lists);
    for _ in 0..20_000 {
        let addr = IpAddr::V4(std::net::Ipv4Addr::from(rng.random::<u32>() & 0x0fff_ffff));
        let want: Vec<String> = lists
            .iter()
            .filter(|(_, nets)| nets.iter().any(|n| n.contains(&addr)))
            .map(|(n, _)| n.to_string())
            .collect();
        assert_eq!(table.names(table.lookup(addr)), want, "{addr}");
    }
}

#[test]
fn a_swapped_file_replaces_its_list_and_a_removed_one_empties_it() {
    let dir = std::env::temp_dir().join(format!("threats-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("bad.netset");
    std::fs::write(&path, "198.51.100.0/24\n").expect("write");
    let lists = ThreatLists::open(&ListSpecs(vec![("bad".into(), path.clone())]));
    assert_eq!(
        lists
            .current()
            .names(lists.current().lookup(ip("198.51.100.9"))),
        ["bad"]
    );
    // Swapped the way feeds are updated: written aside, renamed over.
    let next = dir.join("bad.netset.new");
    std::fs::write(&next, "203.0.113.0/24\n").expect("write");
    std::fs::rename(&next, &path).expect("rename");
    lists.reload_if_changed();
    let t = lists.current();
    assert_eq!(t.lookup(ip("198.51.100.9")), 0);
    assert_eq!(t.names(t.lookup(ip("203.0.113.9"))), ["bad"]);
    std::fs::remove_file(&path).expect("remove");
    lists.reload_if_changed();
    assert!(lists.current().is_empty());
    let _ = std::fs::remove_dir_all(dir);
}
