//! The bad-input catalogue for `tests/bad_input.rs`: the bad Services and
//! IPPools, the good ones among them, and the pools they run against. The
//! same table is in docs/reliability.md.

use std::collections::BTreeMap;

use anyhow::Result;
use ferrolb_baremetal::crd::{IPPool, IPPoolSpec, ServiceAllocation};
use ferrolb_e2e::fixtures;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{CLASS, Env};

/// How a case is made.
pub enum Make {
    /// A LoadBalancer Service of our class with one port, TCP 80, tweaked.
    Service(fn(&mut Service)),
    /// An IPPool with `autoAssign: false`, tweaked.
    Pool(fn(&mut IPPoolSpec)),
}

pub struct Case {
    /// The object's name (and the first column of the doc's table).
    pub name: &'static str,
    /// What is wrong with it.
    pub wrong: &'static str,
    pub make: Make,
    /// Words the Warning Event's note (or the pool's `status.errors`) must
    /// contain: the field, and the problem.
    pub says: &'static [&'static str],
}

pub const LOAD_BALANCER_IPS: &str = "ferrolb.io/load-balancer-ips";
pub const POOL: &str = "ferrolb.io/pool";
pub const SHARED: &str = "ferrolb.io/allow-shared-ip";
/// A Service name of 63 characters, the most the apiserver takes.
pub const LONGEST_NAME: &str = "bad-name-at-the-length-limit-of-sixty-three-characters-xxxxxxxx";

pub fn spec(s: &mut Service) -> &mut ServiceSpec {
    s.spec.get_or_insert_with(Default::default)
}

pub fn annotate(s: &mut Service, pairs: &[(&str, &str)]) {
    let map = s.metadata.annotations.get_or_insert_with(BTreeMap::new);
    for (k, v) in pairs {
        map.insert(k.to_string(), v.to_string());
    }
}

pub fn port(s: &mut Service, port: i32) {
    let p = &mut spec(s).ports.as_mut().unwrap()[0];
    p.port = port;
    p.name = Some(format!("tcp-{port}"));
    p.target_port = Some(IntOrString::Int(port));
}

pub fn addresses(p: &mut IPPoolSpec, a: &[&str]) {
    p.addresses = a.iter().map(|s| s.to_string()).collect();
}

pub fn selector(p: &mut IPPoolSpec, operator: &str, values: Option<Vec<String>>) {
    addresses(p, &["10.20.0.0/28"]);
    p.service_allocation = Some(ServiceAllocation {
        service_selectors: vec![LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: operator.into(),
                values,
            }]),
            ..Default::default()
        }],
        ..Default::default()
    });
}

/// The good pools every case runs against.
///
/// - `main` 192.0.2.0/26, autoAssign, for everyone
/// - `manual` 198.51.100.0/28, autoAssign: false
/// - `prod-only` 203.0.113.0/28, only for namespace `prod`
/// - `edge-only` 203.0.113.16/28, only for Services labelled `tier=edge`
/// - `no-buggy` 10.1.0.0/24, avoidBuggyIPs, autoAssign: false
/// - `tiny` 192.0.2.200/32, autoAssign: false, held by `holder-tiny`
pub async fn create_good_pools(env: &Env) -> Result<()> {
    env.create_pool("main", &["192.0.2.0/26"], |_| {}).await?;
    env.create_pool("manual", &["198.51.100.0/28"], |p| p.auto_assign = false)
        .await?;
    env.create_pool("prod-only", &["203.0.113.0/28"], |p| {
        p.service_allocation = Some(ServiceAllocation {
            namespaces: vec!["prod".into()],
            ..Default::default()
        })
    })
    .await?;
    env.create_pool("edge-only", &["203.0.113.16/28"], |p| {
        p.service_allocation = Some(ServiceAllocation {
            service_selectors: vec![LabelSelector {
                match_labels: Some(BTreeMap::from([("tier".into(), "edge".into())])),
                ..Default::default()
            }],
            ..Default::default()
        })
    })
    .await?;
    env.create_pool("no-buggy", &["10.1.0.0/24"], |p| {
        p.auto_assign = false;
        p.avoid_buggy_ips = true;
    })
    .await?;
    env.create_pool("tiny", &["192.0.2.200/32"], |p| p.auto_assign = false)
        .await?;
    Ok(())
}

