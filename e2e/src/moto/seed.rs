//! The EC2 resources a cluster's account has: VPC, subnets, route tables, internet
//! gateway, node security group, and the nodes' instances.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, ensure};
use aws_sdk_ec2::error::DisplayErrorContext;
use aws_sdk_ec2::types::{
    AttributeBooleanValue, InstanceStateName, InstanceType, ResourceType, Tag, TagSpecification,
};

use super::Moto;
use crate::wait::wait_for;

/// The image nodes run: Amazon Linux 2 (x86_64), from the stock AMIs moto loads. RunInstances
/// takes any well-formed id, but DescribeImages only knows the stock ones.
pub const NODE_AMI: &str = "ami-04681a1dbd79675a5";
/// The instance type nodes run as.
pub const NODE_INSTANCE_TYPE: &str = "t3.medium";

const VPC_CIDR: &str = "10.0.0.0/16";
/// Zones [`Moto::seed`] can lay out: a public and a private /20 each in the /16.
const MAX_ZONES: usize = 8;
// Public /20s fill 10.0.0.0/17, private ones 10.0.128.0/17.
const _: () = assert!(16 * MAX_ZONES <= 128);
/// moto answers at once; this only bounds a state that never comes.
const STATE_TIMEOUT: Duration = Duration::from_secs(30);

/// What [`Moto::seed`] made, by id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seed {
    /// The cluster name in the `kubernetes.io/cluster/<cluster>` tags.
    pub cluster: String,
    pub vpc_id: String,
    /// Zone → subnet id; these route 0.0.0.0/0 to [`Seed::internet_gateway`].
    pub public_subnets: BTreeMap<String, String>,
    /// Zone → subnet id; these have no route to the internet gateway.
    pub private_subnets: BTreeMap<String, String>,
    pub internet_gateway: String,
    pub node_security_group: String,
}

/// A running node instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub zone: String,
    pub private_ip: IpAddr,
    /// `ip-10-0-128-5.ec2.internal`: what a kubelet on AWS names its Node.
    pub private_dns_name: String,
    /// `aws:///<zone>/<instance id>`, as the kubelet puts it in `Node.spec.providerID`.
    pub provider_id: String,
}

/// `kubernetes.io/cluster/<cluster>`.
pub fn cluster_tag_key(cluster: &str) -> String {
    format!("kubernetes.io/cluster/{cluster}")
}

