# One Cloud Run service per catalog service (pipelines run on Dataflow), each running the one image
# as `meridian serve <service>`. Reactors get their own module call so their exposure is fixed
# here, not computed: internal ingress, and run.invoker for the Pub/Sub push identity alone (plus,
# in scheduler.tf, Cloud Scheduler's on the ETA reactor). Public services (the catalog's ingress:
# public) are reached only through the load balancer (edge.tf).

locals {
  run_services   = { for name, s in local.catalog.services : name => s if s.kind != "pipeline" }
  reactors       = { for name, s in local.run_services : name => s if s.kind == "push-reactor" }
  front_services = { for name, s in local.run_services : name => s if s.kind != "push-reactor" }
  # Reached from the internet, through the load balancer (edge.tf).
  public_services = { for name, s in local.front_services : name => s if try(s.ingress, "internal") == "public" }

  push_targets = toset([for s in values(local.catalog.subscriptions) : s.delivery.service if s.delivery.type == "push"])
  service_uris = merge(
    { for name, m in module.reactor : name => m.uri },
    { for name, m in module.service : name => m.uri },
  )

  # Who may call each non-reactor service: Eventarc calls the event publisher, the dispatch saga
  # calls dispatch, push subscriptions their targets; services may add what the environment
  # lists, never allUsers (public ones skip the IAM check instead, behind the load balancer).
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
    legacy-writer   = ["roles/datastore.viewer"] # reads the documents of Meridian's new shipments
    live-map        = ["roles/datastore.user"]
    live-map-writer = ["roles/datastore.user"]
    notification    = ["roles/datastore.user"]
    pod             = ["roles/datastore.user"]
  }

  # Each service's environment: exactly what it reads on the gcp backend, as meridian/config.py's
  # GCP_SERVICE_ENV lists it (tests/policy/test_terraform_env_parity.py checks both ways). The
  # identities are the accounts created in identity.tf and scheduler.tf: the very ones that sign
  # the tokens each service accepts.
  common_env = {
    GOOGLE_CLOUD_PROJECT = var.project_id
    MERIDIAN_BACKEND     = "gcp"
  }
  service_env = {
    billing = {
      MERIDIAN_BILLING_URL   = var.providers.billing_url
      MERIDIAN_PUSH_IDENTITY = google_service_account.push.email
    }
    client-webhook = {
      MERIDIAN_PUSH_IDENTITY = google_service_account.push.email
    }
    command = {
      MERIDIAN_DISPATCH_WORKFLOW = module.dispatch_workflow.ids.workflow
      MERIDIAN_IDENTITY_TENANTS  = local.identity_tenants
      MERIDIAN_POD_BUCKET        = google_storage_bucket.pod.name
      # schedules.tf: the scheduler's token, verified here (a public service has no IAM check)
      MERIDIAN_PUSH_CERTS_URL     = "https://www.googleapis.com/oauth2/v3/certs"
      MERIDIAN_SCHEDULER_IDENTITY = google_service_account.scheduler.email
    }
    dispatch = {
      MERIDIAN_WORKFLOW_IDENTITY = google_service_account.workflow.email
    }
    driver-scoring = {
      MERIDIAN_PUSH_IDENTITY = google_service_account.push.email
    }
    eta = {
      MERIDIAN_PUSH_IDENTITY      = google_service_account.push.email
      MERIDIAN_SCHEDULER_IDENTITY = google_service_account.scheduler.email
    }
    event-publisher = {
      MERIDIAN_EVENTARC_IDENTITY = google_service_account.eventarc.email
    }
    live-map = {
      MERIDIAN_IDENTITY_TENANTS = local.identity_tenants
    }
    live-map-writer = {}
    # The migration bridge's push direction: the monolith's Cloud SQL by private IP (the reactors'
    # VPC connector); the password read from Secret Manager by name (legacy_writer.tf).
    legacy-writer = {
      MERIDIAN_LEGACY_DATABASE        = var.legacy.database
      MERIDIAN_LEGACY_HOST            = var.legacy.host
      MERIDIAN_LEGACY_PASSWORD_SECRET = google_secret_manager_secret.legacy_password.secret_id
      MERIDIAN_LEGACY_USER            = var.legacy.user
      MERIDIAN_PUSH_IDENTITY          = google_service_account.push.email
    }
    notification = {
      MERIDIAN_PUSH_IDENTITY     = google_service_account.push.email
      MERIDIAN_SMS_URL           = var.providers.sms_url
      MERIDIAN_TRACKING_BASE_URL = "https://${var.edge.domain}"
    }
    pod = {
      MERIDIAN_POD_BUCKET    = google_storage_bucket.pod.name
      MERIDIAN_PUSH_IDENTITY = google_service_account.push.email
    }
  }

  # Credentials, put in the environment by Cloud Run from Secret Manager (env => secret), each
  # readable by the services listed here only. Terraform creates the secrets, never their values.
  service_secrets = {
    billing         = { MERIDIAN_BILLING_API_KEY = "billing-api-key" }
    eta             = { MERIDIAN_ROUTES_API_KEY = "routes-api-key" }
    live-map        = { MERIDIAN_TRACKING_SECRET = "tracking-secret" }
    live-map-writer = { MERIDIAN_TRACKING_SECRET = "tracking-secret" }
    notification    = { MERIDIAN_SMS_API_KEY = "sms-api-key", MERIDIAN_TRACKING_SECRET = "tracking-secret" }
  }
  secret_ids = toset(flatten([for s in values(local.service_secrets) : values(s)]))

  # Services that call third parties which allow-list callers (SMS, billing, clients' webhook
  # endpoints): all their egress leaves through the connector and Cloud NAT's fixed addresses.
  internet_egress = toset(["billing", "client-webhook", "notification"])

  # Services that work between requests: the client-webhook reactor retries failed deliveries on
  # its own timer (minutes later, with no push to wake it), so one instance stays up with its CPU
  # always allocated (issue #19 item 7). The catalog's min_instances still applies when higher.
  background_work = toset(["client-webhook"])
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
  command       = ["meridian"]
  args          = ["serve", each.key]
  env           = merge(local.common_env, try(each.value.env, {}), local.service_env[each.key])
  ingress       = "INGRESS_TRAFFIC_INTERNAL_ONLY"
  invokers      = { pubsub-push = google_service_account.push.member }
  project_roles = concat(local.base_roles, lookup(local.extra_roles, each.key, []))
  scaling = {
    max_instances = try(var.services[each.key].max_instances, 20)
    min_instances = max(try(each.value.min_instances, 0), contains(local.background_work, each.key) ? 1 : 0)
  }
  resources = {
    cpu      = try(var.services[each.key].resources.cpu, "1")
    memory   = try(var.services[each.key].resources.memory, "512Mi")
    cpu_idle = contains(local.background_work, each.key) ? false : try(var.services[each.key].resources.cpu_idle, true)
  }
  secrets = {
    for env_name, secret in lookup(local.service_secrets, each.key, {}) : env_name => {
      secret = google_secret_manager_secret.default[secret].secret_id
    }
  }
  vpc_access = {
    connector = module.network.ids.connector
    egress    = contains(local.internet_egress, each.key) ? "ALL_TRAFFIC" : "PRIVATE_RANGES_ONLY"
  }
  deletion_protection = var.deletion_protection
  depends_on          = [google_project_service.default]
}

module "service" {
  source     = "../cloud-run-service"
  for_each   = local.front_services
  project_id = var.project_id
  prefix     = var.prefix
  region     = var.region
  name       = each.key
  labels     = local.labels
  image      = local.image
  command    = ["meridian"]
  args       = ["serve", each.key]
  env        = merge(local.common_env, try(each.value.env, {}), local.service_env[each.key])
  # Public services are reached through the load balancer only (edge.tf: Cloud Armor in front),
  # which calls them without an IAM token: they authenticate their callers themselves
  # (Identity Platform tokens, client API keys, tracking tokens).
  ingress              = contains(keys(local.public_services), each.key) ? "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER" : "INGRESS_TRAFFIC_INTERNAL_ONLY"
  invoker_iam_disabled = contains(keys(local.public_services), each.key)
  invokers             = local.front_invokers[each.key]
  project_roles        = concat(local.base_roles, lookup(local.extra_roles, each.key, []))
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
    egress    = contains(local.internet_egress, each.key) ? "ALL_TRAFFIC" : "PRIVATE_RANGES_ONLY"
  }
  deletion_protection = var.deletion_protection
  depends_on          = [google_project_service.default]
}
