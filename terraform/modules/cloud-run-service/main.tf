# One Cloud Run (v2) service with its own service account: the account gets only the roles and
# secrets listed for it, and only the members listed may invoke it. With var.managed_prometheus
# (the default), Google Cloud Managed Service for Prometheus' collector runs beside the app as a
# sidecar: its default RunMonitoring configuration scrapes the app's :8080/metrics
# (meridian/metrics.py) and writes the series to Cloud Monitoring with the service's own identity.

locals {
  prefix = var.prefix == null || var.prefix == "" ? "" : "${var.prefix}-"

  # The app listens on $PORT, which Cloud Run sets to the ingress container's port; the sidecar's
  # default configuration scrapes this very port, so it needs no configuration of its own.
  app_container = "app"
  app_port      = 8080

  # The sidecar writes with the service's identity: roles/monitoring.metricWriter goes with it
  # (once, even when the caller lists it too).
  project_roles = toset(concat(
    var.project_roles,
    var.managed_prometheus ? ["roles/monitoring.metricWriter"] : [],
  ))
}

resource "google_service_account" "service" {
  project      = var.project_id
  account_id   = "${local.prefix}${var.name}"
  display_name = "Meridian ${var.name} (Cloud Run)"
}

resource "google_project_iam_member" "service" {
  for_each = local.project_roles
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

    # The ingress container: the only one with a port.
    containers {
      name    = local.app_container
      image   = var.image
      command = var.command
      args    = var.args

      ports {
        container_port = local.app_port
      }

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

    # Managed Service for Prometheus' collector (docs/operations.md, 'Metrics in Cloud
    # Monitoring'): no port, so it takes no requests; it starts once the app has passed its
    # start-up probe (Cloud Run's default TCP probe on the app's port), so its first scrape finds
    # /metrics answering, and it scrapes once more at shutdown.
    dynamic "containers" {
      for_each = var.managed_prometheus ? [var.managed_prometheus_image] : []
      content {
        name       = "collector"
        image      = containers.value
        depends_on = [local.app_container]
      }
    }
  }

  depends_on = [google_secret_manager_secret_iam_member.service]

  # After the first apply, the release (meridian release apply: a revision with no traffic, a
  # 5% canary, then promotion or rollback) owns which image runs and how traffic is split; an
  # infrastructure apply must not move a service onto a new image behind the canary's back.
  lifecycle {
    ignore_changes = [template[0].containers[0].image, traffic]
  }
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
