# Proof-of-delivery photos (MERIDIAN_POD_BUCKET): uploaded by the command service
# (services/command/handlers/pod.py, content-addressed keys pod/<parcel>/<sha256>.<ext>), checked
# by the POD reactor. Private: uniform access, public access prevented; kept var.pod.retention_days.

resource "google_storage_bucket" "pod" {
  project                     = var.project_id
  name                        = "${local.prefix}${var.project_id}-pod"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  labels                      = local.labels

  # Photos are read in the first days (disputes); then they only need to exist.
  lifecycle_rule {
    condition {
      age = var.pod.nearline_after_days
    }
    action {
      type          = "SetStorageClass"
      storage_class = "NEARLINE"
    }
  }

  lifecycle_rule {
    condition {
      age = var.pod.retention_days
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.default]
}

# The command service writes photos (a retried upload rewrites the same object: objectUser, not
# objectCreator); the POD reactor only checks they exist.
resource "google_storage_bucket_iam_member" "pod" {
  for_each = {
    command = { member = module.service["command"].service_account.member, role = "roles/storage.objectUser" }
    pod     = { member = module.reactor["pod"].service_account.member, role = "roles/storage.objectViewer" }
  }
  bucket = google_storage_bucket.pod.name
  role   = each.value.role
  member = each.value.member
}
