//! Which requested private address goes to which subnet.
//!
//! SubnetMappings pair each subnet with at most one private address, and AWS
//! refuses an address outside the subnet's CIDR. Users list the addresses in
//! the annotation in any order, so each one goes to the subnet that contains
//! it, rather than to whichever subnet happens to come at the same position.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::subnets::SubnetInfo;

/// `addresses` reordered to follow `subnets` (one per subnet), or why that
/// cannot be done.
pub fn pair_with_subnets(
    subnets: &[String],
    infos: &[SubnetInfo],
    addresses: &[Ipv4Addr],
) -> Result<Vec<Ipv4Addr>, String> {
    let cidr = |id: &str| -> Option<Ipv4Net> {
        infos
            .iter()
            .find(|s| s.id == id)
            .and_then(|s| s.cidr.parse().ok())
    };
    let nets: Vec<(&String, Option<Ipv4Net>)> = subnets.iter().map(|s| (s, cidr(s))).collect();
    let mut paired: Vec<Option<Ipv4Addr>> = vec![None; subnets.len()];
    for addr in addresses {
        let Some(i) = nets
            .iter()
            .position(|(_, net)| net.is_some_and(|n| n.contains(addr)))
        else {
            let known: Vec<String> = nets
                .iter()
                .map(|(id, net)| match net {
                    Some(n) => format!("{id} ({n})"),
                    None => format!("{id} (CIDR unknown)"),
                })
                .collect();
            return Err(format!(
                "{addr} lies in none of the load balancer's subnets: {}",
                known.join(", ")
            ));
        };
        if let Some(other) = paired[i].replace(*addr) {
            return Err(format!(
                "{other} and {addr} both lie in subnet {}; give one address per subnet",
                nets[i].0
            ));
        }
    }
    Ok(paired.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, cidr: &str) -> SubnetInfo {
        SubnetInfo {
            id: id.into(),
            zone: String::new(),
            zone_type: String::new(),
            vpc_id: "vpc-1".into(),
            cidr: cidr.into(),
            tags: Default::default(),
            public: false,
        }
    }

    #[test]
    fn addresses_follow_the_subnet_that_holds_them() {
        let infos = [
            info("subnet-a", "10.0.0.0/24"),
            info("subnet-b", "10.0.1.0/24"),
        ];
        let subnets = ["subnet-a".to_string(), "subnet-b".to_string()];
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        /// Addresses given → addresses in subnet order, or part of the error.
        type Case<'a> = (&'a [&'a str], Result<&'a [&'a str], &'a str>);
        let cases: &[Case<'_>] = &[
            (&["10.0.0.5", "10.0.1.5"], Ok(&["10.0.0.5", "10.0.1.5"])),
            (&["10.0.1.5", "10.0.0.5"], Ok(&["10.0.0.5", "10.0.1.5"])),
            (&["10.0.0.5", "10.0.9.5"], Err("10.0.9.5 lies in none")),
            (
                &["10.0.0.5", "10.0.0.6"],
                Err("both lie in subnet subnet-a"),
            ),
        ];
        for (given, want) in cases {
            let given: Vec<Ipv4Addr> = given.iter().map(|s| ip(s)).collect();
            let got = pair_with_subnets(&subnets, &infos, &given);
            match want {
                Ok(want) => {
                    let want: Vec<Ipv4Addr> = want.iter().map(|s| ip(s)).collect();
                    assert_eq!(got, Ok(want), "{given:?}");
                }
                Err(part) => {
                    let err = got.expect_err("must be refused");
                    assert!(err.contains(part), "{given:?}: {err}");
                }
            }
        }
    }
}
