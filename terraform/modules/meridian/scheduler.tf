# The ETA reactor's SLA check (services/reactors/eta/schedule.py, SLA_TICK_PATH): Cloud Scheduler
# calls it every minute with an OIDC token of its own account, whose audience is the reactor's URL.
# That account is the only one the endpoint accepts (MERIDIAN_SCHEDULER_IDENTITY) and may invoke
# the ETA reactor alone. schedules.tf's job signs as the same account (the command service's
# dispatch schedules).

resource "google_service_account" "scheduler" {
  project      = var.project_id
  account_id   = "${local.prefix}scheduler"
  display_name = "Meridian Cloud Scheduler identity (ETA SLA tick, dispatch schedules)"
}

resource "google_cloud_scheduler_job" "sla_tick" {
  project          = var.project_id
  region           = var.region
  name             = "${local.prefix}eta-sla-tick"
  description      = "The ETA reactor's SLA check: windows that close with no movement on their route are announced as breached."
  schedule         = var.sla_tick_schedule
  time_zone        = "Etc/UTC"
  attempt_deadline = "60s"

  # A missed tick is made up by the next one, a minute later.
  retry_config {
    retry_count = 0
  }

  http_target {
    http_method = "POST"
    uri         = "${module.reactor["eta"].uri}/tick"

    oidc_token {
      service_account_email = google_service_account.scheduler.email
      audience              = module.reactor["eta"].uri
    }
  }

  depends_on = [google_project_service.default, google_cloud_run_v2_service_iam_member.scheduler]
}

# Beside the push identity, the one other invoker of a reactor: the scheduler, on ETA only.
resource "google_cloud_run_v2_service_iam_member" "scheduler" {
  project  = var.project_id
  location = var.region
  name     = module.reactor["eta"].name
  role     = "roles/run.invoker"
  member   = google_service_account.scheduler.member
}
