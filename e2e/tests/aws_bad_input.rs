//! The bad-input catalogue (AWS): malformed Services for the NLB provider,
//! all at once, against one controller and moto. Each gets a Warning Event
//! that names the field and the problem, and nothing is made for it in the
//! account; the good Services among them get their load balancers all the
//! same. The table is here and in docs/reliability.md, and a test checks that
//! the two agree.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use aws_sdk_elasticloadbalancingv2::Client as Elb;
use common::bad_input::{annotate, check_doc_table, doc_rows, spec};
use common::{Env, Foreign, WithLog, events_for, wait_hostname};
use ferrolb_e2e::moto::Moto;
use ferrolb_e2e::{FerrolbProcess, fixtures};
use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::PostParams;

const CLUSTER: &str = "e2e";
const CLASS: &str = "ferrolb.io/aws";
const SECTION: &str = "## The bad-input catalogue (AWS)";

macro_rules! aws {
    ($key:literal) => {
        concat!("service.beta.kubernetes.io/aws-load-balancer-", $key)
    };
}

/// Anything about a Service beyond its annotations.
type Tweak = fn(&mut Service);

struct Case {
    name: &'static str,
    wrong: &'static str,
    annotations: &'static [(&'static str, &'static str)],
    tweak: Tweak,
    /// Words the Warning Event's note must hold: the field and the problem.
    says: &'static [&'static str],
}

fn none(_: &mut Service) {}

fn add_port(s: &mut Service, protocol: &str, port: i32) {
    spec(s)
        .ports
        .get_or_insert_with(Vec::new)
        .push(ServicePort {
            name: Some(format!("{}-{port}", protocol.to_lowercase())),
            protocol: Some(protocol.into()),
            port,
            target_port: Some(IntOrString::Int(port)),
            ..Default::default()
        });
}

