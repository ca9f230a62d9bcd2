# One Cloud Run service per catalog service (pipelines run on Dataflow). Reactors get their own
# module call so their exposure is fixed here, not computed: internal ingress, and run.invoker for
# the Pub/Sub push identity alone.

locals {
  run_services   = { for name, s in local.catalog.services : name => s if s.kind != "pipeline" }
  reactors       = { for name, s in local.run_services : name => s if s.kind == "push-reactor" }
  front_services = { for name, s in local.run_services : name => s if s.kind != "push-reactor" }

  push_targets = toset([for s in values(local.catalog.subscriptions) : s.delivery.service if s.delivery.type == "push"])
  service_uris = merge(
    { for name, m in module.reactor : name => m.uri },
    { for name, m in module.service : name => m.uri },
  )

  # Who may call each non-reactor service: Eventarc calls the event publisher, the dispatch saga
  # calls dispatch, push subscriptions their targets; public services add what the environment
  # lists (the API gateway's identity), never allUsers.
  front_invokers = {
    for name, s in local.front_services : name => merge(
      s.kind == "eventarc-target" ? { eventarc = google_service_account.eventarc.member } : {},
      name == "dispatch" ? { dispatch-workflow = google_service_account.workflow.member } : {},
      contains(local.push_targets, name) ? { pubsub-push = google_service_account.push.member } : {},
      try(var.services[name].invokers, {}),
    )
  }

  # Every service writes logs, traces and metrics; the rest is per service and minimal.
  base_roles = ["roles/cloudtrace.agent", "roles/logging.logWriter", "roles/monitoring.metricWriter"]
  extra_roles = {
    billing         = ["roles/datastore.user"]
    client-webhook  = ["roles/datastore.user"]
    command         = ["roles/datastore.user", "roles/workflows.invoker"] # starts sagas, sends acceptance callbacks
    dispatch        = ["roles/datastore.user"]
    driver-scoring  = ["roles/datastore.user"]
    eta             = ["roles/datastore.user"]
    event-publisher = ["roles/datastore.viewer"]
    live-map        = ["roles/datastore.user"]
    live-map-writer = ["roles/datastore.user"]
    notification    = ["roles/datastore.user"]
    pod             = ["roles/datastore.user"]
  }

  # Third-party credentials, read from Secret Manager by the one service that uses each.
  service_secrets = {
    billing        = { BILLING_API_KEY = "billing-api-key" }
    client-webhook = { WEBHOOK_SIGNING_KEY = "webhook-signing-key" }
    notification   = { SMS_GATEWAY_TOKEN = "sms-gateway-token" }
  }
  secret_ids = toset(flatten([for s in values(local.service_secrets) : values(s)]))

  service_env = {
    for name, s in local.run_services : name => merge({
      GOOGLE_CLOUD_PROJECT        = var.project_id
      MERIDIAN_BACKEND            = "gcp"
      MERIDIAN_FIRESTORE_DATABASE = var.firestore.name
      MERIDIAN_PUSH_IDENTITY      = google_service_account.push.email
      MERIDIAN_SERVICE            = name
    }, try(s.env, {}), name == "command" ? { MERIDIAN_DISPATCH_WORKFLOW = "projects/${var.project_id}/locations/${var.region}/workflows/${local.prefix}dispatch" } : {})
  }
}

# Secret containers only: versions (the values) are added out of band with gcloud.
resource "google_secret_manager_secret" "default" {
  for_each  = local.secret_ids
  project   = var.project_id
  secret_id = "${local.prefix}${each.key}"
  labels    = local.labels

  replication {
    auto {}
  }

  depends_on = [google_project_service.default]
}

module "reactor" {
  source        = "../cloud-run-service"
  for_each      = local.reactors
  project_id    = var.project_id
  prefix        = var.prefix
  region        = var.region
  name          = each.key
  labels        = local.labels
  image         = local.image
  command       = ["python", "-m", "${each.value.package}.app"]
  env           = local.service_env[each.key]
  ingress       = "INGRESS_TRAFFIC_INTERNAL_ONLY"
  invokers      = { pubsub-push = google_service_account.push.member }
  project_roles = concat(local.base_roles, lookup(local.extra_roles, each.key, []))
  scaling = {
    max_instances = try(var.services[each.key].max_instances, 20)
    min_instances = try(each.value.min_instances, 0)
  }
  resources = try(var.services[each.key].resources, {})
  secrets = {
    for env_name, secret in lookup(local.service_secrets, each.key, {}) : env_name => {
      secret = google_secret_manager_secret.default[secret].secret_id
    }
  }
  vpc_access = {
    connector = module.network.ids.connector
    # Reactors holding a third-party credential call out to the internet: all their egress goes
    # through the connector and Cloud NAT's fixed addresses.
    egress = contains(keys(local.service_secrets), each.key) ? "ALL_TRAFFIC" : "PRIVATE_RANGES_ONLY"
  }
  deletion_protection = var.deletion_protection
  depends_on          = [google_project_service.default]
}

module "service" {
  source        = "../cloud-run-service"
  for_each      = local.front_services
  project_id    = var.project_id
  prefix        = var.prefix
  region        = var.region
  name          = each.key
  labels        = local.labels
  image         = local.image
  command       = ["python", "-m", "${each.value.package}.app"]
  env           = local.service_env[each.key]
  ingress       = try(each.value.ingress, "internal") == "public" ? "INGRESS_TRAFFIC_ALL" : "INGRESS_TRAFFIC_INTERNAL_ONLY"
  invokers      = local.front_invokers[each.key]
  project_roles = concat(local.base_roles, lookup(local.extra_roles, each.key, []))
  scaling = {
    # A worker keeps state per instance (the live-map writer's debounce), so it runs exactly its
    # min_instances unless the environment says otherwise.
    max_instances = try(var.services[each.key].max_instances, each.value.kind == "worker" ? each.value.min_instances : 20)
    min_instances = try(each.value.min_instances, 0)
  }
  resources = {
    cpu    = try(var.services[each.key].resources.cpu, "1")
    memory = try(var.services[each.key].resources.memory, "512Mi")
    # A worker (an always-on pull consumer) answers no requests: its CPU stays allocated.
    cpu_idle = each.value.kind == "worker" ? false : try(var.services[each.key].resources.cpu_idle, true)
  }
  secrets = {
    for env_name, secret in lookup(local.service_secrets, each.key, {}) : env_name => {
      secret = google_secret_manager_secret.default[secret].secret_id
    }
  }
  vpc_access = {
    connector = module.network.ids.connector
    egress    = contains(keys(local.service_secrets), each.key) ? "ALL_TRAFFIC" : "PRIVATE_RANGES_ONLY"
  }
  deletion_protection = var.deletion_protection
  depends_on          = [google_project_service.default]
}
