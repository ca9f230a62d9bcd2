# Nightly platform reconciliation (#22 item 6): a Cloud Run Job runs `meridian reconcile` from the
# service image (meridian/runtime/reconcile_cli.py) over yesterday's parcels, reading Firestore and
# the BigQuery event archive; a difference fails the execution, which Cloud Run reports as a failed
# job (the loud part). Cloud Scheduler starts it every night with an OAuth token of its own account,
# which may run this job and nothing else.

locals {
  reconcile_schedule = "30 2 * * *" # 02:30 UTC: yesterday's windows have closed, its events settled
  reconcile_roles    = ["roles/datastore.viewer", "roles/bigquery.dataViewer", "roles/bigquery.jobUser", "roles/logging.logWriter"]
}

resource "google_service_account" "reconcile" {
  project      = var.project_id
  account_id   = "${local.prefix}reconcile"
  display_name = "Meridian nightly reconciliation job"
}

resource "google_project_iam_member" "reconcile" {
  for_each = toset(local.reconcile_roles)
  project  = var.project_id
  role     = each.key
  member   = google_service_account.reconcile.member
}

resource "google_cloud_run_v2_job" "reconcile" {
  project             = var.project_id
  location            = var.region
  name                = "${local.prefix}reconcile"
  labels              = local.labels
  deletion_protection = var.deletion_protection

  template {
    task_count = 1
    template {
      service_account = google_service_account.reconcile.email
      max_retries     = 0 # a difference is an answer, not a transient failure
      timeout         = "3600s"
      containers {
        image   = local.image
        command = ["meridian"]
        args    = ["reconcile"]
        dynamic "env" {
          for_each = local.common_env
          content {
            name  = env.key
            value = env.value
          }
        }
        resources {
          limits = { cpu = "1", memory = "1Gi" }
        }
      }
    }
  }

  depends_on = [google_project_service.default]
}

resource "google_service_account" "reconcile_scheduler" {
  project      = var.project_id
  account_id   = "${local.prefix}reconcile-sched"
  display_name = "Meridian Cloud Scheduler identity (nightly reconciliation)"
}

resource "google_cloud_run_v2_job_iam_member" "reconcile_scheduler" {
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_job.reconcile.name
  role     = "roles/run.invoker"
  member   = google_service_account.reconcile_scheduler.member
}

resource "google_cloud_scheduler_job" "reconcile" {
  project          = var.project_id
  region           = var.region
  name             = "${local.prefix}reconcile-nightly"
  description      = "Runs the reconciliation job over yesterday's parcels."
  schedule         = local.reconcile_schedule
  time_zone        = "Etc/UTC"
  attempt_deadline = "60s"

  http_target {
    http_method = "POST"
    uri         = "https://run.googleapis.com/v2/projects/${var.project_id}/locations/${var.region}/jobs/${google_cloud_run_v2_job.reconcile.name}:run"

    oauth_token {
      service_account_email = google_service_account.reconcile_scheduler.email
      scope                 = "https://www.googleapis.com/auth/cloud-platform"
    }
  }

  depends_on = [google_project_service.default, google_cloud_run_v2_job_iam_member.reconcile_scheduler]
}
