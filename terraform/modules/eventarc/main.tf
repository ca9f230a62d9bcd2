# Eventarc Firestore triggers: the commit is the event (the native transactional outbox). Each
# trigger routes document changes matching a path pattern to a Cloud Run service, authenticated as
# the Eventarc identity, which is the only invoker granted on that service.

locals {
  prefix = var.prefix == null || var.prefix == "" ? "" : "${var.prefix}-"
}

resource "google_eventarc_trigger" "default" {
  for_each        = var.triggers
  project         = var.project_id
  name            = "${local.prefix}${each.key}"
  location        = var.location # a Firestore trigger lives where its database does (e.g. nam5)
  service_account = var.service_account_email
  labels          = var.labels

  # Firestore delivers DocumentEventData as protobuf; services/event_publisher decodes that.
  event_data_content_type = "application/protobuf"

  matching_criteria {
    attribute = "type"
    value     = each.value.event_type
  }

  matching_criteria {
    attribute = "database"
    value     = var.database
  }

  matching_criteria {
    attribute = "document"
    value     = each.value.document
    operator  = "match-path-pattern"
  }

  destination {
    cloud_run_service {
      service = var.services[each.value.service]
      region  = var.region
      path    = each.value.path
    }
  }
}
