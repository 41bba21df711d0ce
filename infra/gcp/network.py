"""The VPC: one path to the internet, and it belongs to the egress proxy.

At the VPC layer only the egress pool's pods reach the internet:
- the default internet route is not created; the only internet route is tagged to egress nodes;
- Cloud NAT translates only the egress pool's own pod range, never nodes or other pods;
- egress firewall is deny-by-default, with explicit allows for Private Google Access, in-VPC
  ranges and HTTPS from egress nodes;
- Google APIs resolve to private.googleapis.com through private DNS zones, so every other
  workload reaches Google (Secret Manager, Cloud SQL, Vertex AI) without the internet.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_gcp import compute, dns, servicenetworking

from infra.config import NetworkConfig
from infra.naming import PRIVATE_GOOGLE_APIS_CIDR, node_tag
PRIVATE_GOOGLE_APIS_IPS = ["199.36.153.8", "199.36.153.9", "199.36.153.10", "199.36.153.11"]
# Domains served through private.googleapis.com (APIs and image registries).
PRIVATE_GOOGLE_DOMAINS = ("googleapis.com.", "pkg.dev.", "gcr.io.")

PODS_RANGE = "pods"
EGRESS_PODS_RANGE = "egress-pods"
SERVICES_RANGE = "services"
EGRESS_NODE_TAG = node_tag("egress")


@dataclass(frozen=True)
class NetworkArgs:
    project: str
    region: str
    cidrs: NetworkConfig


class Network(pulumi.ComponentResource):
    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("perfloop:gcp:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cidrs = args.cidrs
        project = args.project

        self.vpc = compute.Network(
            "vpc",
            project=project,
            name=f"{name}-vpc",
            auto_create_subnetworks=False,
            routing_mode="REGIONAL",
            # No 0.0.0.0/0 route for everyone; see egress_internet_route.
            delete_default_routes_on_create=True,
            opts=child,
        )
        self.subnet = compute.Subnetwork(
            "subnet",
            project=project,
            name=f"{name}-{args.region}",
            region=args.region,
            network=self.vpc.id,
            ip_cidr_range=cidrs.nodes_cidr,
            secondary_ip_ranges=[
                compute.SubnetworkSecondaryIpRangeArgs(range_name=PODS_RANGE, ip_cidr_range=cidrs.pods_cidr),
                compute.SubnetworkSecondaryIpRangeArgs(range_name=EGRESS_PODS_RANGE, ip_cidr_range=cidrs.egress_pods_cidr),
                compute.SubnetworkSecondaryIpRangeArgs(range_name=SERVICES_RANGE, ip_cidr_range=cidrs.services_cidr),
            ],
            private_ip_google_access=True,
            log_config=compute.SubnetworkLogConfigArgs(
                aggregation_interval="INTERVAL_5_SEC", flow_sampling=0.5, metadata="INCLUDE_ALL_METADATA"
            ),
            opts=child,
        )

        self.google_apis_route = compute.Route(
            "private-google-apis",
            project=project,
            name=f"{name}-private-google-apis",
            network=self.vpc.id,
            dest_range=PRIVATE_GOOGLE_APIS_CIDR,
            next_hop_gateway="default-internet-gateway",
            priority=1000,
            opts=child,
        )
        self.egress_internet_route = compute.Route(
            "egress-internet",
            project=project,
            name=f"{name}-egress-internet",
            network=self.vpc.id,
            dest_range="0.0.0.0/0",
            next_hop_gateway="default-internet-gateway",
            tags=[EGRESS_NODE_TAG],
            priority=1000,
            opts=child,
        )

        self.router = compute.Router(
            "router", project=project, name=f"{name}-router", region=args.region, network=self.vpc.id, opts=child
        )
        self.nat = compute.RouterNat(
            "nat",
            project=project,
            name=f"{name}-egress-nat",
            region=args.region,
            router=self.router.name,
            nat_ip_allocate_option="AUTO_ONLY",
            source_subnetwork_ip_ranges_to_nat="LIST_OF_SUBNETWORKS",
            subnetworks=[
                compute.RouterNatSubnetworkArgs(
                    name=self.subnet.id,
                    source_ip_ranges_to_nats=["LIST_OF_SECONDARY_IP_RANGES"],
                    secondary_ip_range_names=[EGRESS_PODS_RANGE],
                )
            ],
            log_config=compute.RouterNatLogConfigArgs(enable=True, filter="ALL"),
            opts=child,
        )

        self.private_services_range = compute.GlobalAddress(
            "private-services-range",
            project=project,
            name=f"{name}-private-services",
            purpose="VPC_PEERING",
            address_type="INTERNAL",
            address=cidrs.private_services_cidr.split("/")[0],
            prefix_length=int(cidrs.private_services_cidr.split("/")[1]),
            network=self.vpc.id,
            opts=child,
        )
        self.private_services_connection = servicenetworking.Connection(
            "private-services-connection",
            network=self.vpc.id,
            service="servicenetworking.googleapis.com",
            reserved_peering_ranges=[self.private_services_range.name],
            opts=child,
        )

        self.firewalls = self._egress_firewall(name, project, cidrs, child)
        self.dns_zones = self._private_google_dns(name, project, child)

        self.register_outputs(
            {
                "network": self.vpc.id,
                "subnet": self.subnet.id,
                "private_services_range": self.private_services_range.name,
            }
        )

    def _egress_firewall(self, name: str, project: str, cidrs: NetworkConfig, child: pulumi.ResourceOptions):
        in_vpc = [
            cidrs.nodes_cidr,
            cidrs.pods_cidr,
            cidrs.egress_pods_cidr,
            cidrs.services_cidr,
            cidrs.control_plane_cidr,
            cidrs.private_services_cidr,
        ]
        log = compute.FirewallLogConfigArgs(metadata="INCLUDE_ALL_METADATA")

        def rule(suffix: str, priority: int, destinations: list[str], *, allow=None, deny=None, tags=None):
            return compute.Firewall(
                suffix,
                project=project,
                name=f"{name}-{suffix}",
                network=self.vpc.id,
                direction="EGRESS",
                priority=priority,
                destination_ranges=destinations,
                allows=allow,
                denies=deny,
                target_tags=tags,
                log_config=log,
                opts=child,
            )

        return [
            rule("deny-all-egress", 65534, ["0.0.0.0/0"], deny=[compute.FirewallDenyArgs(protocol="all")]),
            rule(
                "allow-egress-google-apis",
                1000,
                [PRIVATE_GOOGLE_APIS_CIDR],
                allow=[compute.FirewallAllowArgs(protocol="tcp", ports=["443"])],
            ),
            rule("allow-egress-in-vpc", 1000, in_vpc, allow=[compute.FirewallAllowArgs(protocol="all")]),
            rule(
                "allow-egress-internet-https",
                1000,
                ["0.0.0.0/0"],
                allow=[compute.FirewallAllowArgs(protocol="tcp", ports=["443"])],
                tags=[EGRESS_NODE_TAG],
            ),
        ]

    def _private_google_dns(self, name: str, project: str, child: pulumi.ResourceOptions):
        zones = []
        for domain in PRIVATE_GOOGLE_DOMAINS:
            slug = domain.rstrip(".").replace(".", "-")
            zone = dns.ManagedZone(
                f"zone-{slug}",
                project=project,
                name=f"{name}-{slug}",
                dns_name=domain,
                description=f"Routes {domain} to private.googleapis.com (Private Google Access).",
                visibility="private",
                private_visibility_config=dns.ManagedZonePrivateVisibilityConfigArgs(
                    networks=[dns.ManagedZonePrivateVisibilityConfigNetworkArgs(network_url=self.vpc.id)]
                ),
                opts=child,
            )
            zone_opts = pulumi.ResourceOptions(parent=self)
            if domain == "googleapis.com.":
                dns.RecordSet(
                    f"a-private-{slug}",
                    project=project,
                    managed_zone=zone.name,
                    name="private.googleapis.com.",
                    type="A",
                    ttl=300,
                    rrdatas=PRIVATE_GOOGLE_APIS_IPS,
                    opts=zone_opts,
                )
                wildcard_target = "private.googleapis.com."
            else:
                dns.RecordSet(
                    f"a-apex-{slug}",
                    project=project,
                    managed_zone=zone.name,
                    name=domain,
                    type="A",
                    ttl=300,
                    rrdatas=PRIVATE_GOOGLE_APIS_IPS,
                    opts=zone_opts,
                )
                wildcard_target = domain
            dns.RecordSet(
                f"cname-wildcard-{slug}",
                project=project,
                managed_zone=zone.name,
                name=f"*.{domain}",
                type="CNAME",
                ttl=300,
                rrdatas=[wildcard_target],
                opts=zone_opts,
            )
            zones.append(zone)
        return zones
