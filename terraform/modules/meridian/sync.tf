# The migration bridge (#21; services/sync): the catalog's jobs are Cloud Run Jobs of the service
# image, each `meridian job run NAME` (meridian/runtime/job_cli.py), the workflow's override
# appending the event. Eventarc's Pub/Sub trigger on sync.requests starts workflows/sync.yaml,
# the very file the embedded engine runs, which runs the jobs in order through the Cloud Run Admin
# API connector. A job with a schedule (sync-pull) is started by Cloud Scheduler. The jobs reach
# the monolith's Cloud SQL instance by private IP over the VPC connector; its password is a
# Secret Manager secret Cloud Run puts in their environment (Terraform creates it, never its value).

locals {
  sync_jobs           = try(local.catalog.jobs, {})
  sync_triggers       = try(local.catalog.workflow_triggers, {})
  sync_scheduled_jobs = { for name, job in local.sync_jobs : name => job if try(job.schedule, null) != null }
  sync_job_roles      = ["roles/datastore.user", "roles/pubsub.publisher", "roles/logging.logWriter"]
  sync_job_env = merge(local.common_env, {
    MERIDIAN_LEGACY_DATABASE = var.legacy.database
    MERIDIAN_LEGACY_HOST     = var.legacy.host
    MERIDIAN_LEGACY_USER     = var.legacy.user
  })
  # The workflows an Eventarc Pub/Sub trigger may start, by the catalog's name.
  workflow_ids = { sync = module.sync_workflow.ids.workflow }
}

resource "google_service_account" "sync_jobs" {
  project      = var.project_id
  account_id   = "${local.prefix}sync-jobs"
  display_name = "Meridian migration bridge jobs"
}

resource "google_project_iam_member" "sync_jobs" {
  for_each = toset(local.sync_job_roles)
  project  = var.project_id
  role     = each.key
  member   = google_service_account.sync_jobs.member
}

resource "google_secret_manager_secret" "legacy_password" {
  project   = var.project_id
  secret_id = "${local.prefix}legacy-password"
  labels    = local.labels

  replication {
    auto {}
  }

  depends_on = [google_project_service.default]
}

resource "google_secret_manager_secret_iam_member" "legacy_password" {
  project   = var.project_id
  secret_id = google_secret_manager_secret.legacy_password.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.sync_jobs.member
}

resource "google_cloud_run_v2_job" "sync" {
  for_each            = local.sync_jobs
  project             = var.project_id
  location            = var.region
  name                = "${local.prefix}${each.key}"
  labels              = local.labels
  deletion_protection = var.deletion_protection

  template {
    task_count = 1
    template {
      service_account = google_service_account.sync_jobs.email
      max_retries     = try(each.value.max_retries, 0)
      timeout         = try(each.value.timeout, "600s")
      containers {
        image   = local.image
        command = ["meridian", "job", "run", each.key]
        dynamic "env" {
          for_each = local.sync_job_env
          content {
            name  = env.key
            value = env.value
          }
        }
        env {
          name = "MERIDIAN_LEGACY_PASSWORD"
          value_source {
            secret_key_ref {
              secret  = google_secret_manager_secret.legacy_password.secret_id
              version = "latest"
            }
          }
        }
        resources {
          limits = { cpu = "1", memory = "1Gi" }
        }
      }
      vpc_access {
        connector = module.network.ids.connector
        egress    = "PRIVATE_RANGES_ONLY"
      }
    }
  }

  depends_on = [google_project_service.default, google_secret_manager_secret_iam_member.legacy_password]
}

# The workflow: runs the jobs with overrides (the event) and reads their executions while waiting.
resource "google_service_account" "sync_workflow" {
  project      = var.project_id
  account_id   = "${local.prefix}sync-wf"
  display_name = "Meridian sync workflow"
}

resource "google_project_iam_member" "sync_workflow" {
  for_each = toset(["roles/logging.logWriter", "roles/run.viewer"])
  project  = var.project_id
  role     = each.key
  member   = google_service_account.sync_workflow.member
}

resource "google_cloud_run_v2_job_iam_member" "sync_workflow" {
  for_each = local.sync_jobs
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_job.sync[each.key].name
  role     = "roles/run.jobsExecutorWithOverrides"
  member   = google_service_account.sync_workflow.member
}

module "sync_workflow" {
  source                = "../workflows"
  project_id            = var.project_id
  prefix                = var.prefix
  region                = var.region
  labels                = local.labels
  name                  = "sync"
  description           = "Meridian migration bridge: one SyncRequested through the sync jobs, reported as SyncStarted, SyncEnded or SyncError."
  service_account_email = google_service_account.sync_workflow.email
  source_path           = "${path.module}/../../../workflows/sync.yaml"
  env = {
    MERIDIAN_JOB_PREFIX           = local.prefix
    MERIDIAN_SYNC_READY_TIMEOUT_S = tostring(var.sync_ready_timeout_s)
  }
}

# Eventarc's Pub/Sub triggers into workflows, from the catalog; they deliver as the Eventarc
# account (identity.tf), which may start executions.
resource "google_project_iam_member" "eventarc_workflows" {
  project = var.project_id
  role    = "roles/workflows.invoker"
  member  = google_service_account.eventarc.member
}

resource "google_eventarc_trigger" "workflow" {
  for_each        = local.sync_triggers
  project         = var.project_id
  location        = var.region
  name            = "${local.prefix}${each.key}"
  labels          = local.labels
  service_account = google_service_account.eventarc.email

  matching_criteria {
    attribute = "type"
    value     = try(each.value.event_type, "google.cloud.pubsub.topic.v1.messagePublished")
  }

  transport {
    pubsub {
      topic = "projects/${var.project_id}/topics/${each.value.topic}"
    }
  }

  destination {
    workflow = local.workflow_ids[each.value.workflow]
  }

  depends_on = [module.pubsub, google_project_iam_member.eventarc_workflows]
}

# Cloud Scheduler starts the scheduled jobs (sync-pull, every minute) with an OAuth token of its
# own account, which may run those jobs and nothing else (as reconcile.tf's nightly job).
resource "google_service_account" "sync_scheduler" {
  project      = var.project_id
  account_id   = "${local.prefix}sync-sched"
  display_name = "Meridian Cloud Scheduler identity (migration bridge pull)"
}

resource "google_cloud_run_v2_job_iam_member" "sync_scheduler" {
  for_each = local.sync_scheduled_jobs
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_job.sync[each.key].name
  role     = "roles/run.invoker"
  member   = google_service_account.sync_scheduler.member
}

resource "google_cloud_scheduler_job" "sync" {
  for_each         = local.sync_scheduled_jobs
  project          = var.project_id
  region           = var.region
  name             = "${local.prefix}${each.key}"
  description      = each.value.description
  schedule         = each.value.schedule
  time_zone        = "Etc/UTC"
  attempt_deadline = "60s"

  # A missed run is made up by the next one: the pull reads from its stored cursor.
  retry_config {
    retry_count = 0
  }

  http_target {
    http_method = "POST"
    uri         = "https://run.googleapis.com/v2/projects/${var.project_id}/locations/${var.region}/jobs/${google_cloud_run_v2_job.sync[each.key].name}:run"

    oauth_token {
      service_account_email = google_service_account.sync_scheduler.email
      scope                 = "https://www.googleapis.com/auth/cloud-platform"
    }
  }

  depends_on = [google_project_service.default, google_cloud_run_v2_job_iam_member.sync_scheduler]
}
