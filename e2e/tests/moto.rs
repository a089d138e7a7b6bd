//! The moto endpoint: the account `Moto::seed` builds reads back through the SDK as a real
//! account would, ELBv2 works against it, and the server dies with its handle.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::time::Instant;

use aws_sdk_ec2::types::{Filter, InstanceStateName};
use aws_sdk_elasticloadbalancingv2 as elbv2;
use elbv2::types::{
    LoadBalancerSchemeEnum, LoadBalancerTypeEnum, ProtocolEnum, TargetDescription,
    TargetHealthStateEnum, TargetTypeEnum,
};
use ferrolb_e2e::Moto;
use ferrolb_e2e::moto::{Seed, cluster_tag_key, moto_server_path};

const CLUSTER: &str = "e2e";
const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];
const NODE_PORT: i32 = 30080;

async fn start() -> Moto {
    let started = Instant::now();
    let moto = Moto::start().await.expect("moto starts");
    eprintln!("Moto::start took {:?}", started.elapsed());
    moto
}

fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

async fn subnets_with(ec2: &aws_sdk_ec2::Client, f: Filter) -> BTreeMap<String, String> {
    let out = ec2.describe_subnets().filters(f).send().await.unwrap();
    out.subnets()
        .iter()
        .map(|s| {
            (
                s.availability_zone().unwrap().to_owned(),
                s.subnet_id().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Whether the route table associated with `subnet` routes 0.0.0.0/0 to an internet
/// gateway, found the way cloud-provider-aws finds it.
async fn routes_to_igw(ec2: &aws_sdk_ec2::Client, seed: &Seed, subnet: &str) -> bool {
    let out = ec2
        .describe_route_tables()
        .filters(filter("association.subnet-id", subnet))
        .send()
        .await
        .unwrap();
    let tables = out.route_tables();
    assert_eq!(tables.len(), 1, "{subnet} has one explicit route table");
    let table = &tables[0];
    assert_eq!(table.vpc_id(), Some(seed.vpc_id.as_str()));
    assert!(
        table
            .routes()
            .iter()
            .any(|r| r.destination_cidr_block() == Some("10.0.0.0/16")
                && r.gateway_id() == Some("local")),
        "every table has the local route: {table:?}"
    );
    table.routes().iter().any(|r| {
        r.destination_cidr_block() == Some("0.0.0.0/0")
            && r.gateway_id()
                .is_some_and(|gw| gw == seed.internet_gateway && gw.starts_with("igw-"))
    })
}

fn in_private_subnet(ip: IpAddr, zone_index: usize) -> bool {
    let IpAddr::V4(v4) = ip else { return false };
    let [a, b, c, _] = v4.octets();
    let first = 128 + 16 * zone_index;
    (a, b) == (10, 0) && (first..first + 16).contains(&usize::from(c))
}

#[tokio::test]
async fn seeded_account_reads_back_like_a_real_one() {
    let moto = start().await;
    let seed = moto.seed(CLUSTER, &ZONES).await.expect("seed");
    let config = moto.sdk_config().await;
    let ec2 = aws_sdk_ec2::Client::new(&config);

    // The VPC, tagged for the cluster.
    let vpcs = ec2
        .describe_vpcs()
        .filters(filter("tag-key", &cluster_tag_key(CLUSTER)))
        .send()
        .await
        .unwrap();
    let vpc_ids: Vec<_> = vpcs.vpcs().iter().filter_map(|v| v.vpc_id()).collect();
    assert_eq!(vpc_ids, [seed.vpc_id.as_str()]);
    assert_eq!(vpcs.vpcs()[0].cidr_block(), Some("10.0.0.0/16"));
    let dns_hostnames = ec2
        .describe_vpc_attribute()
        .vpc_id(&seed.vpc_id)
        .attribute(aws_sdk_ec2::types::VpcAttributeName::EnableDnsHostnames)
        .send()
        .await
        .unwrap();
    assert_eq!(
        dns_hostnames.enable_dns_hostnames().and_then(|v| v.value()),
        Some(true)
    );

    // Subnets by role tag, as a load-balancer controller discovers them.
    let public = subnets_with(&ec2, filter("tag:kubernetes.io/role/elb", "1")).await;
    assert_eq!(public, seed.public_subnets);
    let private = subnets_with(&ec2, filter("tag:kubernetes.io/role/internal-elb", "1")).await;
    assert_eq!(private, seed.private_subnets);
    assert_eq!(
        public.keys().map(String::as_str).collect::<Vec<_>>(),
        ZONES,
        "one public subnet per zone"
    );
    let owned = ec2
        .describe_subnets()
        .filters(filter(
            &format!("tag:{}", cluster_tag_key(CLUSTER)),
            "owned",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(owned.subnets().len(), 2 * ZONES.len());
    let all = ec2
        .describe_subnets()
        .filters(filter("vpc-id", &seed.vpc_id))
        .send()
        .await
        .unwrap();
    for subnet in all.subnets() {
        let id = subnet.subnet_id().unwrap();
        let is_public = public.values().any(|p| p == id);
        assert_eq!(subnet.map_public_ip_on_launch(), Some(is_public), "{id}");
    }

    // Only the public subnets' route table goes to the internet gateway.
    for subnet in public.values() {
        assert!(
            routes_to_igw(&ec2, &seed, subnet).await,
            "{subnet} is public"
        );
    }
    for subnet in private.values() {
        assert!(
            !routes_to_igw(&ec2, &seed, subnet).await,
            "{subnet} is private"
        );
    }
    let igws = ec2
        .describe_internet_gateways()
        .filters(filter("attachment.vpc-id", &seed.vpc_id))
        .send()
        .await
        .unwrap();
    let igw_ids: Vec<_> = igws
        .internet_gateways()
        .iter()
        .filter_map(|g| g.internet_gateway_id())
        .collect();
    assert_eq!(igw_ids, [seed.internet_gateway.as_str()]);

    // The node security group.
    let groups = ec2
        .describe_security_groups()
        .group_ids(&seed.node_security_group)
        .send()
        .await
        .unwrap();
    let group = &groups.security_groups()[0];
    assert_eq!(group.vpc_id(), Some(seed.vpc_id.as_str()));
    assert!(
        group
            .tags()
            .iter()
            .any(|t| t.key() == Some(&cluster_tag_key(CLUSTER)) && t.value() == Some("owned")),
        "{group:?}"
    );

    // Two nodes, running in the private subnets of their zones.
    let a = moto
        .run_instance(&seed, "us-east-1a")
        .await
        .expect("node a");
    let b = moto
        .run_instance(&seed, "us-east-1b")
        .await
        .expect("node b");
    assert_eq!(a.provider_id, format!("aws:///us-east-1a/{}", a.id));
    assert_eq!(b.provider_id, format!("aws:///us-east-1b/{}", b.id));
    assert!(in_private_subnet(a.private_ip, 0), "{a:?}");
    assert!(in_private_subnet(b.private_ip, 1), "{b:?}");
    let out = ec2
        .describe_instances()
        .instance_ids(&a.id)
        .instance_ids(&b.id)
        .send()
        .await
        .unwrap();
    let instances: Vec<_> = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .collect();
    assert_eq!(instances.len(), 2);
    for (node, zone) in [(&a, "us-east-1a"), (&b, "us-east-1b")] {
        let instance = instances
            .iter()
            .find(|i| i.instance_id() == Some(node.id.as_str()))
            .unwrap();
        assert_eq!(
            instance.state().and_then(|s| s.name()),
            Some(&InstanceStateName::Running)
        );
        assert_eq!(
            instance.subnet_id(),
            Some(seed.private_subnets[zone].as_str())
        );
        assert_eq!(instance.vpc_id(), Some(seed.vpc_id.as_str()));
        assert_eq!(
            instance.placement().and_then(|p| p.availability_zone()),
            Some(zone)
        );
        assert_eq!(
            instance.private_ip_address(),
            Some(node.private_ip.to_string().as_str())
        );
        let dashed = node.private_ip.to_string().replace('.', "-");
        assert_eq!(node.private_dns_name, format!("ip-{dashed}.ec2.internal"));
        let groups: Vec<_> = instance
            .security_groups()
            .iter()
            .filter_map(|g| g.group_id())
            .collect();
        assert_eq!(groups, [seed.node_security_group.as_str()]);
        assert!(instance.public_ip_address().is_none(), "{instance:?}");
    }

    // An internet-facing NLB in the public subnets, with node a behind a TCP target group.
    let elb = elbv2::Client::new(&config);
    let lb = elb
        .create_load_balancer()
        .name("e2e-nlb")
        .r#type(LoadBalancerTypeEnum::Network)
        .scheme(LoadBalancerSchemeEnum::InternetFacing)
        .set_subnets(Some(seed.public_subnets.values().cloned().collect()))
        .send()
        .await
        .expect("CreateLoadBalancer");
    let lb = &lb.load_balancers()[0];
    let lb_arn = lb.load_balancer_arn().unwrap().to_owned();
    assert_eq!(lb.vpc_id(), Some(seed.vpc_id.as_str()));
    let lb_subnets: BTreeMap<_, _> = lb
        .availability_zones()
        .iter()
        .map(|z| {
            (
                z.zone_name().unwrap().to_owned(),
                z.subnet_id().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(lb_subnets, seed.public_subnets);
    let tg = elb
        .create_target_group()
        .name("e2e-tcp")
        .protocol(ProtocolEnum::Tcp)
        .port(NODE_PORT)
        .vpc_id(&seed.vpc_id)
        .target_type(TargetTypeEnum::Instance)
        .send()
        .await
        .expect("CreateTargetGroup");
    let tg_arn = tg.target_groups()[0].target_group_arn().unwrap().to_owned();
    elb.create_listener()
        .load_balancer_arn(&lb_arn)
        .protocol(ProtocolEnum::Tcp)
        .port(80)
        .default_actions(
            elbv2::types::Action::builder()
                .r#type(elbv2::types::ActionTypeEnum::Forward)
                .target_group_arn(&tg_arn)
                .build(),
        )
        .send()
        .await
        .expect("CreateListener");
    elb.register_targets()
        .target_group_arn(&tg_arn)
        .targets(
            TargetDescription::builder()
                .id(&a.id)
                .port(NODE_PORT)
                .build(),
        )
        .send()
        .await
        .expect("RegisterTargets");
    let health = elb
        .describe_target_health()
        .target_group_arn(&tg_arn)
        .send()
        .await
        .expect("DescribeTargetHealth");
    let targets: Vec<_> = health
        .target_health_descriptions()
        .iter()
        .map(|d| {
            (
                d.target().and_then(|t| t.id()).unwrap().to_owned(),
                d.target().and_then(|t| t.port()),
                d.target_health().and_then(|h| h.state()).cloned(),
            )
        })
        .collect();
    // moto: healthy at once, with no `initial` phase.
    assert_eq!(
        targets,
        [(
            a.id.clone(),
            Some(NODE_PORT),
            Some(TargetHealthStateEnum::Healthy)
        )]
    );

    // A terminated node.
    moto.terminate_instance(&b.id).await.expect("terminate b");
    let out = ec2
        .describe_instances()
        .instance_ids(&b.id)
        .send()
        .await
        .unwrap();
    let state = out.reservations()[0].instances()[0]
        .state()
        .and_then(|s| s.name())
        .cloned();
    assert_eq!(state, Some(InstanceStateName::Terminated));

    // reset wipes everything; the same server can be seeded again.
    moto.reset().await.expect("reset");
    let lbs = elb.describe_load_balancers().send().await.unwrap();
    assert!(lbs.load_balancers().is_empty(), "{lbs:?}");
    let vpcs = ec2
        .describe_vpcs()
        .filters(filter("tag-key", &cluster_tag_key(CLUSTER)))
        .send()
        .await
        .unwrap();
    assert!(vpcs.vpcs().is_empty(), "{vpcs:?}");
    let err = ec2
        .describe_instances()
        .instance_ids(&a.id)
        .send()
        .await
        .expect_err("a is gone");
    assert_eq!(
        err.as_service_error().and_then(|e| e.meta().code()),
        Some("InvalidInstanceID.NotFound")
    );
    let again = moto
        .seed(CLUSTER, &ZONES[..1])
        .await
        .expect("seed after reset");
    moto.run_instance(&again, ZONES[0])
        .await
        .expect("node after reset");

    // Dropping the handle kills the server.
    let pid = moto.pid().unwrap();
    let dir = moto.dir().to_owned();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    drop(moto);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "moto_server {pid} outlived drop"
    );
    assert!(!dir.exists() || std::env::var_os("FERROLB_E2E_KEEP").is_some());
}

/// A process given `Moto::env` talks to that moto and reads no profile: here boto3 from
/// moto's own venv (when moto_server comes from one), a client independent of the SDK.
#[tokio::test]
async fn env_points_a_child_process_at_moto() {
    let moto = start().await;
    let env = moto.env();
    let keys: BTreeSet<_> = env.iter().map(|(k, _)| k.as_str()).collect();
    for key in [
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_EC2_METADATA_DISABLED",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
    ] {
        assert!(keys.contains(key), "{key} missing from {env:?}");
    }
    for (key, value) in &env {
        if key.ends_with("_FILE") {
            assert_eq!(std::fs::read(value).unwrap(), b"", "{key}");
        }
    }
    let seed = moto.seed("child", &["us-east-1a"]).await.unwrap();

    let python = moto_server_path().await.unwrap().with_file_name("python");
    if !python.exists() {
        eprintln!(
            "{} not found; skipping the child-process check",
            python.display()
        );
        return;
    }
    let script = "import boto3\n\
        vpcs = boto3.client('ec2').describe_vpcs(Filters=[{'Name': 'tag-key', 'Values': ['kubernetes.io/cluster/child']}])['Vpcs']\n\
        print(' '.join(v['VpcId'] for v in vpcs))";
    let out = tokio::process::Command::new(&python)
        .args(["-c", script])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), seed.vpc_id);
}
