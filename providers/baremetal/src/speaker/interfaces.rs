//! The node's network interfaces, read from `/sys/class/net`.

use std::path::Path;

use super::packet::{Mac, parse_mac};

const IFF_UP: u32 = 0x1;
const IFF_LOOPBACK: u32 = 0x8;
const ARPHRD_ETHER: u32 = 1;

/// An Ethernet interface the speaker may answer on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    pub mac: Mac,
    /// A port of a bridge or bond: answering belongs to the master.
    pub enslaved: bool,
}

/// Every Ethernet interface that is up. Unreadable entries are skipped.
pub fn list() -> Vec<Interface> {
    list_in(Path::new("/sys/class/net"))
}

fn list_in(root: &Path) -> Vec<Interface> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut out: Vec<Interface> = entries
        .flatten()
        .filter_map(|e| read_one(&e.path()))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn read_one(dir: &Path) -> Option<Interface> {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
    let number = |s: String| {
        let s = s.trim();
        match s.strip_prefix("0x") {
            Some(hex) => u32::from_str_radix(hex, 16).ok(),
            None => s.parse().ok(),
        }
    };
    let flags = number(read("flags")?)?;
    if flags & IFF_UP == 0 || flags & IFF_LOOPBACK != 0 {
        return None;
    }
    if number(read("type")?)? != ARPHRD_ETHER {
        return None;
    }
    if read("operstate").is_some_and(|s| s.trim() == "down") {
        return None;
    }
    let mac = parse_mac(&read("address")?)?;
    if mac == [0; 6] {
        return None;
    }
    Some(Interface {
        name: dir.file_name()?.to_string_lossy().into_owned(),
        index: number(read("ifindex")?)?,
        mac,
        enslaved: dir.join("master").exists(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(root: &Path, name: &str, files: &[(&str, &str)]) {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for (f, v) in files {
            std::fs::write(dir.join(f), v).unwrap();
        }
    }

    #[test]
    fn reads_up_ethernet_interfaces_only() {
        let root = tempfile::tempdir().unwrap();
        let eth = [
            ("flags", "0x1003\n"),
            ("type", "1\n"),
            ("operstate", "up\n"),
            ("address", "02:00:00:00:00:01\n"),
            ("ifindex", "3\n"),
        ];
        fake(root.path(), "eth0", &eth);
        fake(root.path(), "bond-port", &eth);
        std::fs::create_dir(root.path().join("bond-port/master")).unwrap();
        fake(root.path(), "lo", &[("flags", "0x9"), ("type", "772")]);
        let mut down = eth;
        down[0] = ("flags", "0x1002");
        fake(root.path(), "eth1", &down);
        let mut tunnel = eth;
        tunnel[1] = ("type", "65534");
        fake(root.path(), "tun0", &tunnel);

        let got = list_in(root.path());
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].name, "bond-port");
        assert!(got[0].enslaved);
        assert_eq!(
            got[1],
            Interface {
                name: "eth0".into(),
                index: 3,
                mac: [2, 0, 0, 0, 0, 1],
                enslaved: false
            }
        );
    }
}
