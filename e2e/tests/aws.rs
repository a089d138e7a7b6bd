//! `ferrolb controller --provider aws` against a real kube-apiserver and moto:
//! what the AWS account shows, and how many calls it took.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context, Result};
use aws_sdk_ec2::types::DomainType;
use aws_sdk_elasticloadbalancingv2::Client as Elb;
use common::{Env, WithLog, annotations, free_port, http_get, registered_targets};
use ferrolb_e2e::moto::{Instance, Moto, Seed};
use ferrolb_e2e::{EndpointSpec, FerrolbProcess, fixtures, wait_for};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

const CLUSTER: &str = "e2e";
const CLASS: &str = "ferrolb.io/aws";

struct AwsEnv {
    env: Env,
    moto: Moto,
    seed: Seed,
    elb: Elb,
    metrics_port: u16,
}

impl AwsEnv {
    async fn start() -> Result<AwsEnv> {
        let env = Env::start().await?;
        let moto = Moto::start().await?;
        let seed = moto.seed(CLUSTER, &["us-east-1a", "us-east-1b"]).await?;
        let elb = Elb::new(&moto.sdk_config().await);
        Ok(AwsEnv {
            env,
            moto,
            seed,
            elb,
            metrics_port: free_port(),
        })
    }

    /// A Node backed by a running moto instance.
    async fn node(&self, name: &str, zone: &str) -> Result<Instance> {
        self.moto
            .run_node(&self.env.client, &self.seed, name, zone)
            .await
    }

    fn controller(&self, extra: &[&str]) -> Result<FerrolbProcess> {
        let addr = format!("127.0.0.1:{}", self.metrics_port);
        FerrolbProcess::spawn_aws_controller(&self.env.cp, &self.moto.env(), CLUSTER, &addr, extra)
    }

    async fn service(
        &self,
        name: &str,
        ports: &[(&str, i32)],
        tweak: impl FnOnce(&mut Service),
    ) -> Result<Service> {
        let mut svc = fixtures::lb_service(&self.env.ns, name, ports);
        svc.spec.as_mut().unwrap().load_balancer_class = Some(CLASS.into());
        tweak(&mut svc);
        Ok(self
            .env
            .services()
            .create(&Default::default(), &svc)
            .await?)
    }

    async fn wait_hostname(&self, name: &str) -> Result<String> {
        common::wait_hostname(&self.env.services(), name).await
    }

    /// AWS calls so far, by operation (all outcomes).
    async fn calls(&self) -> Result<BTreeMap<String, u64>> {
        let (_, body) = http_get(self.metrics_port, "/metrics").await?;
        let mut out = BTreeMap::new();
        for line in body
            .lines()
            .filter(|l| l.starts_with("ferrolb_aws_calls_total{"))
        {
            let op = line
                .split("operation=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .context("no operation label")?;
            let n: f64 = line.rsplit(' ').next().unwrap_or("0").parse()?;
            *out.entry(op.to_string()).or_default() += n as u64;
        }
        Ok(out)
    }

    async fn wait_calls_settle(&self) -> Result<BTreeMap<String, u64>> {
        let mut last = self.calls().await?;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(750)).await;
            let now = self.calls().await?;
            if now == last {
                return Ok(now);
            }
            last = now;
        }
        anyhow::bail!("AWS calls never settled: {last:?}")
    }

    /// The load balancers, and per target group (by port) its targets.
    async fn account(&self) -> Result<Account> {
        let lbs = self.elb.describe_load_balancers().send().await?;
        let tgs = self.elb.describe_target_groups().send().await?;
        let mut targets = BTreeMap::new();
        for tg in tgs.target_groups() {
            let arn = tg.target_group_arn().unwrap_or_default();
            let set = registered_targets(&self.elb, arn).await?;
            targets.insert(
                tg.target_group_name().unwrap_or_default().to_string(),
                (tg.clone(), set),
            );
        }
        Ok(Account {
            load_balancers: lbs.load_balancers().to_vec(),
            target_groups: targets,
        })
    }
}

struct Account {
    load_balancers: Vec<aws_sdk_elasticloadbalancingv2::types::LoadBalancer>,
    target_groups: BTreeMap<
        String,
        (
            aws_sdk_elasticloadbalancingv2::types::TargetGroup,
            BTreeSet<(String, i32)>,
        ),
    >,
}

impl Account {
    /// The load balancer of Service `name` in the test namespace, by the
    /// `k8s-<namespace>-<name>-<hash>` name ferrolb gives it.
    fn load_balancer_of(
        &self,
        name: &str,
    ) -> Option<&aws_sdk_elasticloadbalancingv2::types::LoadBalancer> {
        let prefix = format!("k8s-test-{name}-");
        self.load_balancers.iter().find(|lb| {
            lb.load_balancer_name()
                .is_some_and(|n| n.starts_with(&prefix))
        })
    }
}

