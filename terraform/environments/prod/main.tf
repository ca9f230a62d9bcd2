# Production: multi-region Firestore (nam5: synchronous replication, RPO ≈ 0), protections on,
# a year of raw telemetry, two NAT addresses for third parties to allow-list.

module "meridian" {
  source               = "../../modules/meridian"
  environment          = "prod"
  project_id           = var.project_id
  prefix               = var.prefix
  region               = var.region
  image_tag            = var.image_tag
  deployer             = var.deployer
  dead_letter_operator = var.dead_letter_operator
  vpc_sc               = var.vpc_sc
  deletion_protection  = true

  firestore = {
    location               = "nam5"
    delete_protection      = true
    point_in_time_recovery = true
  }

  bigquery = {
    location                  = "US"
    partition_expiration_days = 365
    deletion_protection       = true
  }

  edge = {
    domain = var.edge_domain
  }

  providers = {
    billing_url = var.billing_url
    sms_url     = var.sms_url
  }

  network = {
    ip_ranges     = { connector = "10.8.0.0/28", subnet = "10.20.0.0/24" }
    nat_addresses = 2
  }

  geofence = {
    enabled          = var.geofence_enabled
    template_version = var.geofence_template_version
    max_workers      = 10
    machine_type     = "n2-standard-4"
  }

  services = {
    command = { max_instances = 200, resources = { cpu = "2", memory = "1Gi", cpu_idle = false } }
    eta     = { max_instances = 100, resources = { cpu = "1", memory = "1Gi", cpu_idle = false } }
  }

  alerts = {
    emails         = var.alert_emails
    command_p99_ms = 100
    max_unacked_age_seconds = {
      live-map = 30 # the map must move within seconds
      geofence = 120
    }
  }
}