impl Moto {
    /// Seeds the account of cluster `cluster` in `zones` (e.g. `us-east-1a`):
    /// - a VPC 10.0.0.0/16 with DNS hostnames, and an internet gateway attached to it;
    /// - per zone a public subnet (10.0.16·i.0/20, `kubernetes.io/role/elb=1`, public IPs
    ///   on launch) and a private one (10.0.128+16·i.0/20, `kubernetes.io/role/internal-elb=1`);
    /// - one route table routing 0.0.0.0/0 to the internet gateway, associated with every
    ///   public subnet, and per private subnet its own route table with only the local route;
    /// - a node security group.
    ///
    /// Every resource has a `Name` tag and `kubernetes.io/cluster/<cluster>=owned`.
    pub async fn seed(&self, cluster: &str, zones: &[&str]) -> Result<Seed> {
        ensure!(!zones.is_empty(), "seed needs at least one zone");
        ensure!(
            zones.len() <= MAX_ZONES,
            "seed lays out at most {MAX_ZONES} zones"
        );
        ensure!(
            zones.iter().collect::<BTreeSet<_>>().len() == zones.len(),
            "duplicate zone in {zones:?}"
        );
        let ec2 = self.ec2().await;
        let owned = (cluster_tag_key(cluster), "owned".to_owned());
        let tags = |resource: ResourceType, name: String, extra: &[(&str, &str)]| {
            let mut spec = TagSpecification::builder()
                .resource_type(resource)
                .tags(tag("Name", &name))
                .tags(tag(&owned.0, &owned.1));
            for (key, value) in extra {
                spec = spec.tags(tag(key, value));
            }
            spec.build()
        };

        let vpc_id = call(
            "CreateVpc",
            ec2.create_vpc()
                .cidr_block(VPC_CIDR)
                .tag_specifications(tags(ResourceType::Vpc, format!("{cluster}-vpc"), &[]))
                .send()
                .await,
        )?
        .vpc
        .and_then(|vpc| vpc.vpc_id)
        .context("CreateVpc returned no VPC id")?;
        call(
            "ModifyVpcAttribute",
            ec2.modify_vpc_attribute()
                .vpc_id(&vpc_id)
                .enable_dns_hostnames(yes())
                .send()
                .await,
        )?;

        let internet_gateway = call(
            "CreateInternetGateway",
            ec2.create_internet_gateway()
                .tag_specifications(tags(
                    ResourceType::InternetGateway,
                    format!("{cluster}-igw"),
                    &[],
                ))
                .send()
                .await,
        )?
        .internet_gateway
        .and_then(|igw| igw.internet_gateway_id)
        .context("CreateInternetGateway returned no id")?;
        call(
            "AttachInternetGateway",
            ec2.attach_internet_gateway()
                .internet_gateway_id(&internet_gateway)
                .vpc_id(&vpc_id)
                .send()
                .await,
        )?;

        let public_table = create_route_table(
            &ec2,
            &vpc_id,
            tags(ResourceType::RouteTable, format!("{cluster}-public"), &[]),
        )
        .await?;
        call(
            "CreateRoute",
            ec2.create_route()
                .route_table_id(&public_table)
                .destination_cidr_block("0.0.0.0/0")
                .gateway_id(&internet_gateway)
                .send()
                .await,
        )?;

        let mut public_subnets = BTreeMap::new();
        let mut private_subnets = BTreeMap::new();
        for (i, zone) in zones.iter().enumerate() {
            let public = create_subnet(
                &ec2,
                &vpc_id,
                zone,
                &format!("10.0.{}.0/20", 16 * i),
                tags(
                    ResourceType::Subnet,
                    format!("{cluster}-public-{zone}"),
                    &[("kubernetes.io/role/elb", "1")],
                ),
            )
            .await?;
            call(
                "ModifySubnetAttribute",
                ec2.modify_subnet_attribute()
                    .subnet_id(&public)
                    .map_public_ip_on_launch(yes())
                    .send()
                    .await,
            )?;
            associate(&ec2, &public_table, &public).await?;
            public_subnets.insert((*zone).to_owned(), public);

            let private = create_subnet(
                &ec2,
                &vpc_id,
                zone,
                &format!("10.0.{}.0/20", 128 + 16 * i),
                tags(
                    ResourceType::Subnet,
                    format!("{cluster}-private-{zone}"),
                    &[("kubernetes.io/role/internal-elb", "1")],
                ),
            )
            .await?;
            let private_table = create_route_table(
                &ec2,
                &vpc_id,
                tags(
                    ResourceType::RouteTable,
                    format!("{cluster}-private-{zone}"),
                    &[],
                ),
            )
            .await?;
            associate(&ec2, &private_table, &private).await?;
            private_subnets.insert((*zone).to_owned(), private);
        }

        let node_security_group = call(
            "CreateSecurityGroup",
            ec2.create_security_group()
                .group_name(format!("{cluster}-node"))
                .description(format!("nodes of cluster {cluster}"))
                .vpc_id(&vpc_id)
                .tag_specifications(tags(
                    ResourceType::SecurityGroup,
                    format!("{cluster}-node"),
                    &[],
                ))
                .send()
                .await,
        )?
        .group_id
        .context("CreateSecurityGroup returned no group id")?;

        Ok(Seed {
            cluster: cluster.to_owned(),
            vpc_id,
            public_subnets,
            private_subnets,
            internet_gateway,
            node_security_group,
        })
    }

    /// Runs one node instance in `zone`'s private subnet with the node security group and
    /// waits until it is `running`.
    pub async fn run_instance(&self, seed: &Seed, zone: &str) -> Result<Instance> {
        let subnet = seed
            .private_subnets
            .get(zone)
            .with_context(|| format!("zone {zone} was not seeded"))?;
        let ec2 = self.ec2().await;
        let tags = TagSpecification::builder()
            .resource_type(ResourceType::Instance)
            .tags(tag("Name", &format!("{}-node-{zone}", seed.cluster)))
            .tags(tag(&cluster_tag_key(&seed.cluster), "owned"))
            .build();
        let reservation = call(
            "RunInstances",
            ec2.run_instances()
                .image_id(NODE_AMI)
                .instance_type(InstanceType::from(NODE_INSTANCE_TYPE))
                .min_count(1)
                .max_count(1)
                .subnet_id(subnet)
                .security_group_ids(&seed.node_security_group)
                .tag_specifications(tags)
                .send()
                .await,
        )?;
        let id = reservation
            .instances()
            .first()
            .and_then(|instance| instance.instance_id())
            .context("RunInstances returned no instance")?
            .to_owned();
        let instance = self
            .wait_instance_state(&ec2, &id, InstanceStateName::Running)
            .await?;
        let zone_seen = instance
            .placement()
            .and_then(|p| p.availability_zone())
            .with_context(|| format!("{id} has no availability zone"))?;
        ensure!(zone_seen == zone, "{id} runs in {zone_seen}, not {zone}");
        let private_ip = instance
            .private_ip_address()
            .with_context(|| format!("{id} has no private IP"))?
            .parse()
            .with_context(|| format!("the private IP of {id}"))?;
        let private_dns_name = instance
            .private_dns_name()
            .filter(|name| !name.is_empty())
            .with_context(|| format!("{id} has no private DNS name"))?
            .to_owned();
        Ok(Instance {
            provider_id: format!("aws:///{zone}/{id}"),
            private_dns_name,
            id,
            zone: zone.to_owned(),
            private_ip,
        })
    }