fn mutating(calls: &BTreeMap<String, u64>) -> u64 {
    calls
        .iter()
        .filter(|(op, _)| !op.starts_with("Describe"))
        .map(|(_, n)| n)
        .sum()
}

fn diff(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

fn node_ports(svc: &Service) -> BTreeMap<i32, i32> {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .map(|p| (p.port, p.node_port.unwrap_or_default()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn nlb_lifecycle_with_call_counts() -> Result<()> {
    let aws = AwsEnv::start().await?;
    let a = aws.node("node-a", "us-east-1a").await?;
    let b = aws.node("node-b", "us-east-1b").await?;
    let ctl = aws.controller(&["--resync-period", "2s"])?;
    let check = async {
        aws.service("web", &[("TCP", 80), ("TCP", 443)], |s| {
            s.metadata.annotations = annotations(&[(
                "service.beta.kubernetes.io/aws-load-balancer-scheme",
                "internet-facing",
            )]);
        })
        .await?;
        let host = aws.wait_hostname("web").await?;
        let created = aws.wait_calls_settle().await?;

        let account = aws.account().await?;
        assert_eq!(account.load_balancers.len(), 1);
        let lb = &account.load_balancers[0];
        assert_eq!(lb.dns_name(), Some(host.as_str()));
        assert!(lb.load_balancer_name().unwrap().len() <= 32);
        assert_eq!(lb.scheme().map(|s| s.as_str()), Some("internet-facing"));
        let public: BTreeSet<&str> = aws
            .seed
            .public_subnets
            .values()
            .map(String::as_str)
            .collect();
        for az in lb.availability_zones() {
            assert!(
                public.contains(az.subnet_id().unwrap()),
                "internet-facing LB in a public subnet"
            );
        }
        let svc = aws.env.services().get("web").await?;
        let ports = node_ports(&svc);
        assert_eq!(account.target_groups.len(), 2);
        let want_nodes: BTreeSet<String> = [a.id.clone(), b.id.clone()].into();
        for (tg, targets) in account.target_groups.values() {
            let node_port = tg.port().unwrap();
            assert!(
                ports.values().any(|p| *p == node_port),
                "target group on a nodePort"
            );
            let ids: BTreeSet<String> = targets.iter().map(|(id, _)| id.clone()).collect();
            assert_eq!(ids, want_nodes, "every node's instance is a target");
            assert!(targets.iter().all(|(_, p)| *p == node_port));
            assert_eq!(tg.health_check_protocol().map(|p| p.as_str()), Some("TCP"));
            assert_eq!(tg.health_check_port(), Some("traffic-port"));
        }
        let listeners = aws
            .elb
            .describe_listeners()
            .load_balancer_arn(lb.load_balancer_arn().unwrap())
            .send()
            .await?;
        let lports: BTreeSet<i32> = listeners
            .listeners()
            .iter()
            .filter_map(|l| l.port())
            .collect();
        assert_eq!(lports, [80, 443].into());

        // Creating took one create per resource and one register per target
        // group, nothing else mutating.
        for (op, n) in [
            ("CreateLoadBalancer", 1),
            ("CreateTargetGroup", 2),
            ("CreateListener", 2),
            ("RegisterTargets", 2),
        ] {
            assert_eq!(
                created.get(op).copied().unwrap_or(0),
                n,
                "{op} calls: {created:?}"
            );
        }
        assert_eq!(mutating(&created), 7, "{created:?}");

        // Several resyncs of the unchanged Service: reads only (the shared
        // account listing, if any), each confirmed without a full ensure.
        let confirmed = |body: &str| -> f64 {
            body.lines()
                .filter(|l| l.starts_with("ferrolb_aws_ensures_total{path=\"confirmed\""))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        let before = confirmed(&http_get(aws.metrics_port, "/metrics").await?.1);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let resynced = aws.wait_calls_settle().await?;
        let steady = diff(&created, &resynced);
        assert!(
            steady.keys().all(|op| op.starts_with("Describe")),
            "resync mutated: {steady:?}"
        );
        let after = confirmed(&http_get(aws.metrics_port, "/metrics").await?.1);
        assert!(
            after >= before + 2.0,
            "the resyncs ran: {before} then {after}"
        );

        // A node joins: one RegisterTargets per target group.
        let c = aws.node("node-c", "us-east-1a").await?;
        let before = aws.calls().await?;
        wait_for("node-c registered", Duration::from_secs(30), || async {
            let acc = aws.account().await?;
            Ok(acc
                .target_groups
                .values()
                .all(|(_, t)| t.iter().any(|(id, _)| *id == c.id))
                .then_some(()))
        })
        .await?;
        let joined = diff(&before, &aws.wait_calls_settle().await?);
        assert_eq!(joined.get("RegisterTargets"), Some(&2), "{joined:?}");
        assert_eq!(mutating(&joined), 2, "{joined:?}");

        // A node leaves: one DeregisterTargets per target group.
        let before = aws.calls().await?;
        Api::<Node>::all(aws.env.client.clone())
            .delete("node-a", &DeleteParams::default())
            .await?;
        wait_for("node-a deregistered", Duration::from_secs(30), || async {
            let acc = aws.account().await?;
            Ok(acc
                .target_groups
                .values()
                .all(|(_, t)| !t.iter().any(|(id, _)| *id == a.id))
                .then_some(()))
        })
        .await?;
        let left = diff(&before, &aws.wait_calls_settle().await?);
        assert_eq!(left.get("DeregisterTargets"), Some(&2), "{left:?}");
        assert_eq!(mutating(&left), 2, "{left:?}");

        // An annotation changes the health check: one ModifyTargetGroup per
        // target group, nothing else mutating.
        let before = aws.calls().await?;
        let patch = json!({ "metadata": { "annotations": {
            "service.beta.kubernetes.io/aws-load-balancer-healthcheck-interval": "30"
        } } });
        aws.env
            .services()
            .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        wait_for(
            "health checks every 30 s",
            Duration::from_secs(30),
            || async {
                let acc = aws.account().await?;
                Ok(acc
                    .target_groups
                    .values()
                    .all(|(tg, _)| tg.health_check_interval_seconds() == Some(30))
                    .then_some(()))
            },
        )
        .await?;
        let changed = diff(&before, &aws.wait_calls_settle().await?);
        assert_eq!(changed.get("ModifyTargetGroup"), Some(&2), "{changed:?}");
        assert_eq!(mutating(&changed), 2, "{changed:?}");

        // Ports change: 443 goes, 8443 comes (a merge patch replaces the list).
        let patch = json!({ "spec": { "ports": [
            { "name": "tcp-80", "port": 80, "protocol": "TCP", "targetPort": 80 },
            { "name": "tcp-8443", "port": 8443, "protocol": "TCP", "targetPort": 8443 },
        ] } });
        aws.env
            .services()
            .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        let lb_arn = lb.load_balancer_arn().unwrap().to_string();
        wait_for(
            "listeners on 80 and 8443",
            Duration::from_secs(30),
            || async {
                let l = aws
                    .elb
                    .describe_listeners()
                    .load_balancer_arn(&lb_arn)
                    .send()
                    .await?;
                let ports: BTreeSet<i32> = l.listeners().iter().filter_map(|l| l.port()).collect();
                Ok((ports == BTreeSet::from([80, 8443])).then_some(()))
            },
        )
        .await?;
        wait_for(
            "two target groups again",
            Duration::from_secs(30),
            || async { Ok((aws.account().await?.target_groups.len() == 2).then_some(())) },
        )
        .await?;

        // Delete: nothing left.
        aws.env
            .services()
            .delete("web", &DeleteParams::default())
            .await?;
        aws.env.wait_gone("web").await?;
        let account = aws.account().await?;
        assert!(
            account.load_balancers.is_empty(),
            "load balancer left behind"
        );
        assert!(
            account.target_groups.is_empty(),
            "target groups left behind"
        );
        Ok(())
    };
    check.await.with_log(&ctl)
}

#[tokio::test(flavor = "multi_thread")]
async fn local_policy_targets_follow_endpoints() -> Result<()> {
    let aws = AwsEnv::start().await?;
    let a = aws.node("node-a", "us-east-1a").await?;
    let b = aws.node("node-b", "us-east-1b").await?;
    let ctl = aws.controller(&[])?;
    let check = async {
        let svc = aws
            .service("local", &[("TCP", 80)], |s| {
                s.spec.as_mut().unwrap().external_traffic_policy = Some("Local".into());
            })
            .await?;
        let ep = |ip: &str, node| EndpointSpec {
            address: ip.parse().unwrap(),
            node: Some(node),
            ready: true,
        };
        fixtures::create_endpoint_slice(
            &aws.env.client,
            &aws.env.ns,
            "local",
            "local-1",
            &[ep("10.1.0.1", "node-a")],
            &[(Some("tcp-80"), "TCP", 80)],
        )
        .await?;
        aws.wait_hostname("local").await?;
        let ids = |acc: &Account| -> BTreeSet<String> {
            acc.target_groups
                .values()
                .flat_map(|(_, t)| t.iter().map(|(id, _)| id.clone()))
                .collect()
        };
        wait_for("only node-a targeted", Duration::from_secs(30), || async {
            Ok((ids(&aws.account().await?) == BTreeSet::from([a.id.clone()])).then_some(()))
        })
        .await?;
        let acc = aws.account().await?;
        let (tg, _) = acc.target_groups.values().next().unwrap();
        let hc_port = svc.spec.as_ref().unwrap().health_check_node_port.unwrap();
        assert_eq!(tg.health_check_protocol().map(|p| p.as_str()), Some("HTTP"));
        assert_eq!(tg.health_check_path(), Some("/healthz"));
        assert_eq!(tg.health_check_port(), Some(hc_port.to_string().as_str()));

        fixtures::create_endpoint_slice(
            &aws.env.client,
            &aws.env.ns,
            "local",
            "local-2",
            &[ep("10.1.0.2", "node-b")],
            &[(Some("tcp-80"), "TCP", 80)],
        )
        .await?;
        wait_for("node-b targeted too", Duration::from_secs(30), || async {
            Ok(
                (ids(&aws.account().await?) == BTreeSet::from([a.id.clone(), b.id.clone()]))
                    .then_some(()),
            )
        })
        .await?;

        // The last endpoint on node-a goes: node-a leaves the target group,
        // and that is the only write (the health check, defaults included,
        // reads back as it was written, so nothing else is "changed").
        let before = aws.wait_calls_settle().await?;
        let slices: Api<EndpointSlice> = Api::namespaced(aws.env.client.clone(), &aws.env.ns);
        slices.delete("local-1", &DeleteParams::default()).await?;
        wait_for("only node-b targeted", Duration::from_secs(30), || async {
            Ok((ids(&aws.account().await?) == BTreeSet::from([b.id.clone()])).then_some(()))
        })
        .await?;
        let calls = diff(&before, &aws.wait_calls_settle().await?);
        assert_eq!(calls.get("DeregisterTargets"), Some(&1), "{calls:?}");
        assert_eq!(mutating(&calls), 1, "only the deregistration: {calls:?}");
        Ok(())
    };
    check.await.with_log(&ctl)
}

#[tokio::test(flavor = "multi_thread")]
async fn target_node_labels_pick_the_nodes_and_only_their_services_follow_labels() -> Result<()> {
    let aws = AwsEnv::start().await?;
    let a = aws.node("node-a", "us-east-1a").await?;
    let b = aws.node("node-b", "us-east-1b").await?;
    let ctl = aws.controller(&[])?;
    let check = async {
        aws.service("edge", &[("TCP", 80)], |s| {
            s.metadata.annotations = annotations(&[(
                "service.beta.kubernetes.io/aws-load-balancer-target-node-labels",
                "pool=edge,tier=",
            )]);
        })
        .await?;
        aws.service("all", &[("TCP", 80)], |_| {}).await?;
        let nodes: Api<Node> = Api::all(aws.env.client.clone());
        let label = |name: &'static str| {
            let nodes = nodes.clone();
            async move {
                let patch = json!({"metadata": {"labels": {"pool": "edge", "tier": ""}}});
                nodes
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
            }
        };
        label("node-a").await?;
        // Which instances each Service's target group holds.
        let targets_of = async |svc: &str| -> Result<BTreeSet<String>> {
            let acc = aws.account().await?;
            let Some(lb) = acc.load_balancer_of(svc) else {
                return Ok(BTreeSet::new());
            };
            let tgs = aws
                .elb
                .describe_target_groups()
                .load_balancer_arn(lb.load_balancer_arn().unwrap_or_default())
                .send()
                .await?;
            let names: BTreeSet<&str> = tgs
                .target_groups()
                .iter()
                .filter_map(|t| t.target_group_name())
                .collect();
            Ok(acc
                .target_groups
                .iter()
                .filter(|(name, _)| names.contains(name.as_str()))
                .flat_map(|(_, (_, t))| t.iter().map(|(id, _)| id.clone()))
                .collect())
        };
        let both = BTreeSet::from([a.id.clone(), b.id.clone()]);
        wait_for(
            "edge on node-a, all on both",
            Duration::from_secs(90),
            || async {
                let ok = targets_of("edge").await? == BTreeSet::from([a.id.clone()])
                    && targets_of("all").await? == both;
                Ok(ok.then_some(()))
            },
        )
        .await?;

        // Labelling node-b changes edge's targets and no one else's: edge's
        // target group gets one registration, with no read at all.
        let before = aws.wait_calls_settle().await?;
        label("node-b").await?;
        wait_for("edge on both nodes", Duration::from_secs(30), || async {
            Ok((targets_of("edge").await? == both).then_some(()))
        })
        .await?;
        let calls = diff(&before, &aws.wait_calls_settle().await?);
        assert_eq!(calls.get("DescribeLoadBalancers"), None, "{calls:?}");
        assert_eq!(calls.get("RegisterTargets"), Some(&1), "{calls:?}");
        assert_eq!(mutating(&calls), 1, "{calls:?}");
        Ok(())
    };
    check.await.with_log(&ctl)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_load_balancer_replaced_while_the_controller_was_down_is_removed() -> Result<()> {
    let aws = AwsEnv::start().await?;
    aws.node("node-a", "us-east-1a").await?;
    let name_annotation = "service.beta.kubernetes.io/aws-load-balancer-name";
    let names = async || -> Result<BTreeSet<String>> {
        let acc = aws.account().await?;
        Ok(acc
            .load_balancers
            .iter()
            .filter_map(|lb| lb.load_balancer_name().map(str::to_string))
            .collect())
    };
    let mut ctl = aws.controller(&[])?;
    let first = async {
        aws.service("renamed", &[("TCP", 80)], |s| {
            s.metadata.annotations = annotations(&[(name_annotation, "renamed-old")]);
        })
        .await?;
        aws.wait_hostname("renamed").await?;
        anyhow::Ok(())
    };
    first.await.with_log(&ctl)?;
    ctl.kill().await?;

    // While no controller runs, the Service asks for another name: the next
    // controller builds the new load balancer and finds the old one by its
    // tags on its sweep, though the Service still exists.
    let patch = json!({ "metadata": { "annotations": { name_annotation: "renamed-new" } } });
    aws.env
        .services()
        .patch("renamed", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let ctl = aws.controller(&["--resync-period", "3s"])?;
    let check = async {
        wait_for(
            "only the new load balancer",
            Duration::from_secs(60),
            || async {
                let names = names().await?;
                Ok((names == BTreeSet::from(["renamed-new".to_string()])).then_some(()))
            },
        )
        .await?;
        wait_for(
            "only the new target group",
            Duration::from_secs(60),
            || async { Ok((aws.account().await?.target_groups.len() == 1).then_some(())) },
        )
        .await?;

        // And renamed while the controller runs: replaced at once.
        let patch = json!({ "metadata": { "annotations": { name_annotation: "renamed-live" } } });
        aws.env
            .services()
            .patch("renamed", &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        wait_for(
            "only the live-renamed load balancer",
            Duration::from_secs(60),
            || async {
                let done = names().await? == BTreeSet::from(["renamed-live".to_string()])
                    && aws.account().await?.target_groups.len() == 1;
                Ok(done.then_some(()))
            },
        )
        .await?;
        Ok(())
    };
    check.await.with_log(&ctl)
}

#[tokio::test(flavor = "multi_thread")]
async fn static_addresses_and_named_security_groups() -> Result<()> {
    let aws = AwsEnv::start().await?;
    aws.node("node-a", "us-east-1a").await?;
    let ctl = aws.controller(&[])?;
    let check = async {
        let ec2 = aws_sdk_ec2::Client::new(&aws.moto.sdk_config().await);
        let mut eips = Vec::new();
        for _ in 0..2 {
            let a = ec2
                .allocate_address()
                .domain(DomainType::Vpc)
                .send()
                .await?;
            eips.push((
                a.allocation_id().context("no allocation id")?.to_string(),
                a.public_ip().context("no public ip")?.to_string(),
            ));
        }
        let ids: Vec<&str> = eips.iter().map(|(id, _)| id.as_str()).collect();
        aws.service("public", &[("TCP", 80)], |s| {
            s.metadata.annotations = annotations(&[
                (
                    "service.beta.kubernetes.io/aws-load-balancer-scheme",
                    "internet-facing",
                ),
                (
                    "service.beta.kubernetes.io/aws-load-balancer-eip-allocations",
                    &ids.join(","),
                ),
            ]);
        })
        .await?;
        // One private address in each zone's private subnet (10.0.128.0/20 in
        // us-east-1a and 10.0.144.0/20 in us-east-1b, as the seed lays them
        // out), listed in the other order: each must still land in its own.
        aws.service("private", &[("TCP", 80)], |s| {
            s.metadata.annotations = annotations(&[
                (
                    "service.beta.kubernetes.io/aws-load-balancer-scheme",
                    "internal",
                ),
                (
                    "service.beta.kubernetes.io/aws-load-balancer-private-ipv4-addresses",
                    "10.0.144.10,10.0.128.10",
                ),
            ]);
        })
        .await?;

        // A security group named in the annotation is attached by its ID.
        let sg = ec2
            .create_security_group()
            .group_name("lb-frontend")
            .description("for the NLB")
            .vpc_id(&aws.seed.vpc_id)
            .send()
            .await?
            .group_id()
            .context("no group id")?
            .to_string();
        aws.service("named-sg", &[("TCP", 80)], |s| {
            s.metadata.annotations = annotations(&[(
                "service.beta.kubernetes.io/aws-load-balancer-security-groups",
                "lb-frontend",
            )]);
        })
        .await?;
        aws.wait_hostname("named-sg").await?;
        let acc = aws.account().await?;
        let lb = acc
            .load_balancer_of("named-sg")
            .context("no load balancer for named-sg")?;
        assert_eq!(lb.security_groups(), [sg]);

        let api = aws.env.services();
        let ingress = async |name: &'static str, want: usize| {
            let what = format!("{want} ingress entries on {name}");
            wait_for(&what, Duration::from_secs(90), || {
                let api = api.clone();
                async move {
                    let svc = api.get(name).await?;
                    let ingress = svc
                        .status
                        .and_then(|s| s.load_balancer)
                        .and_then(|lb| lb.ingress)
                        .unwrap_or_default();
                    Ok((ingress.len() == want).then_some(ingress))
                }
            })
            .await
        };
        for (name, want) in [
            (
                "public",
                eips.iter().map(|(_, ip)| ip.as_str()).collect::<Vec<_>>(),
            ),
            ("private", vec!["10.0.128.10", "10.0.144.10"]),
        ] {
            let got = ingress(name, 1 + want.len()).await?;
            assert!(got[0].hostname.is_some(), "{name}: hostname first: {got:?}");
            let ips: BTreeSet<&str> = got[1..].iter().filter_map(|i| i.ip.as_deref()).collect();
            assert_eq!(ips, want.into_iter().collect(), "{name}: {got:?}");
            for i in &got[1..] {
                // Traffic to these must still pass through the NLB.
                assert_eq!(i.ip_mode.as_deref(), Some("Proxy"), "{name}: {got:?}");
            }
        }
        let acc = aws.account().await?;
        // Found by name: named-sg's load balancer is internal too.
        let internal = acc
            .load_balancer_of("private")
            .context("no load balancer for Service private")?;
        assert_eq!(internal.scheme().map(|s| s.as_str()), Some("internal"));
        let by_subnet: BTreeMap<&str, &str> = internal
            .availability_zones()
            .iter()
            .filter_map(|z| {
                let addr = z
                    .load_balancer_addresses()
                    .first()?
                    .private_ipv4_address()?;
                Some((z.subnet_id()?, addr))
            })
            .collect();
        let want = BTreeMap::from([
            (
                aws.seed.private_subnets["us-east-1a"].as_str(),
                "10.0.128.10",
            ),
            (
                aws.seed.private_subnets["us-east-1b"].as_str(),
                "10.0.144.10",
            ),
        ]);
        assert_eq!(by_subnet, want);
        Ok(())
    };
    check.await.with_log(&ctl)
}

#[tokio::test(flavor = "multi_thread")]
async fn foreign_load_balancer_and_bad_annotations_are_left_alone() -> Result<()> {
    let aws = AwsEnv::start().await?;
    aws.node("node-a", "us-east-1a").await?;
    // Somebody else's NLB, with the name our Service will ask for.
    let foreign = aws
        .elb
        .create_load_balancer()
        .name("shared-name")
        .r#type(aws_sdk_elasticloadbalancingv2::types::LoadBalancerTypeEnum::Network)
        .subnets(aws.seed.private_subnets.values().next().unwrap())
        .send()
        .await?;
    let foreign_arn = foreign.load_balancers()[0]
        .load_balancer_arn()
        .unwrap()
        .to_string();
    // Leftovers of a Service that no longer exists, tagged as ours; and a
    // target group of another cluster, which must survive.
    let tag = |k: &str, v: &str| {
        aws_sdk_elasticloadbalancingv2::types::Tag::builder()
            .key(k)
            .value(v)
            .build()
    };
    let ghost = aws
        .elb
        .create_load_balancer()
        .name("ghost")
        .r#type(aws_sdk_elasticloadbalancingv2::types::LoadBalancerTypeEnum::Network)
        .subnets(aws.seed.private_subnets.values().next().unwrap())
        .tags(tag("ferrolb.io/cluster", CLUSTER))
        .tags(tag("ferrolb.io/service", "test/ghost"))
        .tags(tag("ferrolb.io/role", "load-balancer"))
        .send()
        .await?;
    let ghost_arn = ghost.load_balancers()[0]
        .load_balancer_arn()
        .unwrap()
        .to_string();
    for (name, cluster) in [("ghost-tg", CLUSTER), ("other-cluster-tg", "other")] {
        aws.elb
            .create_target_group()
            .name(name)
            .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Tcp)
            .port(30000)
            .vpc_id(&aws.seed.vpc_id)
            .tags(tag("ferrolb.io/cluster", cluster))
            .tags(tag("ferrolb.io/service", "test/ghost"))
            .send()
            .await?;
    }
    let ctl = aws.controller(&[])?;
    let check = async {
        aws.service("collides", &[("TCP", 80)], |s| {
            s.metadata.annotations = annotations(&[(
                "service.beta.kubernetes.io/aws-load-balancer-name",
                "shared-name",
            )]);
        })
        .await?;
        let note = aws
            .env
            .wait_event("collides", "SyncLoadBalancerFailed")
            .await?;
        assert!(
            note.contains("shared-name") && note.contains("not tagged"),
            "{note}"
        );

        aws.service("bad", &[("TCP", 80)], |s| {
            s.metadata.annotations = annotations(&[(
                "service.beta.kubernetes.io/aws-load-balancer-healthcheck-interval",
                "soon",
            )]);
        })
        .await?;
        let note = aws.env.wait_event("bad", "SyncLoadBalancerFailed").await?;
        assert!(
            note.contains("aws-load-balancer-healthcheck-interval"),
            "{note}"
        );

        wait_for(
            "the ghost's leftovers to be collected",
            Duration::from_secs(30),
            || async {
                let acc = aws.account().await?;
                let lb_gone = !acc
                    .load_balancers
                    .iter()
                    .any(|l| l.load_balancer_arn() == Some(ghost_arn.as_str()));
                Ok((lb_gone && !acc.target_groups.contains_key("ghost-tg")).then_some(()))
            },
        )
        .await?;

        aws.env
            .services()
            .delete("collides", &DeleteParams::default())
            .await?;
        aws.env.wait_gone("collides").await?;
        let acc = aws.account().await?;
        let arns: Vec<&str> = acc
            .load_balancers
            .iter()
            .filter_map(|l| l.load_balancer_arn())
            .collect();
        assert_eq!(
            arns,
            [foreign_arn.as_str()],
            "only the foreign LB exists, untouched"
        );
        let tgs: Vec<&String> = acc.target_groups.keys().collect();
        assert_eq!(
            tgs,
            ["other-cluster-tg"],
            "nothing created for either Service; the other cluster's group kept"
        );
        let tags = aws
            .elb
            .describe_tags()
            .resource_arns(&foreign_arn)
            .send()
            .await?;
        assert!(
            tags.tag_descriptions()[0].tags().is_empty(),
            "no tag was added to the foreign LB"
        );
        Ok(())
    };
    check.await.with_log(&ctl)
}

/// The ingress rules ferrolb wrote on a security group for a Service:
/// (protocol, port, cidr, kind).
async fn rules(
    aws: &AwsEnv,
    group: &str,
    service: &str,
) -> Result<BTreeSet<(String, i32, String, String)>> {
    let ec2 = aws_sdk_ec2::Client::new(&aws.moto.sdk_config().await);
    let out = ec2
        .describe_security_groups()
        .group_ids(group)
        .send()
        .await?;
    let mut found = BTreeSet::new();
    for p in out
        .security_groups()
        .iter()
        .flat_map(|g| g.ip_permissions())
    {
        for r in p.ip_ranges() {
            let Some(d) = r.description() else { continue };
            let prefix = format!("ferrolb:{CLUSTER}:{service}:");
            if let Some(kind) = d.strip_prefix(&prefix) {
                found.insert((
                    p.ip_protocol().unwrap_or_default().to_string(),
                    p.from_port().unwrap_or_default(),
                    r.cidr_ip().unwrap_or_default().to_string(),
                    kind.to_string(),
                ));
            }
        }
    }
    Ok(found)
}

#[tokio::test(flavor = "multi_thread")]
async fn source_ranges_become_named_rules_on_the_node_security_group() -> Result<()> {
    let aws = AwsEnv::start().await?;
    aws.node("node-a", "us-east-1a").await?;
    let group = aws.seed.node_security_group.clone();
    // A rule somebody else wrote on the same group, which must survive.
    let ec2 = aws_sdk_ec2::Client::new(&aws.moto.sdk_config().await);
    ec2.authorize_security_group_ingress()
        .group_id(&group)
        .ip_permissions(
            aws_sdk_ec2::types::IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(22)
                .to_port(22)
                .ip_ranges(
                    aws_sdk_ec2::types::IpRange::builder()
                        .cidr_ip("198.51.100.0/24")
                        .description("ssh")
                        .build(),
                )
                .build(),
        )
        .send()
        .await?;
    let ctl = aws.controller(&[])?;
    let check = async {
        aws.service("guarded", &[("TCP", 80)], |s| {
            s.spec.as_mut().unwrap().load_balancer_source_ranges =
                Some(vec!["203.0.113.0/24".into()]);
        })
        .await?;
        aws.wait_hostname("guarded").await?;
        let svc = aws.env.services().get("guarded").await?;
        let node_port = node_ports(&svc)[&80];
        let lb_subnet_cidrs: BTreeSet<String> = {
            let ec2 = aws_sdk_ec2::Client::new(&aws.moto.sdk_config().await);
            let lbs = aws.elb.describe_load_balancers().send().await?;
            let ids: Vec<String> = lbs.load_balancers()[0]
                .availability_zones()
                .iter()
                .filter_map(|z| z.subnet_id().map(str::to_string))
                .collect();
            let subnets = ec2
                .describe_subnets()
                .set_subnet_ids(Some(ids))
                .send()
                .await?;
            subnets
                .subnets()
                .iter()
                .filter_map(|s| s.cidr_block().map(str::to_string))
                .collect()
        };
        let mut want: BTreeSet<(String, i32, String, String)> = [(
            "tcp".to_string(),
            node_port,
            "203.0.113.0/24".to_string(),
            "client".to_string(),
        )]
        .into();
        for cidr in &lb_subnet_cidrs {
            want.insert(("tcp".into(), node_port, cidr.clone(), "health".into()));
        }
        wait_for(
            "the client and health rules",
            Duration::from_secs(30),
            || async { Ok((rules(&aws, &group, "test/guarded").await? == want).then_some(())) },
        )
        .await?;

        // New ranges replace the old rule; nothing else changes.
        let patch = json!({ "spec": { "loadBalancerSourceRanges": ["192.0.2.0/24"] } });
        aws.env
            .services()
            .patch("guarded", &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        want.remove(&(
            "tcp".to_string(),
            node_port,
            "203.0.113.0/24".to_string(),
            "client".to_string(),
        ));
        want.insert((
            "tcp".into(),
            node_port,
            "192.0.2.0/24".into(),
            "client".into(),
        ));
        wait_for(
            "the rule to follow the new range",
            Duration::from_secs(30),
            || async { Ok((rules(&aws, &group, "test/guarded").await? == want).then_some(())) },
        )
        .await?;

        // The user takes the rules over: ours go, and come back when handed
        // back to ferrolb.
        let manage = |on: &str| {
            json!({ "metadata": { "annotations": {
                "service.beta.kubernetes.io/aws-load-balancer-manage-backend-security-group-rules": on
            } } })
        };
        for (on, expect) in [("false", BTreeSet::new()), ("true", want.clone())] {
            aws.env
                .services()
                .patch(
                    "guarded",
                    &PatchParams::default(),
                    &Patch::Merge(&manage(on)),
                )
                .await?;
            wait_for(
                &format!("rules with manage-backend-security-group-rules={on}"),
                Duration::from_secs(30),
                || async {
                    Ok((rules(&aws, &group, "test/guarded").await? == expect).then_some(()))
                },
            )
            .await?;
        }

        // Delete: our rules go, the foreign one stays.
        aws.env
            .services()
            .delete("guarded", &DeleteParams::default())
            .await?;
        aws.env.wait_gone("guarded").await?;
        assert!(
            rules(&aws, &group, "test/guarded").await?.is_empty(),
            "rules left behind"
        );
        let out = ec2
            .describe_security_groups()
            .group_ids(&group)
            .send()
            .await?;
        let ssh = out.security_groups()[0]
            .ip_permissions()
            .iter()
            .any(|p| p.from_port() == Some(22));
        assert!(ssh, "the foreign rule was removed");
        Ok(())
    };
    check.await.with_log(&ctl)
}

#[tokio::test(flavor = "multi_thread")]
async fn ip_targets_are_the_ready_endpoints() -> Result<()> {
    let aws = AwsEnv::start().await?;
    aws.node("node-a", "us-east-1a").await?;
    let ctl = aws.controller(&[])?;
    let check = async {
        aws.service("pods", &[("TCP", 80)], |s| {
            s.metadata.annotations = annotations(&[(
                "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type",
                "ip",
            )]);
            let port = &mut s.spec.as_mut().unwrap().ports.as_mut().unwrap()[0];
            port.target_port =
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(8080));
        })
        .await?;
        let ep = |ip: &str, ready| EndpointSpec {
            address: ip.parse().unwrap(),
            node: Some("node-a"),
            ready,
        };
        fixtures::create_endpoint_slice(
            &aws.env.client,
            &aws.env.ns,
            "pods",
            "pods-1",
            &[ep("10.0.128.50", true), ep("10.0.128.51", false)],
            &[(Some("tcp-80"), "TCP", 8080)],
        )
        .await?;
        aws.wait_hostname("pods").await?;
        let want: BTreeSet<(String, i32)> = [("10.0.128.50".to_string(), 8080)].into();
        wait_for(
            "the ready endpoint as the only target",
            Duration::from_secs(30),
            || async {
                let acc = aws.account().await?;
                Ok(acc
                    .target_groups
                    .values()
                    .next()
                    .filter(|(tg, t)| {
                        tg.target_type().map(|t| t.as_str()) == Some("ip") && *t == want
                    })
                    .map(|_| ()))
            },
        )
        .await?;
        Ok(())
    };
    check.await.with_log(&ctl)
}
