# Scheduled dispatch windows (services/command/handlers/schedules.py): the schedules are data in
# Firestore (dispatch_schedules/{id}), so instead of a Scheduler job per schedule, one job calls
# the command service every minute to open the windows that are due; the command service makes
# that idempotent (a window's id derives from its schedule and due time).
#
# The job signs as the scheduler account (scheduler.tf), the one identity the endpoint accepts
# (MERIDIAN_SCHEDULER_IDENTITY on the command service, services.tf). The command service is public,
# behind the load balancer with its IAM check disabled, so no run.invoker grant would mean
# anything: the service verifies the token itself against Google's published keys
# (MERIDIAN_PUSH_CERTS_URL), with the fixed audience the endpoint checks (FIRE_AUDIENCE in
# services/command/routes/schedules.py). Cloud Scheduler counts as internal traffic, which the
# service's ingress admits.

resource "google_cloud_scheduler_job" "dispatch_schedules" {
  project          = var.project_id
  region           = var.region
  name             = "${local.prefix}dispatch-schedules"
  description      = "Fires the dispatch schedules: opens each scheduled dispatch window that is due."
  schedule         = "* * * * *"
  time_zone        = "Etc/UTC"
  attempt_deadline = "60s"

  # A missed firing is made up by the next one, a minute later (windows still open are opened).
  retry_config {
    retry_count = 0
  }

  http_target {
    http_method = "POST"
    uri         = "${module.service["command"].uri}/v1/dispatch-schedules:fire"

    oidc_token {
      service_account_email = google_service_account.scheduler.email
      audience              = "meridian/dispatch-schedules:fire"
    }
  }

  depends_on = [google_project_service.default]
}