const CATALOGUE: &[Case] = &[
    Case {
        name: "type-alb",
        wrong: "the type is alb, which is not a Network Load Balancer",
        annotations: &[(aws!("type"), "alb")],
        tweak: none,
        says: &[aws!("type"), "use one of: nlb, external, nlb-ip"],
    },
    Case {
        name: "type-classic",
        wrong: "the type asks for a Classic Load Balancer",
        annotations: &[(aws!("type"), "classic")],
        tweak: none,
        says: &[aws!("type"), "\"classic\" is not allowed"],
    },
    Case {
        name: "target-type-pod",
        wrong: "the target type is not instance or ip",
        annotations: &[(aws!("nlb-target-type"), "pod")],
        tweak: none,
        says: &[aws!("nlb-target-type"), "use one of: instance, ip"],
    },
    Case {
        name: "target-type-contradicts",
        wrong: "type nlb-ip with target type instance",
        annotations: &[
            (aws!("type"), "nlb-ip"),
            (aws!("nlb-target-type"), "instance"),
        ],
        tweak: none,
        says: &[aws!("nlb-target-type"), "contradicts"],
    },
    Case {
        name: "scheme-public",
        wrong: "the scheme is not internet-facing or internal",
        annotations: &[(aws!("scheme"), "public")],
        tweak: none,
        says: &[aws!("scheme"), "use one of: internet-facing, internal"],
    },
    Case {
        name: "scheme-contradicts-internal",
        wrong: "scheme internet-facing with the legacy internal annotation true",
        annotations: &[
            (aws!("scheme"), "internet-facing"),
            (aws!("internal"), "true"),
        ],
        tweak: none,
        says: &[aws!("scheme"), "contradicts"],
    },
    Case {
        name: "name-too-long",
        wrong: "a load balancer name of 33 characters",
        annotations: &[(aws!("name"), "a234567890123456789012345678901bc")],
        tweak: none,
        says: &[aws!("name"), "at most 32"],
    },
    Case {
        name: "name-underscore",
        wrong: "a load balancer name with an underscore",
        annotations: &[(aws!("name"), "shop_frontend")],
        tweak: none,
        says: &[aws!("name"), "letters, digits and '-'"],
    },
    Case {
        name: "name-internal-prefix",
        wrong: "a load balancer name starting with internal-",
        annotations: &[(aws!("name"), "internal-shop")],
        tweak: none,
        says: &[aws!("name"), "\"internal-\""],
    },
    Case {
        name: "subnets-twice",
        wrong: "the same subnet listed twice",
        annotations: &[(aws!("subnets"), "subnet-1,subnet-1")],
        tweak: none,
        says: &[aws!("subnets"), "listed twice"],
    },
    Case {
        name: "subnets-empty-list",
        wrong: "a subnets annotation that lists nothing",
        annotations: &[(aws!("subnets"), " , ")],
        tweak: none,
        says: &[aws!("subnets"), "lists nothing"],
    },
    Case {
        name: "eip-internal",
        wrong: "Elastic IPs for a load balancer that is not internet-facing",
        annotations: &[(aws!("eip-allocations"), "eipalloc-0abc")],
        tweak: none,
        says: &[aws!("eip-allocations"), "internet-facing"],
    },
    Case {
        name: "eip-not-an-allocation",
        wrong: "an Elastic IP that is not an allocation ID",
        annotations: &[
            (aws!("scheme"), "internet-facing"),
            (aws!("eip-allocations"), "eip-0abc"),
        ],
        tweak: none,
        says: &[aws!("eip-allocations"), "eipalloc-"],
    },
    Case {
        name: "hc-protocol-udp",
        wrong: "a UDP health check",
        annotations: &[(aws!("healthcheck-protocol"), "udp")],
        tweak: none,
        says: &[aws!("healthcheck-protocol"), "use one of: tcp, http, https"],
    },
    Case {
        name: "hc-port-out-of-range",
        wrong: "health check port 70000",
        annotations: &[(aws!("healthcheck-port"), "70000")],
        tweak: none,
        says: &[aws!("healthcheck-port"), "from 1 to 65535"],
    },
    Case {
        name: "hc-port-unknown-name",
        wrong: "a health check port name the Service lacks",
        annotations: &[(aws!("healthcheck-port"), "metrics")],
        tweak: none,
        says: &[aws!("healthcheck-port"), "metrics"],
    },
    Case {
        name: "hc-path-relative",
        wrong: "an HTTP health check path without a leading slash",
        annotations: &[
            (aws!("healthcheck-protocol"), "http"),
            (aws!("healthcheck-path"), "healthz"),
        ],
        tweak: none,
        says: &[aws!("healthcheck-path"), "start with '/'"],
    },
    Case {
        name: "hc-interval-too-short",
        wrong: "a health check interval of 4 s",
        annotations: &[(aws!("healthcheck-interval"), "4")],
        tweak: none,
        says: &[aws!("healthcheck-interval"), "from 5 to 300"],
    },
    Case {
        name: "hc-interval-with-unit",
        wrong: "a health check interval written 10s",
        annotations: &[(aws!("healthcheck-interval"), "10s")],
        tweak: none,
        says: &[
            aws!("healthcheck-interval"),
            "\"10s\" is not a whole number",
        ],
    },
    Case {
        name: "hc-timeout-too-long",
        wrong: "a health check timeout of 121 s",
        annotations: &[(aws!("healthcheck-timeout"), "121")],
        tweak: none,
        says: &[aws!("healthcheck-timeout"), "from 2 to 120"],
    },
    Case {
        name: "hc-threshold-huge",
        wrong: "an unhealthy threshold of 14 digits",
        annotations: &[(aws!("healthcheck-unhealthy-threshold"), "99999999999999")],
        tweak: none,
        says: &[aws!("healthcheck-unhealthy-threshold"), "from 2 to 10"],
    },
    Case {
        name: "hc-success-codes-2xx",
        wrong: "success codes written 2xx",
        annotations: &[(aws!("healthcheck-success-codes"), "2xx")],
        tweak: none,
        says: &[aws!("healthcheck-success-codes"), "HTTP code or range"],
    },
    Case {
        name: "tg-attribute-not-boolean",
        wrong: "a target group attribute that is not true or false",
        annotations: &[(
            aws!("target-group-attributes"),
            "preserve_client_ip.enabled=yes",
        )],
        tweak: none,
        says: &[aws!("target-group-attributes"), "true or false"],
    },
    Case {
        name: "tg-attribute-unknown",
        wrong: "a target group attribute that does not exist",
        annotations: &[(aws!("target-group-attributes"), "bad-key=1")],
        tweak: none,
        says: &[aws!("target-group-attributes"), "not an attribute name"],
    },
    Case {
        name: "tg-attribute-out-of-range",
        wrong: "a deregistration delay of 4000 s",
        annotations: &[(
            aws!("target-group-attributes"),
            "deregistration_delay.timeout_seconds=4000",
        )],
        tweak: none,
        says: &[aws!("target-group-attributes"), "from 0 to 3600"],
    },
    Case {
        name: "proxy-protocol-true",
        wrong: "proxy protocol set to true instead of *",
        annotations: &[(aws!("proxy-protocol"), "true")],
        tweak: none,
        says: &[aws!("proxy-protocol"), "the only value is \"*\""],
    },
    Case {
        name: "cross-zone-yes",
        wrong: "cross-zone balancing set to yes",
        annotations: &[(aws!("cross-zone-load-balancing-enabled"), "yes")],
        tweak: none,
        says: &[
            aws!("cross-zone-load-balancing-enabled"),
            "use one of: true, false",
        ],
    },
    Case {
        name: "cross-zone-disagrees",
        wrong: "cross-zone off, and on in the attributes",
        annotations: &[
            (aws!("cross-zone-load-balancing-enabled"), "false"),
            (aws!("attributes"), "load_balancing.cross_zone.enabled=true"),
        ],
        tweak: none,
        says: &[aws!("cross-zone-load-balancing-enabled"), "disagrees"],
    },
    Case {
        name: "access-log-no-bucket",
        wrong: "access logs on without a bucket",
        annotations: &[(aws!("access-log-enabled"), "true")],
        tweak: none,
        says: &[aws!("access-log-enabled"), "no S3 bucket"],
    },
    Case {
        name: "ssl-cert-not-an-arn",
        wrong: "a certificate that is not an ARN",
        annotations: &[(aws!("ssl-cert"), "my-certificate")],
        tweak: none,
        says: &[aws!("ssl-cert"), "certificate ARN"],
    },
    Case {
        name: "ssl-ports-unknown",
        wrong: "TLS on a port the Service does not have",
        annotations: &[
            (
                aws!("ssl-cert"),
                "arn:aws:acm:us-east-1:123456789012:certificate/abc",
            ),
            (aws!("ssl-ports"), "8443"),
        ],
        tweak: none,
        says: &[aws!("ssl-ports"), "no port \"8443\""],
    },
    Case {
        name: "backend-protocol-udp",
        wrong: "backend protocol udp",
        annotations: &[(aws!("backend-protocol"), "udp")],
        tweak: none,
        says: &[
            aws!("backend-protocol"),
            "use one of: tcp, ssl, tls, http, https",
        ],
    },
    Case {
        name: "tags-reserved-cluster",
        wrong: "an extra tag in the kubernetes.io/cluster/ namespace",
        annotations: &[(
            aws!("additional-resource-tags"),
            "kubernetes.io/cluster/prod=owned",
        )],
        tweak: none,
        says: &[
            aws!("additional-resource-tags"),
            "reserved prefix \"kubernetes.io/cluster/\"",
        ],
    },
    Case {
        name: "tags-reserved-ours",
        wrong: "an extra tag that would pass for ferrolb's own",
        annotations: &[(aws!("additional-resource-tags"), "ferrolb.io/service=x")],
        tweak: none,
        says: &[
            aws!("additional-resource-tags"),
            "reserved prefix \"ferrolb.io/\"",
        ],
    },
    Case {
        name: "tags-not-key-value",
        wrong: "an extra tag without a value",
        annotations: &[(aws!("additional-resource-tags"), "team")],
        tweak: none,
        says: &[aws!("additional-resource-tags"), "not key=value"],
    },
    Case {
        name: "tags-unicode-too-long",
        wrong: "an extra tag key of 200 Cyrillic letters",
        annotations: &[(
            aws!("additional-resource-tags"),
            "ключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключключ=x",
        )],
        tweak: none,
        says: &[aws!("additional-resource-tags"), "1 to 128"],
    },
    Case {
        name: "node-labels-bad-key",
        wrong: "a target node label key with a space",
        annotations: &[(aws!("target-node-labels"), "bad key=x")],
        tweak: none,
        says: &[aws!("target-node-labels"), "not a label key"],
    },
    Case {
        name: "security-groups-twice",
        wrong: "the same security group listed twice",
        annotations: &[(aws!("security-groups"), "sg-1,sg-1")],
        tweak: none,
        says: &[aws!("security-groups"), "listed twice"],
    },
    Case {
        name: "ip-address-type-ipv6",
        wrong: "an IPv6-only load balancer",
        annotations: &[(aws!("ip-address-type"), "ipv6")],
        tweak: none,
        says: &[aws!("ip-address-type"), "use one of: ipv4, dualstack"],
    },
    Case {
        name: "ssl-ports-twice",
        wrong: "a TLS port listed twice",
        annotations: &[
            (
                aws!("ssl-cert"),
                "arn:aws:acm:us-east-1:123456789012:certificate/abc",
            ),
            (aws!("ssl-ports"), "80,80"),
        ],
        tweak: none,
        says: &[aws!("ssl-ports"), "listed twice"],
    },
    Case {
        name: "source-ranges-with-ip-targets",
        wrong: "source ranges with ip targets, which ferrolb does not support yet",
        annotations: &[(aws!("nlb-target-type"), "ip")],
        tweak: |s| spec(s).load_balancer_source_ranges = Some(vec!["10.0.0.0/8".into()]),
        says: &[
            "spec.loadBalancerSourceRanges",
            "ip targets",
            "nothing was created",
        ],
    },
    Case {
        name: "sctp-port",
        wrong: "an SCTP port, which an NLB does not serve",
        annotations: &[],
        tweak: |s| add_port(s, "SCTP", 9000),
        says: &[
            "spec.ports",
            "SCTP is not served by AWS Network Load Balancers",
        ],
    },
    Case {
        name: "bad-name-at-the-length-limit-of-sixty-three-characters-xxxxxxxx",
        wrong: "a 63-character Service name with a bad annotation",
        annotations: &[(aws!("scheme"), "private")],
        tweak: none,
        says: &[aws!("scheme"), "use one of: internet-facing, internal"],
    },
    Case {
        name: "unicode-value",
        wrong: "a health check protocol in full-width letters",
        annotations: &[(aws!("healthcheck-protocol"), "ＨＴＴＰ")],
        tweak: none,
        says: &[aws!("healthcheck-protocol"), "ＨＴＴＰ"],
    },
];