/// Services that hold the addresses the conflicting cases ask for; created
/// and served before the catalogue, so who wins is not left to chance.
/// A Service by name, and how it differs from the plain one.
pub type Named = (&'static str, fn(&mut Service));

pub const HOLDERS: &[Named] = &[
    ("holder-plain", |s| {
        annotate(s, &[(LOAD_BALANCER_IPS, "192.0.2.50")])
    }),
    ("holder-keyed", |s| {
        annotate(s, &[(LOAD_BALANCER_IPS, "192.0.2.51"), (SHARED, "k1")])
    }),
    ("holder-tiny", |s| annotate(s, &[(POOL, "tiny")])),
];

/// Good Services, created among the bad ones: each must get an address.
pub const GOOD: &[Named] = &[
    ("good-plain", |_| {}),
    (
        "good-longest-name-at-the-limit-of-63-characters-xxxxxxxxxxxxxxx",
        |_| {},
    ),
    ("good-unicode-annotation", |s| {
        annotate(s, &[("example.com/description", "サービス – Ünïcödé ✓")])
    }),
    ("good-huge-annotation", |s| {
        let huge = "x".repeat(200_000);
        annotate(s, &[("example.com/blob", &huge)])
    }),
    ("good-sctp-and-udp", |s| {
        spec(s).ports = Some(vec![
            ServicePort {
                name: Some("sctp".into()),
                protocol: Some("SCTP".into()),
                port: 9,
                ..Default::default()
            },
            ServicePort {
                name: Some("dns".into()),
                protocol: Some("UDP".into()),
                port: 53,
                ..Default::default()
            },
        ])
    }),
    ("good-many-ports", |s| {
        spec(s).ports = Some(
            (1..=100)
                .map(|i| ServicePort {
                    name: Some(format!("p{i}")),
                    port: 1000 + i,
                    ..Default::default()
                })
                .collect(),
        )
    }),
    ("good-shares-with-holder", |s| {
        annotate(s, &[(LOAD_BALANCER_IPS, "192.0.2.51"), (SHARED, "k1")]);
        port(s, 8080);
    }),
    ("good-manual-by-name", |s| annotate(s, &[(POOL, "manual")])),
];

pub const CATALOGUE: &[Case] = &[
    // --- requested addresses ---------------------------------------------
    Case {
        name: "ips-not-an-ip",
        wrong: "the addresses annotation is not an IP",
        make: Make::Service(|s| annotate(s, &[(LOAD_BALANCER_IPS, "not-an-ip")])),
        says: &[
            "metadata.annotations[ferrolb.io/load-balancer-ips]",
            "\"not-an-ip\" is not an IP address",
        ],
    },
    Case {
        name: "ips-cidr",
        wrong: "the addresses annotation holds a CIDR, not an address",
        make: Make::Service(|s| annotate(s, &[(LOAD_BALANCER_IPS, "192.0.2.0/26")])),
        says: &["load-balancer-ips", "is not an IP address"],
    },
    Case {
        name: "ips-trailing-comma",
        wrong: "the addresses annotation ends in a comma",
        make: Make::Service(|s| annotate(s, &[(LOAD_BALANCER_IPS, "192.0.2.5,")])),
        says: &["load-balancer-ips", "\"\" is not an IP address"],
    },
    Case {
        name: "ips-fullwidth-digits",
        wrong: "the addresses annotation is written in full-width (unicode) digits",
        make: Make::Service(|s| annotate(s, &[(LOAD_BALANCER_IPS, "１９２.０.２.５")])),
        says: &["load-balancer-ips", "is not an IP address"],
    },
    Case {
        name: "ips-huge",
        wrong: "the addresses annotation is 200 kB long",
        make: Make::Service(|s| {
            let huge = "1".repeat(200_000);
            annotate(s, &[(LOAD_BALANCER_IPS, &huge)])
        }),
        says: &["load-balancer-ips", "is not an IP address"],
    },
    Case {
        name: "ips-two-ipv4",
        wrong: "two IPv4 addresses asked for",
        make: Make::Service(|s| annotate(s, &[(LOAD_BALANCER_IPS, "192.0.2.5,192.0.2.6")])),
        says: &["load-balancer-ips", "more than one IPv4 address"],
    },
    Case {
        name: "ips-wrong-family",
        wrong: "an IPv6 address for an IPv4-only Service",
        make: Make::Service(|s| annotate(s, &[(LOAD_BALANCER_IPS, "2001:db8::5")])),
        says: &[
            "load-balancer-ips",
            "is IPv6 but the Service serves only IPv4",
        ],
    },
    Case {
        name: "metallb-ips-not-an-ip",
        wrong: "MetalLB's addresses annotation is not an IP",
        make: Make::Service(|s| annotate(s, &[("metallb.io/loadBalancerIPs", "ten.0.0.1")])),
        says: &[
            "metadata.annotations[metallb.io/loadBalancerIPs]",
            "is not an IP address",
        ],
    },
    Case {
        name: "lb-ip-not-an-ip",
        wrong: "spec.loadBalancerIP is not an IP (the apiserver lets it through)",
        make: Make::Service(|s| spec(s).load_balancer_ip = Some("not-an-ip".into())),
        says: &["spec.loadBalancerIP", "\"not-an-ip\" is not an IP address"],
    },
    Case {
        name: "lb-ip-and-annotation",
        wrong: "spec.loadBalancerIP and the addresses annotation both set",
        make: Make::Service(|s| {
            spec(s).load_balancer_ip = Some("192.0.2.7".into());
            annotate(s, &[(LOAD_BALANCER_IPS, "192.0.2.7")])
        }),
        says: &["spec.loadBalancerIP", "set together with the annotation"],
    },
    Case {
        name: "lb-ip-wrong-family",
        wrong: "spec.loadBalancerIP is IPv6, the Service IPv4 only",
        make: Make::Service(|s| spec(s).load_balancer_ip = Some("2001:db8::7".into())),
        says: &[
            "spec.loadBalancerIP",
            "is IPv6 but the Service serves only IPv4",
        ],
    },
    Case {
        name: "lb-ip-outside-pools",
        wrong: "spec.loadBalancerIP is in no pool",
        make: Make::Service(|s| spec(s).load_balancer_ip = Some("198.18.0.1".into())),
        says: &[
            "spec.loadBalancerIP",
            "requested address 198.18.0.1",
            "is not in any IPPool",
        ],
    },
    Case {
        name: "ips-outside-pools",
        wrong: "the addresses annotation names an address in no pool",
        make: Make::Service(|s| annotate(s, &[(LOAD_BALANCER_IPS, "198.18.0.2")])),
        says: &[
            "metadata.annotations[ferrolb.io/load-balancer-ips]",
            "requested address 198.18.0.2",
            "is not in any IPPool",
        ],
    },
    Case {
        name: "ips-other-namespace",
        wrong: "the address is in a pool kept for another namespace",
        make: Make::Service(|s| annotate(s, &[(LOAD_BALANCER_IPS, "203.0.113.3")])),
        says: &[
            "metadata.annotations[ferrolb.io/load-balancer-ips]",
            "203.0.113.3",
            "pool prod-only",
            "namespace \"test\" is not in its serviceAllocation.namespaces",
        ],
    },
    Case {
        name: "ips-unselected",
        wrong: "the address is in a pool whose serviceSelectors do not match",
        make: Make::Service(|s| annotate(s, &[(LOAD_BALANCER_IPS, "203.0.113.20")])),
        says: &[
            "metadata.annotations[ferrolb.io/load-balancer-ips]",
            "203.0.113.20",
            "pool edge-only",
            "serviceSelectors",
        ],
    },
    Case {
        name: "ips-buggy",
        wrong: "a .0 address from a pool with avoidBuggyIPs",
        make: Make::Service(|s| annotate(s, &[(LOAD_BALANCER_IPS, "10.1.0.0")])),
        says: &[
            "metadata.annotations[ferrolb.io/load-balancer-ips]",
            "10.1.0.0",
            "pool no-buggy",
            "avoidBuggyIPs",
        ],
    },
    Case {
        name: "ips-not-in-named-pool",
        wrong: "the address is not in the pool the Service names",
        make: Make::Service(|s| annotate(s, &[(LOAD_BALANCER_IPS, "192.0.2.9"), (POOL, "manual")])),
        says: &[
            "metadata.annotations[ferrolb.io/load-balancer-ips]",
            "192.0.2.9",
            "is not in the requested pool manual",
        ],
    },
    // --- the pool annotation ---------------------------------------------
    Case {
        name: "pool-uppercase",
        wrong: "the pool annotation is not an object name",
        make: Make::Service(|s| annotate(s, &[(POOL, "Prod_Pool")])),
        says: &[
            "metadata.annotations[ferrolb.io/pool]",
            "\"Prod_Pool\" is not a pool name",
        ],
    },
    Case {
        name: "pool-empty",
        wrong: "the pool annotation is empty",
        make: Make::Service(|s| annotate(s, &[(POOL, "")])),
        says: &[
            "metadata.annotations[ferrolb.io/pool]",
            "is not a pool name",
        ],
    },
    Case {
        name: "pool-unicode",
        wrong: "the pool annotation is in Cyrillic",
        make: Make::Service(|s| annotate(s, &[(POOL, "пул")])),
        says: &["ferrolb.io/pool", "is not a pool name"],
    },
    Case {
        name: "pool-too-long",
        wrong: "the pool annotation is 300 characters",
        make: Make::Service(|s| {
            let long = "p".repeat(300);
            annotate(s, &[(POOL, &long)])
        }),
        says: &["ferrolb.io/pool", "is not a pool name"],
    },
    Case {
        name: "pool-missing",
        wrong: "the pool annotation names no pool",
        make: Make::Service(|s| annotate(s, &[(POOL, "nowhere")])),
        says: &[
            "metadata.annotations[ferrolb.io/pool]",
            "requested pool nowhere does not exist",
        ],
    },
    Case {
        name: "metallb-pool-missing",
        wrong: "MetalLB's pool annotation names no pool",
        make: Make::Service(|s| annotate(s, &[("metallb.io/address-pool", "legacy")])),
        says: &[
            "metadata.annotations[metallb.io/address-pool]",
            "requested pool legacy does not exist",
        ],
    },
    Case {
        name: "pool-invalid",
        wrong: "the pool annotation names a pool that is itself invalid",
        make: Make::Service(|s| annotate(s, &[(POOL, "bad-cidr")])),
        says: &[
            "metadata.annotations[ferrolb.io/pool]",
            "requested pool bad-cidr is invalid",
            "spec.addresses[1]",
        ],
    },
    Case {
        name: "pool-other-namespace",
        wrong: "the named pool is kept for another namespace",
        make: Make::Service(|s| annotate(s, &[(POOL, "prod-only")])),
        says: &[
            "metadata.annotations[ferrolb.io/pool]",
            "requested pool prod-only",
            "serviceAllocation.namespaces",
        ],
    },
    Case {
        name: "pool-unselected",
        wrong: "the named pool's serviceSelectors do not match",
        make: Make::Service(|s| annotate(s, &[(POOL, "edge-only")])),
        says: &[
            "metadata.annotations[ferrolb.io/pool]",
            "requested pool edge-only",
            "serviceSelectors",
        ],
    },
    Case {
        name: "pool-exhausted",
        wrong: "the named pool has no free address",
        make: Make::Service(|s| annotate(s, &[(POOL, "tiny")])),
        says: &["no free IPv4 address left in pool tiny"],
    },
    Case {
        name: "pool-without-ipv6",
        wrong: "an IPv6-only Service names a pool with only IPv4",
        make: Make::Service(|s| {
            spec(s).ip_families = Some(vec!["IPv6".into()]);
            annotate(s, &[(POOL, "main")])
        }),
        says: &[
            "spec.ipFamilies",
            "no pool this Service may use has IPv6 addresses",
            "pools tried: main",
        ],
    },
    Case {
        name: "require-dual-stack",
        wrong: "RequireDualStack, but the named pool has only IPv4",
        make: Make::Service(|s| {
            spec(s).ip_family_policy = Some("RequireDualStack".into());
            spec(s).ip_families = Some(vec!["IPv4".into(), "IPv6".into()]);
            annotate(s, &[(POOL, "main")])
        }),
        says: &[
            "spec.ipFamilyPolicy",
            "requires dual-stack (RequireDualStack)",
            "IPv6 address",
            "pools tried: main",
        ],
    },
    // --- sharing an address ----------------------------------------------
    Case {
        name: "shared-key-empty",
        wrong: "the sharing annotation is empty",
        make: Make::Service(|s| annotate(s, &[(SHARED, "  ")])),
        says: &[
            "metadata.annotations[ferrolb.io/allow-shared-ip]",
            "is not a non-empty key",
        ],
    },
    Case {
        name: "shared-key-control-char",
        wrong: "the sharing annotation holds a newline",
        make: Make::Service(|s| annotate(s, &[(SHARED, "a\nb")])),
        says: &["ferrolb.io/allow-shared-ip", "printable characters"],
    },
    Case {
        name: "shared-key-too-long",
        wrong: "the sharing annotation is 300 characters",
        make: Make::Service(|s| {
            let long = "k".repeat(300);
            annotate(s, &[(SHARED, &long)])
        }),
        says: &["ferrolb.io/allow-shared-ip", "at most 253"],
    },
    Case {
        name: "metallb-shared-key-empty",
        wrong: "MetalLB's sharing annotation is empty",
        make: Make::Service(|s| annotate(s, &[("metallb.io/allow-shared-ip", "")])),
        says: &[
            "metadata.annotations[metallb.io/allow-shared-ip]",
            "is not a non-empty key",
        ],
    },
    Case {
        name: "taken-holder-has-no-key",
        wrong: "asks for an address another Service holds without a sharing key",
        make: Make::Service(|s| {
            annotate(s, &[(LOAD_BALANCER_IPS, "192.0.2.50"), (SHARED, "k1")]);
            port(s, 443)
        }),
        says: &[
            "metadata.annotations[ferrolb.io/load-balancer-ips]",
            "192.0.2.50 is already used by Service test/holder-plain",
            "that Service has no sharing key",
        ],
    },
    Case {
        name: "taken-no-key",
        wrong: "asks for a shared address without a sharing key",
        make: Make::Service(|s| {
            annotate(s, &[(LOAD_BALANCER_IPS, "192.0.2.51")]);
            port(s, 443)
        }),
        says: &[
            "metadata.annotations[ferrolb.io/load-balancer-ips]",
            "192.0.2.51 is already used by Service",
            "this Service has no sharing key",
        ],
    },
    Case {
        name: "taken-other-key",
        wrong: "asks for a shared address with another sharing key",
        make: Make::Service(|s| {
            annotate(s, &[(LOAD_BALANCER_IPS, "192.0.2.51"), (SHARED, "k2")]);
            port(s, 443)
        }),
        says: &[
            "metadata.annotations[ferrolb.io/load-balancer-ips]",
            "192.0.2.51 is already used by Service",
            "the sharing keys differ",
        ],
    },
    Case {
        name: "taken-same-port",
        wrong: "shares an address and a port with another Service",
        make: Make::Service(|s| annotate(s, &[(LOAD_BALANCER_IPS, "192.0.2.51"), (SHARED, "k1")])),
        says: &[
            "metadata.annotations[ferrolb.io/load-balancer-ips]",
            "192.0.2.51 is already used by Service",
            "both Services use TCP/80",
        ],
    },
    Case {
        name: "taken-other-policy",
        wrong: "shares an address with another externalTrafficPolicy",
        make: Make::Service(|s| {
            annotate(s, &[(LOAD_BALANCER_IPS, "192.0.2.51"), (SHARED, "k1")]);
            port(s, 8443);
            spec(s).external_traffic_policy = Some("Local".into())
        }),
        says: &[
            "metadata.annotations[ferrolb.io/load-balancer-ips]",
            "192.0.2.51 is already used by Service",
            "externalTrafficPolicy",
        ],
    },
    // --- names at the limit ----------------------------------------------
    Case {
        name: LONGEST_NAME,
        wrong: "a 63-character name with a bad annotation",
        make: Make::Service(|s| annotate(s, &[(LOAD_BALANCER_IPS, "192.0.2.999")])),
        says: &["load-balancer-ips", "\"192.0.2.999\" is not an IP address"],
    },
    // --- pools -----------------------------------------------------------
    Case {
        name: "bad-cidr",
        wrong: "a pool entry that is no CIDR, range or address",
        make: Make::Pool(|p| addresses(p, &["10.30.0.0/24", "ten.0.0.0/8"])),
        says: &[
            "spec.addresses[1]",
            "\"ten.0.0.0/8\"",
            "is not an IPv4 or IPv6 address",
        ],
    },
    Case {
        name: "bad-prefix-too-long",
        wrong: "a prefix longer than the family allows",
        make: Make::Pool(|p| addresses(p, &["10.31.0.0/33"])),
        says: &["spec.addresses[0]", "prefix length 33 is too long for IPv4"],
    },
    Case {
        name: "bad-prefix-not-a-number",
        wrong: "a prefix that is not a number",
        make: Make::Pool(|p| addresses(p, &["10.32.0.0/x"])),
        says: &["spec.addresses[0]", "prefix length \"x\" is not a number"],
    },
    Case {
        name: "bad-range-reversed",
        wrong: "a range whose start is after its end",
        make: Make::Pool(|p| addresses(p, &["10.33.0.9-10.33.0.1"])),
        says: &["spec.addresses[0]", "range start is after its end"],
    },
    Case {
        name: "bad-range-mixed",
        wrong: "a range from an IPv4 to an IPv6 address",
        make: Make::Pool(|p| addresses(p, &["10.34.0.1-2001:db8::1"])),
        says: &["spec.addresses[0]", "range mixes IPv4 and IPv6"],
    },
    Case {
        name: "bad-empty-entry",
        wrong: "an empty pool entry",
        make: Make::Pool(|p| addresses(p, &["10.35.0.0/24", " "])),
        says: &["spec.addresses[1]", "empty entry"],
    },
    Case {
        name: "bad-unicode-entry",
        wrong: "a pool entry in full-width (unicode) digits",
        make: Make::Pool(|p| addresses(p, &["１０.３６.０.０/２４"])),
        says: &["spec.addresses[0]", "is not an IPv4 or IPv6 address"],
    },
    Case {
        name: "bad-empty-namespace",
        wrong: "an empty namespace in serviceAllocation",
        make: Make::Pool(|p| {
            addresses(p, &["10.37.0.0/28"]);
            p.service_allocation = Some(ServiceAllocation {
                namespaces: vec!["".into()],
                ..Default::default()
            })
        }),
        says: &[
            "spec.serviceAllocation.namespaces[0]",
            "empty namespace name",
        ],
    },
    Case {
        name: "bad-selector-operator",
        wrong: "a serviceSelector with an unknown operator",
        make: Make::Pool(|p| selector(p, "Near", Some(vec!["edge".into()]))),
        says: &[
            "spec.serviceAllocation.serviceSelectors[0]",
            "operator \"Near\" is not one of",
        ],
    },
    Case {
        name: "bad-selector-no-values",
        wrong: "a serviceSelector `In` with no values",
        make: Make::Pool(|p| selector(p, "In", None)),
        says: &[
            "spec.serviceAllocation.serviceSelectors[0]",
            "operator In needs at least one value",
        ],
    },
    Case {
        name: "bad-selector-extra-values",
        wrong: "a serviceSelector `Exists` with values",
        make: Make::Pool(|p| selector(p, "Exists", Some(vec!["edge".into()]))),
        says: &[
            "spec.serviceAllocation.serviceSelectors[0]",
            "operator Exists takes no values",
        ],
    },
    Case {
        name: "overlaps-manual",
        wrong: "a pool that overlaps another pool",
        make: Make::Pool(|p| addresses(p, &["198.51.100.8/29"])),
        says: &["overlaps pool manual at 198.51.100.8-198.51.100.15"],
    },
];

/// Inputs the apiserver refuses: the controller never sees them.
pub const REJECTED: &[Case] = &[
    Case {
        name: "rejected-name-too-long-at-sixty-four-characters-xxxxxxxxxxxxxxxx",
        wrong: "a Service name of 64 characters",
        make: Make::Service(|_| {}),
        says: &["metadata.name", "must be no more than 63 characters"],
    },
    Case {
        name: "rejected-protocol",
        wrong: "a port with protocol ICMP",
        make: Make::Service(|s| spec(s).ports.as_mut().unwrap()[0].protocol = Some("ICMP".into())),
        says: &["spec.ports[0].protocol", "Unsupported value"],
    },
    Case {
        name: "rejected-port",
        wrong: "port 70000",
        make: Make::Service(|s| port(s, 70000)),
        says: &["spec.ports[0].port", "Invalid value"],
    },
    Case {
        name: "rejected-source-range",
        wrong: "a loadBalancerSourceRanges entry that is not a CIDR",
        make: Make::Service(|s| spec(s).load_balancer_source_ranges = Some(vec!["bogus".into()])),
        says: &["spec.LoadBalancerSourceRanges[0]", "must be a valid CIDR"],
    },
    Case {
        name: "rejected-ip-family",
        wrong: "ipFamilies [IPv5]",
        make: Make::Service(|s| spec(s).ip_families = Some(vec!["IPv5".into()])),
        says: &["spec.ipFamilies[0]", "Unsupported value"],
    },
    Case {
        name: "rejected-annotations-too-big",
        wrong: "annotations over 256 kB in all",
        make: Make::Service(|s| {
            let huge = "x".repeat(300_000);
            annotate(s, &[("example.com/blob", &huge)])
        }),
        says: &["metadata.annotations", "Too long"],
    },
    Case {
        name: "rejected-pool-no-addresses",
        wrong: "an IPPool with no addresses",
        make: Make::Pool(|p| p.addresses.clear()),
        says: &["spec.addresses", "should have at least 1 items"],
    },
];

pub fn service(env: &Env, name: &str, tweak: fn(&mut Service)) -> Service {
    let mut svc = fixtures::lb_service(&env.ns, name, &[("TCP", 80)]);
    spec(&mut svc).load_balancer_class = Some(CLASS.into());
    tweak(&mut svc);
    svc
}

pub fn pool(name: &str, tweak: fn(&mut IPPoolSpec)) -> IPPool {
    let mut spec = IPPoolSpec {
        addresses: vec!["10.99.0.0/28".into()],
        auto_assign: false,
        ..Default::default()
    };
    tweak(&mut spec);
    IPPool::new(name, spec)
}

/// The rows of the tables in docs/reliability.md from the heading `from` on,
/// up to the heading `until` (the next heading when `None`), each split into
/// its cells.
pub fn doc_rows(from: &str, until: Option<&str>) -> Result<Vec<Vec<String>>> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/reliability.md");
    let doc = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    let mut lines = doc.lines().skip_while(|l| *l != from);
    anyhow::ensure!(
        lines.next().is_some(),
        "{} has no heading {from:?}",
        path.display()
    );
    Ok(lines
        .take_while(|l| match until {
            Some(until) => *l != until,
            None => !l.starts_with("## "),
        })
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().replace("\\|", "|"))
                .collect()
        })
        .collect())
}

/// Checks a catalogue against the doc's rows: the same cases in the same
/// order, each with the same description and a note holding the same words.
/// `cases` are (name, what is wrong, words).
pub fn check_doc_table(rows: &[Vec<String>], cases: &[(&str, &str, &[&str])]) {
    let doc_names: Vec<&str> = rows.iter().map(|r| r[0].trim_matches('`')).collect();
    let names: Vec<&str> = cases.iter().map(|c| c.0).collect();
    assert_eq!(doc_names, names, "docs/reliability.md lists other cases");
    for (row, (name, wrong, says)) in rows.iter().zip(cases) {
        assert_eq!(row.len(), 3, "{name}: three columns");
        assert_eq!(row[1], *wrong, "{name}: what is wrong");
        let note = row[2].replace('`', "");
        for w in *says {
            assert!(
                note.contains(w),
                "{name}: the doc's note lacks {w:?}: {note}"
            );
        }
    }
}
