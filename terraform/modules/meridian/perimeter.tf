# The VPC Service Controls perimeter around the data: Firestore, BigQuery, Pub/Sub and Secret
# Manager can be reached only from inside the project (its services, jobs and triggers) and by the
# identities var.vpc_sc lets in (the deployer, operators). It needs an organisation's access
# policy, so it is off (null) unless the environment names one; dry_run first, to read the
# violations it would cause in the audit logs before enforcing it.

locals {
  vpc_sc_services = [
    "bigquery.googleapis.com",
    "firestore.googleapis.com",
    "pubsub.googleapis.com",
    "secretmanager.googleapis.com",
  ]
}

data "google_project" "this" {
  project_id = var.project_id
}

resource "google_access_context_manager_service_perimeter" "default" {
  count                     = var.vpc_sc == null ? 0 : 1
  parent                    = "accessPolicies/${var.vpc_sc.access_policy}"
  name                      = "accessPolicies/${var.vpc_sc.access_policy}/servicePerimeters/${replace(var.prefix, "-", "_")}_meridian"
  title                     = "${var.prefix}-meridian"
  perimeter_type            = "PERIMETER_TYPE_REGULAR"
  use_explicit_dry_run_spec = var.vpc_sc.dry_run

  dynamic "status" {
    for_each = var.vpc_sc.dry_run ? [] : [1]
    content {
      resources           = ["projects/${data.google_project.this.number}"]
      restricted_services = local.vpc_sc_services
      access_levels       = var.vpc_sc.access_levels

      dynamic "ingress_policies" {
        for_each = length(var.vpc_sc.ingress_identities) == 0 ? [] : [1]
        content {
          ingress_from {
            identities = var.vpc_sc.ingress_identities
            sources {
              access_level = "*"
            }
          }
          ingress_to {
            resources = ["*"]
            operations {
              service_name = "*"
            }
          }
        }
      }
    }
  }

  dynamic "spec" {
    for_each = var.vpc_sc.dry_run ? [1] : []
    content {
      resources           = ["projects/${data.google_project.this.number}"]
      restricted_services = local.vpc_sc_services
      access_levels       = var.vpc_sc.access_levels

      dynamic "ingress_policies" {
        for_each = length(var.vpc_sc.ingress_identities) == 0 ? [] : [1]
        content {
          ingress_from {
            identities = var.vpc_sc.ingress_identities
            sources {
              access_level = "*"
            }
          }
          ingress_to {
            resources = ["*"]
            operations {
              service_name = "*"
            }
          }
        }
      }
    }
  }
}
