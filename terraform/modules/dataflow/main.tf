# The geofence pipeline (pipelines/geofence) as a Dataflow Flex Template streaming job on the
# private subnet (egress through Cloud NAT). It runs as its own service account, created by the
# caller, which also grants its Pub/Sub access from the catalog.

locals {
  prefix = var.prefix == null || var.prefix == "" ? "" : "${var.prefix}-"
}

resource "google_project_iam_member" "pipeline" {
  for_each = toset(["roles/dataflow.worker", "roles/monitoring.metricWriter", "roles/logging.logWriter"])
  project  = var.project_id
  role     = each.key
  member   = var.service_account.member
}

# Staging and temp files; the template spec (built by `gcloud dataflow flex-template build`) lives
# here too.
resource "google_storage_bucket" "pipeline" {
  project                     = var.project_id
  name                        = "${local.prefix}${var.project_id}-${var.name}"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  labels                      = var.labels

  lifecycle_rule {
    condition {
      age            = 7
      matches_prefix = ["temp/"]
    }
    action {
      type = "Delete"
    }
  }
}

resource "google_storage_bucket_iam_member" "pipeline" {
  bucket = google_storage_bucket.pipeline.name
  role   = "roles/storage.objectAdmin"
  member = var.service_account.member
}

resource "google_dataflow_flex_template_job" "default" {
  provider                     = google-beta
  count                        = var.job.enabled ? 1 : 0
  project                      = var.project_id
  region                       = var.region
  name                         = "${local.prefix}${var.name}"
  container_spec_gcs_path      = "gs://${google_storage_bucket.pipeline.name}/templates/${var.name}-${var.job.template_version}.json"
  service_account_email        = var.service_account.email
  subnetwork                   = var.subnetwork
  ip_configuration             = "WORKER_IP_PRIVATE"
  temp_location                = "gs://${google_storage_bucket.pipeline.name}/temp"
  staging_location             = "gs://${google_storage_bucket.pipeline.name}/staging"
  max_workers                  = var.job.max_workers
  machine_type                 = var.job.machine_type
  sdk_container_image          = var.job.sdk_container_image
  enable_streaming_engine      = true
  on_delete                    = "drain" # finish in-flight windows; never drop pings on redeploy
  skip_wait_on_job_termination = false
  labels                       = var.labels
  parameters                   = var.parameters

  depends_on = [google_project_iam_member.pipeline, google_storage_bucket_iam_member.pipeline]
}