/// Served among the bad ones: a plain one, a 63-character name, TCP and UDP
/// ports, a unicode tag value and a 100 kB annotation ferrolb does not read.
const GOOD: &[(&str, Tweak)] = &[
    ("good-plain", none),
    (
        "good-name-at-the-length-limit-of-sixty-three-characters-xxxxxxx",
        none,
    ),
    ("good-tcp-and-udp", |s| add_port(s, "UDP", 53)),
    ("good-unicode-tag", |s| {
        annotate(s, &[(aws!("additional-resource-tags"), "équipe=café")])
    }),
    ("good-huge-unrelated-annotation", |s| {
        let huge = "x".repeat(100_000);
        annotate(s, &[("example.com/notes", &huge)]);
    }),
];

fn service(ns: &str, name: &str, annotations: &[(&str, &str)], tweak: Tweak) -> Service {
    let mut svc = fixtures::lb_service(ns, name, &[("TCP", 80)]);
    spec(&mut svc).load_balancer_class = Some(CLASS.into());
    annotate(&mut svc, annotations);
    tweak(&mut svc);
    svc
}

/// The newest `SyncLoadBalancerFailed` Warning's note on each named Service.
async fn warnings(env: &Env, names: &[&str]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for name in names {
        let newest = events_for(&env.client, &env.ns, name)
            .await?
            .into_iter()
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .filter(|e| e.reason.as_deref() == Some("SyncLoadBalancerFailed"))
            .max_by_key(|e| {
                let last = e.series.as_ref().map(|s| s.last_observed_time.0);
                last.or(e.event_time.as_ref().map(|t| t.0))
            });
        if let Some(note) = newest.and_then(|e| e.note) {
            out.insert(name.to_string(), note);
        }
    }
    Ok(out)
}

