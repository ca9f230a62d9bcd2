# The edge: one global external HTTPS load balancer in front of the public services (the catalog's
# ingress: public, i.e. the command API and the live map), behind Cloud Armor. Everything else is
# reachable from inside only (ingress internal).

module "edge" {
  source     = "../edge"
  project_id = var.project_id
  prefix     = var.prefix
  region     = var.region
  domain     = var.edge.domain
  rate_limit = var.edge.rate_limit
  # The command API takes every path the live map does not serve.
  default_backend = "command"
  backends = {
    for name in keys(local.public_services) : name => {
      service = module.service[name].name
      paths   = lookup(local.edge_paths, name, [])
    }
  }
}

locals {
  # The live map's routes (services/live_map/app.py): its pages, assets and tracking streams.
  edge_paths = {
    live-map = ["/map", "/dispatch", "/static/*", "/assets/*", "/v1/track/*", "/v1/fleet/*"]
  }
}
