# The whole Meridian platform for one environment, driven by the event catalog. The environment
# roots (environments/dev, environments/prod) call this module with their own values only, so dev
# and prod cannot drift apart in shape.

locals {
  # Paths are relative to this module so a checkout deploys the catalog and workflow it contains.
  catalog_path = "${path.module}/../../../schemas/catalog.yaml"
  catalog      = yamldecode(file(local.catalog_path))
  prefix       = "${var.prefix}-"
  labels       = merge(var.labels, { platform = "meridian", environment = var.environment })

  image = coalesce(var.image, "${google_artifact_registry_repository.images.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}/meridian:${var.image_tag}")

  apis = [
    "accesscontextmanager.googleapis.com",
    "artifactregistry.googleapis.com",
    "bigquery.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudscheduler.googleapis.com",
    "compute.googleapis.com",
    "dataflow.googleapis.com",
    "eventarc.googleapis.com",
    "firestore.googleapis.com",
    "identitytoolkit.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "vpcaccess.googleapis.com",
    "workflows.googleapis.com",
  ]
}

resource "google_project_service" "default" {
  for_each           = toset(local.apis)
  project            = var.project_id
  service            = each.key
  disable_on_destroy = false
}

resource "google_artifact_registry_repository" "images" {
  project       = var.project_id
  location      = var.region
  repository_id = "${local.prefix}images"
  format        = "DOCKER"
  description   = "Meridian service image and the geofence Flex Template image."
  labels        = local.labels
  depends_on    = [google_project_service.default]
}

module "network" {
  source        = "../network"
  project_id    = var.project_id
  prefix        = var.prefix
  region        = var.region
  ip_ranges     = var.network.ip_ranges
  nat_addresses = var.network.nat_addresses
  depends_on    = [google_project_service.default]
}

module "firestore" {
  source     = "../firestore"
  project_id = var.project_id
  database   = var.firestore
  indexes    = local.firestore_indexes
  # Ledgers that only guard against redelivery: kept long enough to outlive every retry window
  # (Pub/Sub retention 7 days, Eventarc 24 h), then deleted by Firestore.
  ttl_collections = {
    idempotency_keys = "expire_at"
    processed_events = "expire_at"
    saga_steps       = "expire_at"
  }
  depends_on = [google_project_service.default]
}

module "pubsub" {
  source                     = "../pubsub"
  project_id                 = var.project_id
  prefix                     = var.prefix
  labels                     = local.labels
  catalog_path               = local.catalog_path
  bigquery                   = var.bigquery
  push_service_account_email = google_service_account.push.email
  push_endpoints             = { for name in local.push_targets : name => local.service_uris[name] }
  publishers = merge(
    { for name, m in module.reactor : name => m.service_account.member },
    { for name, m in module.service : name => m.service_account.member },
    { (var.geofence.name) = google_service_account.geofence.member },
  )
  pull_consumers = merge(
    { for name, m in module.service : name => m.service_account.member },
    { (var.geofence.name) = google_service_account.geofence.member },
    var.dead_letter_operator == null ? {} : { operator = var.dead_letter_operator },
  )
  depends_on = [google_project_service.default]
}

module "eventarc" {
  source                = "../eventarc"
  project_id            = var.project_id
  prefix                = var.prefix
  labels                = local.labels
  database              = module.firestore.database.name
  location              = var.firestore.location
  region                = var.region
  service_account_email = google_service_account.eventarc.email
  services              = { for name, m in module.service : name => m.name }
  triggers              = local.catalog.triggers
  depends_on            = [google_project_iam_member.eventarc]
}

module "dispatch_workflow" {
  source                = "../workflows"
  project_id            = var.project_id
  prefix                = var.prefix
  region                = var.region
  labels                = local.labels
  service_account_email = google_service_account.workflow.email
  source_path           = "${path.module}/../../../workflows/dispatch.yaml"
  env = {
    DISPATCH_URL = local.service_uris["dispatch"]
  }
}

module "geofence" {
  source          = "../dataflow"
  project_id      = var.project_id
  prefix          = var.prefix
  region          = var.region
  labels          = local.labels
  name            = var.geofence.name
  service_account = { email = google_service_account.geofence.email, member = google_service_account.geofence.member }
  subnetwork      = module.network.self_links.subnetwork
  job = {
    enabled          = var.geofence.enabled
    machine_type     = var.geofence.machine_type
    max_workers      = var.geofence.max_workers
    template_version = var.geofence.template_version
    # The Flex Template image is also the workers' SDK container (pipelines/geofence/Dockerfile).
    sdk_container_image = "${google_artifact_registry_repository.images.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}/geofence:${var.geofence.template_version}"
  }
  parameters = merge(var.geofence.parameters, local.geofence_parameters)
}

module "monitoring" {
  source              = "../monitoring"
  project_id          = var.project_id
  prefix              = var.prefix
  labels              = local.labels
  notification_emails = var.alerts.emails
  subscriptions = {
    for name, s in local.catalog.subscriptions : name => {
      dead_letters_in         = try(module.pubsub.subscription_names[local.dead_letter_keepers[s.dead_letter_topic]], null)
      dead_letters_to         = try(s.dead_letter_topic, null)
      holds_dead_letters      = contains(local.dead_letter_topics, s.topic)
      max_unacked_age_seconds = lookup(var.alerts.max_unacked_age_seconds, name, 600)
      subscription_id         = module.pubsub.subscription_names[name]
    }
  }
  latency_slos = {
    command = { p99_ms = var.alerts.command_p99_ms, service_name = module.service["command"].name }
  }
}

locals {
  # The geofence job's launch parameters: the pipeline's own options
  # (pipelines/geofence/pipeline.py GeofenceOptions, declared in flex_template/metadata.json).
  # Topics go by their catalog names, which the gcp publisher addresses in the project; the gcp
  # backend, not the embedded archive.
  geofence_parameters = {
    backend           = "gcp"
    dead_letter_topic = local.catalog.subscriptions["geofence"].dead_letter_topic
    output_topic      = "logistics.events"
    streaming         = "true" # the job reads the subscription as an unbounded stream
    subscription      = module.pubsub.subscriptions["geofence"]
  }

  dead_letter_topics = toset(compact([for s in values(local.catalog.subscriptions) : try(s.dead_letter_topic, null)]))
  # Dead-letter topic => the one subscription keeping its messages (the catalog's rule: every
  # subscription dead-letters to a topic of its own; a second keeper would be a duplicate key here).
  dead_letter_keepers = { for name, s in local.catalog.subscriptions : s.topic => name if contains(local.dead_letter_topics, s.topic) }

  # Composite indexes for the queries the services run (meridian.ports.Query: equality filters
  # then one order). Single-field queries need none.
  firestore_indexes = merge({
    parcels_by_shipment_status = {
      collection = "parcels"
      fields     = [{ field_path = "shipment_id" }, { field_path = "status" }]
    }
    parcels_to_plan = {
      collection = "parcels"
      fields     = [{ field_path = "status" }, { field_path = "window_end" }]
    }
    parcels_by_route_stop = {
      collection = "parcels"
      fields     = [{ field_path = "route_id" }, { field_path = "stop_sequence" }]
    }
    route_board_by_window = {
      collection = "route_board"
      fields     = [{ field_path = "window_id" }, { field_path = "updated_at", order = "DESCENDING" }]
    }
    assignments_by_window_status = {
      collection = "assignments"
      fields     = [{ field_path = "window_id" }, { field_path = "status" }]
    }
  }, var.firestore_indexes)
}