fn says_all(note: &str, case: &Case) -> bool {
    case.says.iter().all(|w| note.contains(w))
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_aws_input_is_reported_and_creates_nothing() -> Result<()> {
    let env = Env::start().await?;
    let moto = Moto::start().await?;
    let seed = moto.seed(CLUSTER, &["us-east-1a", "us-east-1b"]).await?;
    moto.run_node(&env.client, &seed, "node-a", "us-east-1a")
        .await?;
    moto.run_node(&env.client, &seed, "node-b", "us-east-1b")
        .await?;
    let elb = Elb::new(&moto.sdk_config().await);
    let foreign = Foreign::create(&env.client).await?;
    let mut ctl =
        FerrolbProcess::spawn_aws_controller(&env.cp, &moto.env(), CLUSTER, "127.0.0.1:0", &[])?;

    let check = async {
        // Every case at once, a good Service after every ninth.
        let pp = PostParams::default();
        let mut good = GOOD.iter();
        for (i, case) in CATALOGUE.iter().enumerate() {
            env.services()
                .create(
                    &pp,
                    &service(&env.ns, case.name, case.annotations, case.tweak),
                )
                .await
                .with_context(|| format!("creating {}", case.name))?;
            if i % 9 == 8
                && let Some((name, tweak)) = good.next()
            {
                env.services()
                    .create(&pp, &service(&env.ns, name, &[], *tweak))
                    .await
                    .with_context(|| format!("creating {name}"))?;
            }
        }
        for (name, tweak) in good {
            env.services()
                .create(&pp, &service(&env.ns, name, &[], *tweak))
                .await
                .with_context(|| format!("creating {name}"))?;
        }

        let names: Vec<&str> = CATALOGUE.iter().map(|c| c.name).collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        let notes = loop {
            let notes = warnings(&env, &names).await?;
            let missing: Vec<String> = CATALOGUE
                .iter()
                .filter(|c| !notes.get(c.name).is_some_and(|n| says_all(n, c)))
                .map(|c| format!("{}: {:?}", c.name, notes.get(c.name)))
                .collect();
            if missing.is_empty() {
                break notes;
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "{} of {} cases not reported as the catalogue says:\n{}",
                    missing.len(),
                    CATALOGUE.len(),
                    missing.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        // The doc's rows, as this run showed them.
        for case in CATALOGUE {
            eprintln!(
                "| `{}` | {} | {} |",
                case.name, case.wrong, notes[case.name]
            );
        }

        // The good ones have their load balancers ...
        for (name, _) in GOOD {
            wait_hostname(&env.services(), name).await?;
        }
        // ... and the account holds exactly theirs: nothing for a bad one.
        let lbs = elb.describe_load_balancers().send().await?;
        let tgs = elb.describe_target_groups().send().await?;
        assert_eq!(
            lbs.load_balancers().len(),
            GOOD.len(),
            "one NLB per good Service, none for a bad one: {:?}",
            lbs.load_balancers()
                .iter()
                .map(|l| l.load_balancer_name().unwrap_or_default())
                .collect::<Vec<_>>()
        );
        // One target group per port of a good Service.
        let ports: usize = GOOD
            .iter()
            .map(|(name, tweak)| {
                let svc = service(&env.ns, name, &[], *tweak);
                svc.spec.and_then(|s| s.ports).map_or(0, |p| p.len())
            })
            .sum();
        assert_eq!(tgs.target_groups().len(), ports, "target groups");
        for case in CATALOGUE {
            let svc = env.services().get(case.name).await?;
            let ingress = svc
                .status
                .and_then(|s| s.load_balancer)
                .and_then(|lb| lb.ingress)
                .unwrap_or_default();
            assert!(ingress.is_empty(), "{} got an ingress", case.name);
        }
        foreign.assert_untouched().await
    };
    check.await.with_log(&ctl)?;
    assert!(
        ctl.try_wait()?.is_none(),
        "the controller exited while serving bad input"
    );
    Ok(())
}

/// The doc's table lists the same cases, in the same order, with the same
/// description and a note holding the same words.
#[test]
fn the_doc_lists_the_aws_catalogue() -> Result<()> {
    let rows = doc_rows(SECTION, None)?;
    let cases: Vec<(&str, &str, &[&str])> = CATALOGUE
        .iter()
        .map(|c| (c.name, c.wrong, c.says))
        .collect();
    check_doc_table(&rows, &cases);
    Ok(())
}
