# Platform identities that are not a service's own: each exists for one hop and is granted only
# what that hop needs. No keys are ever created for any of them (CI uses Workload Identity
# Federation, see README).

# Pub/Sub push: signs the OIDC token on every push; the only run.invoker on reactors.
resource "google_service_account" "push" {
  project      = var.project_id
  account_id   = "${local.prefix}pubsub-push"
  display_name = "Meridian Pub/Sub push identity"
}

# The Pub/Sub service agent mints the push identity's OIDC tokens.
resource "google_service_account_iam_member" "push_token_creator" {
  service_account_id = google_service_account.push.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:${module.pubsub.service_agent_email}"
}

# Eventarc: delivers Firestore change events to the event publisher.
resource "google_service_account" "eventarc" {
  project      = var.project_id
  account_id   = "${local.prefix}eventarc"
  display_name = "Meridian Eventarc trigger identity"
}

resource "google_project_iam_member" "eventarc" {
  for_each = toset(["roles/eventarc.eventReceiver"])
  project  = var.project_id
  role     = each.key
  member   = google_service_account.eventarc.member
}

# The dispatch saga: calls the dispatch service's steps, writes its logs.
resource "google_service_account" "workflow" {
  project      = var.project_id
  account_id   = "${local.prefix}dispatch-wf"
  display_name = "Meridian dispatch workflow"
}

resource "google_project_iam_member" "workflow" {
  for_each = toset(["roles/logging.logWriter"])
  project  = var.project_id
  role     = each.key
  member   = google_service_account.workflow.member
}

# The geofence pipeline's Dataflow workers. Its Pub/Sub access (subscribe to `geofence`, publish
# on logistics.events) comes from the catalog through module.pubsub.
resource "google_service_account" "geofence" {
  project      = var.project_id
  account_id   = "${local.prefix}geofence"
  display_name = "Meridian geofence pipeline (Dataflow)"
}

# Deployers (CI over Workload Identity Federation) act as the runtime identities.
resource "google_service_account_iam_member" "deployer_act_as" {
  for_each = var.deployer == null ? {} : {
    eventarc  = google_service_account.eventarc.name
    geofence  = google_service_account.geofence.name
    push      = google_service_account.push.name
    scheduler = google_service_account.scheduler.name
    workflow  = google_service_account.workflow.name
  }
  service_account_id = each.value
  role               = "roles/iam.serviceAccountUser"
  member             = var.deployer
}
