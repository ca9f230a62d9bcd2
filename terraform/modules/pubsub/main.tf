# Pub/Sub topology built from the event catalog (schemas/catalog.yaml), the one source of truth
# the embedded broker also reads. Nothing here names a topic or a subscription by hand: adding a
# reactor is a catalog entry, not a Terraform change.
#
# Topics and subscriptions keep their catalog names, unprefixed: they are the contract the services
# address them by (meridian/gcp/pubsub.py resolves projects/<project>/topics/<catalog name>), and
# each environment is its own project. The prefix names everything else.

locals {
  catalog     = yamldecode(file(var.catalog_path))
  catalog_dir = dirname(var.catalog_path)
  prefix      = var.prefix == null || var.prefix == "" ? "" : "${var.prefix}-"

  # The catalog writes durations as Pub/Sub-style strings ("10s", "5m", "2h", "7d") or bare
  # seconds; the provider wants "<seconds>s". HCL has no user functions, so every duration string
  # the catalog uses is converted once here and looked up below.
  duration_pattern = "^([0-9]+(?:\\.[0-9]+)?)([smhd]?)$"
  unit_seconds     = { "" = 1, s = 1, m = 60, h = 3600, d = 86400 }
  duration_strings = distinct(compact(flatten([
    ["7d", "10s", "600s"], # the defaults used below
    [for t in values(local.catalog.topics) : tostring(try(t.message_retention, ""))],
    [for s in values(local.catalog.subscriptions) : [
      tostring(try(s.message_retention, "")),
      tostring(try(s.retry.minimum_backoff, "")),
      tostring(try(s.retry.maximum_backoff, "")),
    ]],
  ])))
  seconds = {
    for d in local.duration_strings : d => format("%ds", floor(
      tonumber(regex(local.duration_pattern, d)[0]) * local.unit_seconds[regex(local.duration_pattern, d)[1]]
    ))
  }

  topics = {
    for name, t in local.catalog.topics : name => {
      description       = try(t.description, null)
      message_retention = try(local.seconds[tostring(t.message_retention)], null)
      schema            = try(t.schema, null)
    }
  }

  # Every catalog subscription, normalised; each attribute the catalog may set is mapped here.
  subscriptions = {
    for name, s in local.catalog.subscriptions : name => {
      ack_deadline_seconds = try(s.ack_deadline_seconds, 10)
      bigquery = s.delivery.type != "bigquery" ? null : {
        table          = s.delivery.table
        write_metadata = try(s.delivery.write_metadata, true)
      }
      dead_letter_topic     = try(s.dead_letter_topic, null)
      filter                = trimspace(try(s.filter, ""))
      max_delivery_attempts = try(s.max_delivery_attempts, 5)
      message_retention     = local.seconds[tostring(try(s.message_retention, "7d"))]
      ordering              = try(s.ordering, false)
      pull_consumer         = s.delivery.type == "pull" ? s.delivery.consumer : null
      push = s.delivery.type != "push" ? null : {
        path    = try(s.delivery.path, "/events")
        service = s.delivery.service
      }
      retry = try(s.retry, null) == null ? null : {
        maximum_backoff = local.seconds[tostring(try(s.retry.maximum_backoff, "600s"))]
        minimum_backoff = local.seconds[tostring(try(s.retry.minimum_backoff, "10s"))]
      }
      topic = s.topic
    }
  }

  dead_letter_topics = toset(compact([for s in values(local.subscriptions) : s.dead_letter_topic]))

  # Least-privilege publishing: a producer may publish only on the topics its event types use.
  producer_topics = {
    for pair in distinct([for t in values(local.catalog.event_types) : {
      producer = t.producer
      topic    = t.topic
    }]) : "${pair.producer}/${pair.topic}" => pair
    if contains(keys(var.publishers), pair.producer)
  }
}

# Every event type's Avro schema is registered (the governed contract, visible in the console);
# it is attached only to a topic that carries that one type, see README "Schemas".
resource "google_pubsub_schema" "default" {
  for_each   = local.catalog.event_types
  project    = var.project_id
  name       = "${local.prefix}${each.key}"
  type       = "AVRO"
  definition = file("${local.catalog_dir}/${each.value.schema}")
}

resource "google_pubsub_topic" "default" {
  for_each                   = local.topics
  project                    = var.project_id
  name                       = each.key
  labels                     = var.labels
  message_retention_duration = each.value.message_retention

  dynamic "schema_settings" {
    for_each = each.value.schema == null ? [] : [each.value.schema]
    content {
      schema   = google_pubsub_schema.default[schema_settings.value].id
      encoding = "BINARY" # meridian.codec.events writes schemaless binary Avro
    }
  }
}

resource "google_pubsub_subscription" "default" {
  for_each                   = local.subscriptions
  project                    = var.project_id
  name                       = each.key
  topic                      = google_pubsub_topic.default[each.value.topic].id
  labels                     = var.labels
  filter                     = each.value.filter
  ack_deadline_seconds       = each.value.ack_deadline_seconds
  enable_message_ordering    = each.value.ordering
  message_retention_duration = each.value.message_retention

  # The default 31-day inactivity expiry would silently delete a quiet dead-letter subscription.
  expiration_policy {
    ttl = ""
  }

  dynamic "dead_letter_policy" {
    for_each = each.value.dead_letter_topic == null ? [] : [each.value.dead_letter_topic]
    content {
      dead_letter_topic     = google_pubsub_topic.default[dead_letter_policy.value].id
      max_delivery_attempts = each.value.max_delivery_attempts
    }
  }

  dynamic "retry_policy" {
    for_each = each.value.retry == null ? [] : [each.value.retry]
    content {
      maximum_backoff = retry_policy.value.maximum_backoff
      minimum_backoff = retry_policy.value.minimum_backoff
    }
  }

  dynamic "push_config" {
    for_each = each.value.push == null ? [] : [each.value.push]
    content {
      push_endpoint = "${var.push_endpoints[push_config.value.service]}${push_config.value.path}"
      # Pub/Sub signs every push with the push identity; the target grants run.invoker to it alone.
      oidc_token {
        service_account_email = var.push_service_account_email
        audience              = var.push_endpoints[push_config.value.service]
      }
    }
  }

  dynamic "bigquery_config" {
    for_each = each.value.bigquery == null ? [] : [each.value.bigquery]
    content {
      table          = "${google_bigquery_table.default[bigquery_config.value.table].project}.${google_bigquery_table.default[bigquery_config.value.table].dataset_id}.${google_bigquery_table.default[bigquery_config.value.table].table_id}"
      write_metadata = bigquery_config.value.write_metadata
    }
  }

  depends_on = [
    google_bigquery_table_iam_member.pubsub_writer,
    google_pubsub_topic_iam_member.dead_letter_publisher,
  ]
}
