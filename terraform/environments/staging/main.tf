# Staging: the release rehearses here between dev and prod (.github/workflows/release.yml); the
# same shape as production, scaled down — single-region Firestore without
# deletion protection, short telemetry retention, one NAT address.

module "meridian" {
  source               = "../../modules/meridian"
  environment          = "staging"
  project_id           = var.project_id
  prefix               = var.prefix
  region               = var.region
  image_tag            = var.image_tag
  deployer             = var.deployer
  dead_letter_operator = var.dead_letter_operator
  vpc_sc               = var.vpc_sc
  deletion_protection  = false

  firestore = {
    location               = var.region
    delete_protection      = false
    point_in_time_recovery = false
  }

  bigquery = {
    location                  = "US"
    partition_expiration_days = 14
    deletion_protection       = false
  }

  edge = {
    domain = var.edge_domain
  }

  providers = {
    billing_url = var.billing_url
    sms_url     = var.sms_url
  }

  network = {
    ip_ranges = { connector = "10.8.0.0/28", subnet = "10.10.0.0/24" }
  }

  geofence = {
    enabled          = var.geofence_enabled
    template_version = var.geofence_template_version
    max_workers      = 2
    machine_type     = "n2-standard-2"
  }

  alerts = {
    emails         = var.alert_emails
    command_p99_ms = 250
  }
}
