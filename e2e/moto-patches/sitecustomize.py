"""Fills gaps of moto's that the e2e tests would otherwise trip over.

The harness puts this directory on moto_server's PYTHONPATH, so Python imports
it at start-up. It changes nothing in ferrolb: it makes the stand-in behave
more like the real service.

moto ignores the AllocationId and PrivateIPv4Address of CreateLoadBalancer's
SubnetMappings, so its load balancers report no LoadBalancerAddresses. Real
NLBs list, per zone, the Elastic IP (with its allocation) or the private
address they were given. This keeps those and reports them the same way.

AWS documents CreateLoadBalancer and CreateListener as idempotent: a second
call with the same name (the same port) and the same settings succeeds and
returns the resource the first made; other settings get
DuplicateLoadBalancerName (DuplicateListener). moto makes a second load
balancer of the same name, and a second listener on the same port. That
matters when a call is retried after its answer was lost (the SDK retries a
timeout or a dropped connection by itself), which the fault tests do on
purpose; here a repeat returns the existing one, as AWS would. CreateTargetGroup
is left as moto has it: it answers a repeat with DuplicateTargetGroupName,
which AWS also gives (when the settings differ), and the product handles.
"""

try:
    from moto.ec2.models import ec2_backends
    from moto.elbv2 import models as _elbv2
    from moto.elbv2.exceptions import DuplicateListenerError, DuplicateLoadBalancerName
except ImportError:  # not moto's interpreter: nothing to patch
    _elbv2 = None

if _elbv2 is not None:
    _create = _elbv2.ELBv2Backend.create_load_balancer
    _zones = _elbv2.FakeLoadBalancer.availability_zones.fget

    def _address(backend, mapping):
        entry = {}
        allocation = mapping.get("AllocationId")
        if allocation:
            ec2 = ec2_backends[backend.account_id][backend.region_name]
            eip = ec2.describe_addresses(allocation_ids=[allocation])[0]
            entry.update(IpAddress=eip.public_ip, AllocationId=allocation)
        private = mapping.get("PrivateIPv4Address")
        if private:
            entry["PrivateIPv4Address"] = private
        return entry

    def create_load_balancer(self, *args, **kwargs):
        name = kwargs.get("name")
        for existing in list(self.load_balancers.values()):
            if existing.name == name:
                if existing.scheme == kwargs.get("scheme", "internet-facing"):
                    return existing
                raise DuplicateLoadBalancerName()
        lb = _create(self, *args, **kwargs)
        addresses = {}
        for mapping in kwargs.get("subnet_mappings") or []:
            entry = _address(self, mapping)
            if entry:
                addresses[mapping["SubnetId"]] = [entry]
        lb.ferrolb_addresses = addresses
        return lb

    def availability_zones(self):
        zones = _zones(self)
        for zone in zones:
            zone.load_balancer_addresses = getattr(self, "ferrolb_addresses", {}).get(
                zone.subnet_id, []
            )
        return zones

    _create_listener = _elbv2.ELBv2Backend.create_listener

    def create_listener(self, *args, **kwargs):
        balancer = self.load_balancers.get(kwargs.get("load_balancer_arn"))
        if balancer is not None:
            port = str(kwargs.get("port"))
            protocol = (kwargs.get("protocol") or "").upper()
            for listener in list(balancer.listeners.values()):
                if str(listener.port) == port:
                    if listener.protocol == protocol:
                        return listener
                    raise DuplicateListenerError()
        return _create_listener(self, *args, **kwargs)

    _elbv2.ELBv2Backend.create_load_balancer = create_load_balancer
    _elbv2.ELBv2Backend.create_listener = create_listener
    _elbv2.FakeLoadBalancer.availability_zones = property(availability_zones)
