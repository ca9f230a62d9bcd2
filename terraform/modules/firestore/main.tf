# The Firestore database (Native mode), TTL policies that keep the idempotency ledgers bounded,
# and the composite indexes the services' queries need.

resource "google_firestore_database" "default" {
  project                           = var.project_id
  name                              = var.database.name
  location_id                       = var.database.location
  type                              = "FIRESTORE_NATIVE"
  concurrency_mode                  = "PESSIMISTIC"
  point_in_time_recovery_enablement = var.database.point_in_time_recovery ? "POINT_IN_TIME_RECOVERY_ENABLED" : "POINT_IN_TIME_RECOVERY_DISABLED"
  delete_protection_state           = var.database.delete_protection ? "DELETE_PROTECTION_ENABLED" : "DELETE_PROTECTION_DISABLED"
  deletion_policy                   = var.database.delete_protection ? "ABANDON" : "DELETE"
}

# A TTL policy per ledger collection group. The single-field index on the TTL field is disabled:
# a monotonically increasing timestamp index is a write hotspot and no query reads it.
resource "google_firestore_field" "ttl" {
  for_each   = var.ttl_collections
  project    = var.project_id
  database   = google_firestore_database.default.name
  collection = each.key
  field      = each.value

  ttl_config {}

  index_config {}
}

resource "google_firestore_index" "default" {
  for_each    = var.indexes
  project     = var.project_id
  database    = google_firestore_database.default.name
  collection  = each.value.collection
  query_scope = each.value.query_scope

  dynamic "fields" {
    for_each = each.value.fields
    content {
      field_path   = fields.value.field_path
      order        = fields.value.array_config == null ? fields.value.order : null
      array_config = fields.value.array_config
    }
  }
}
