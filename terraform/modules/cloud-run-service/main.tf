# One Cloud Run (v2) service with its own service account: the account gets only the roles and
# secrets listed for it, and only the members listed may invoke it.

locals {
  prefix = var.prefix == null || var.prefix == "" ? "" : "${var.prefix}-"
}

resource "google_service_account" "service" {
  project      = var.project_id
  account_id   = "${local.prefix}${var.name}"
  display_name = "Meridian ${var.name} (Cloud Run)"
}

resource "google_project_iam_member" "service" {
  for_each = toset(var.project_roles)
  project  = var.project_id
  role     = each.key
  member   = google_service_account.service.member
}

# Secrets are read from Secret Manager at start-up by the service's own identity; their values
# never appear in Terraform (versions are added with gcloud, see README).
resource "google_secret_manager_secret_iam_member" "service" {
  for_each  = toset([for s in values(var.secrets) : s.secret])
  project   = var.project_id
  secret_id = each.key
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.service.member
}

resource "google_cloud_run_v2_service" "service" {
  project             = var.project_id
  location            = var.region
  name                = "${local.prefix}${var.name}"
  ingress             = var.ingress
  labels              = merge(var.labels, { service = var.name })
  deletion_protection = var.deletion_protection
  # Only behind the load balancer (ingress internal and load balancing), for a service that
  # authenticates its callers itself; never with allUsers (var.invokers refuses it).
  invoker_iam_disabled = var.invoker_iam_disabled

  template {
    service_account = google_service_account.service.email
    labels          = merge(var.labels, { service = var.name })

    scaling {
      min_instance_count = var.scaling.min_instances
      max_instance_count = var.scaling.max_instances
    }

    dynamic "vpc_access" {
      for_each = var.vpc_access == null ? [] : [var.vpc_access]
      content {
        connector = vpc_access.value.connector
        egress    = vpc_access.value.egress
      }
    }

    containers {
      image   = var.image
      command = var.command
      args    = var.args

      resources {
        limits   = { cpu = var.resources.cpu, memory = var.resources.memory }
        cpu_idle = var.resources.cpu_idle
      }

      dynamic "env" {
        for_each = var.env
        content {
          name  = env.key
          value = env.value
        }
      }

      dynamic "env" {
        for_each = var.secrets
        content {
          name = env.key
          value_source {
            secret_key_ref {
              secret  = env.value.secret
              version = env.value.version
            }
          }
        }
      }
    }
  }

  depends_on = [google_secret_manager_secret_iam_member.service]
}

# The only run.invoker grant on this service: exactly the members the caller lists (for a reactor,
# the Pub/Sub push identity; for the event publisher, the Eventarc identity).
# Keyed by a static label, so the plan does not need the (computed) member emails.
resource "google_cloud_run_v2_service_iam_member" "invoker" {
  for_each = var.invokers
  project  = var.project_id
  location = google_cloud_run_v2_service.service.location
  name     = google_cloud_run_v2_service.service.name
  role     = "roles/run.invoker"
  member   = each.value
}