    /// Runs an instance in `zone` and creates a Ready Node `name` for it, as a
    /// kubelet on AWS would register it: its private IP, its providerID and
    /// its zone label.
    pub async fn run_node(
        &self,
        client: &kube::Client,
        seed: &Seed,
        name: &str,
        zone: &str,
    ) -> Result<Instance> {
        let instance = self.run_instance(seed, zone).await?;
        crate::fixtures::create_node(
            client,
            name,
            &[instance.private_ip],
            Some(&instance.provider_id),
            &[("topology.kubernetes.io/zone", zone)],
            true,
        )
        .await?;
        Ok(instance)
    }

    /// Terminates an instance and waits until it is `terminated`.
    pub async fn terminate_instance(&self, id: &str) -> Result<()> {
        let ec2 = self.ec2().await;
        call(
            format_args!("TerminateInstances {id}"),
            ec2.terminate_instances().instance_ids(id).send().await,
        )?;
        self.wait_instance_state(&ec2, id, InstanceStateName::Terminated)
            .await?;
        Ok(())
    }

    async fn wait_instance_state(
        &self,
        ec2: &aws_sdk_ec2::Client,
        id: &str,
        want: InstanceStateName,
    ) -> Result<aws_sdk_ec2::types::Instance> {
        wait_for(&format!("{id} to be {want}"), STATE_TIMEOUT, || async {
            let out = call(
                format_args!("DescribeInstances {id}"),
                ec2.describe_instances().instance_ids(id).send().await,
            )?;
            let instance = out
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .find(|i| i.instance_id() == Some(id))
                .ok_or_else(|| anyhow!("DescribeInstances does not list {id}"))?;
            let state = instance.state().and_then(|s| s.name());
            Ok((state == Some(&want)).then(|| instance.clone()))
        })
        .await
    }
}

async fn create_subnet(
    ec2: &aws_sdk_ec2::Client,
    vpc_id: &str,
    zone: &str,
    cidr: &str,
    tags: TagSpecification,
) -> Result<String> {
    call(
        format_args!("CreateSubnet {cidr} in {zone}"),
        ec2.create_subnet()
            .vpc_id(vpc_id)
            .availability_zone(zone)
            .cidr_block(cidr)
            .tag_specifications(tags)
            .send()
            .await,
    )?
    .subnet
    .and_then(|subnet| subnet.subnet_id)
    .context("CreateSubnet returned no subnet id")
}

async fn create_route_table(
    ec2: &aws_sdk_ec2::Client,
    vpc_id: &str,
    tags: TagSpecification,
) -> Result<String> {
    call(
        "CreateRouteTable",
        ec2.create_route_table()
            .vpc_id(vpc_id)
            .tag_specifications(tags)
            .send()
            .await,
    )?
    .route_table
    .and_then(|table| table.route_table_id)
    .context("CreateRouteTable returned no id")
}

async fn associate(ec2: &aws_sdk_ec2::Client, table: &str, subnet: &str) -> Result<()> {
    call(
        format_args!("AssociateRouteTable {table} {subnet}"),
        ec2.associate_route_table()
            .route_table_id(table)
            .subnet_id(subnet)
            .send()
            .await,
    )?;
    Ok(())
}

fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}

fn yes() -> AttributeBooleanValue {
    AttributeBooleanValue::builder().value(true).build()
}

/// An SDK result with the whole error chain in the message (the SDK's own `Display` says
/// only "service error").
fn call<T, E>(what: impl fmt::Display, result: Result<T, E>) -> Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    result.map_err(|err| anyhow!("{what}: {}", DisplayErrorContext(&err)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_tag() {
        assert_eq!(cluster_tag_key("c1"), "kubernetes.io/cluster/c1");
    }
}
