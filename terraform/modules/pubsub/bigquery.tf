# BigQuery subscriptions (the raw telemetry archive): the table is created here, day-partitioned
# on publish time with an expiry, so cold history rolls out instead of growing forever.

locals {
  bigquery_tables = {
    for s in values(local.subscriptions) : s.bigquery.table => {
      dataset        = split(".", s.bigquery.table)[0]
      table          = split(".", s.bigquery.table)[1]
      write_metadata = s.bigquery.write_metadata
    } if s.bigquery != null
  }
  # Dataset and table keep the catalog's names (telemetry.raw_pings), like topics do.
  bigquery_datasets = toset([for t in values(local.bigquery_tables) : t.dataset])

  # The columns a BigQuery subscription writes: `data` always; with write_metadata also the
  # message metadata, attributes (eventType, vehicleId, traceparent…) as JSON.
  metadata_columns = [
    { name = "subscription_name", type = "STRING", mode = "NULLABLE" },
    { name = "message_id", type = "STRING", mode = "NULLABLE" },
    { name = "publish_time", type = "TIMESTAMP", mode = "NULLABLE" },
    { name = "attributes", type = "JSON", mode = "NULLABLE" },
  ]
  data_column = [{ name = "data", type = "BYTES", mode = "NULLABLE", description = "Avro-encoded message body" }]
}

resource "google_bigquery_dataset" "default" {
  for_each   = local.bigquery_datasets
  project    = var.project_id
  dataset_id = each.key
  location   = var.bigquery.location
  labels     = var.labels
}

resource "google_bigquery_table" "default" {
  for_each            = local.bigquery_tables
  project             = var.project_id
  dataset_id          = google_bigquery_dataset.default[each.value.dataset].dataset_id
  table_id            = each.value.table
  labels              = var.labels
  deletion_protection = var.bigquery.deletion_protection
  schema = jsonencode(concat(
    local.data_column,
    each.value.write_metadata ? local.metadata_columns : [],
  ))

  time_partitioning {
    type = "DAY"
    # Without metadata columns there is no publish_time; fall back to ingestion-time partitions.
    field         = each.value.write_metadata ? "publish_time" : null
    expiration_ms = var.bigquery.partition_expiration_days * 86400000
  }

  require_partition_filter = true
}

resource "google_bigquery_table_iam_member" "pubsub_writer" {
  for_each   = local.bigquery_tables
  project    = var.project_id
  dataset_id = google_bigquery_table.default[each.key].dataset_id
  table_id   = google_bigquery_table.default[each.key].table_id
  role       = "roles/bigquery.dataEditor"
  member     = "serviceAccount:${google_project_service_identity.pubsub.email}"
}
