# Egress for Cloud Run and Dataflow: a VPC with a Serverless VPC Access connector, and Cloud NAT
# with reserved addresses, so third parties (SMS gateway, billing API, client webhooks) can
# allow-list a stable set of egress IPs.

locals {
  prefix = var.prefix == null || var.prefix == "" ? "" : "${var.prefix}-"
}

resource "google_compute_network" "default" {
  project                 = var.project_id
  name                    = "${local.prefix}vpc"
  auto_create_subnetworks = false
}

resource "google_compute_subnetwork" "default" {
  project                  = var.project_id
  region                   = var.region
  name                     = "${local.prefix}${var.region}"
  network                  = google_compute_network.default.id
  ip_cidr_range            = var.ip_ranges.subnet
  private_ip_google_access = true
}

resource "google_vpc_access_connector" "default" {
  project       = var.project_id
  region        = var.region
  name          = "${local.prefix}egress"
  network       = google_compute_network.default.name
  ip_cidr_range = var.ip_ranges.connector
  min_instances = var.connector.min_instances
  max_instances = var.connector.max_instances
  machine_type  = var.connector.machine_type
}

resource "google_compute_router" "default" {
  project = var.project_id
  region  = var.region
  name    = "${local.prefix}nat-router"
  network = google_compute_network.default.id
}

resource "google_compute_address" "nat" {
  count   = var.nat_addresses
  project = var.project_id
  region  = var.region
  name    = "${local.prefix}nat-${count.index}"
}

resource "google_compute_router_nat" "default" {
  project                            = var.project_id
  region                             = var.region
  name                               = "${local.prefix}nat"
  router                             = google_compute_router.default.name
  nat_ip_allocate_option             = "MANUAL_ONLY"
  nat_ips                            = google_compute_address.nat[*].self_link
  source_subnetwork_ip_ranges_to_nat = "ALL_SUBNETWORKS_ALL_IP_RANGES"

  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}

# Dataflow workers talk to each other on 12345-12346.
resource "google_compute_firewall" "dataflow" {
  project     = var.project_id
  name        = "${local.prefix}dataflow-internal"
  network     = google_compute_network.default.name
  direction   = "INGRESS"
  source_tags = ["dataflow"]
  target_tags = ["dataflow"]

  allow {
    protocol = "tcp"
    ports    = ["12345-12346"]
  }
}
