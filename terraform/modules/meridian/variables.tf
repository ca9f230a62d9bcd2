variable "alerts" {
  description = "Alerting: who is told, the command p99 latency SLO, per-subscription backlog age thresholds."
  type = object({
    command_p99_ms          = optional(number, 100)
    emails                  = optional(list(string), [])
    max_unacked_age_seconds = optional(map(number), {})
  })
  default = {}
}

variable "bigquery" {
  description = "The telemetry archive: dataset location, partition expiry, deletion protection."
  type = object({
    deletion_protection       = optional(bool, true)
    location                  = string
    partition_expiration_days = optional(number, 90)
  })
}

variable "dead_letter_operator" {
  description = "IAM member (e.g. group:oncall@example.com) allowed to pull and replay dead letters."
  type        = string
  default     = null
}

variable "deletion_protection" {
  description = "Protect Cloud Run services from terraform destroy."
  type        = bool
  default     = true
}

variable "deployer" {
  description = "IAM member of the CI identity (Workload Identity Federation) that deploys; null to skip."
  type        = string
  default     = null
}

variable "edge" {
  description = "The public edge: the host name the load balancer serves (and tracking links use), and Cloud Armor's per-IP rate limit."
  type = object({
    domain = string
    rate_limit = optional(object({
      count        = optional(number, 600)
      interval_sec = optional(number, 60)
    }), {})
  })
}

variable "environment" {
  description = "Environment name, used in labels (dev, staging, prod)."
  type        = string
}

variable "firestore" {
  description = "The Firestore database: location (multi-region nam5/eur3 in production), name, protections."
  type = object({
    delete_protection      = optional(bool, true)
    location               = string
    name                   = optional(string, "(default)")
    point_in_time_recovery = optional(bool, true)
  })
}

variable "firestore_indexes" {
  description = "Extra composite indexes, merged over the platform's own."
  type = map(object({
    collection  = string
    query_scope = optional(string, "COLLECTION")
    fields = list(object({
      array_config = optional(string)
      field_path   = string
      order        = optional(string, "ASCENDING")
    }))
  }))
  default = {}
}

variable "geofence" {
  description = "The geofence Dataflow Flex Template job: template version, sizing, extra pipeline options."
  type = object({
    enabled          = optional(bool, true)
    machine_type     = optional(string, "n2-standard-2")
    max_workers      = optional(number, 5)
    name             = optional(string, "geofence-pipeline")
    parameters       = optional(map(string), {})
    template_version = string
  })
}

variable "image" {
  description = "The service image, in full (registry/path:tag or @sha256 digest); null: meridian:<image_tag> in the environment's Artifact Registry repository."
  type        = string
  default     = null
}

variable "image_tag" {
  description = "Tag (or @sha256 digest) of the meridian image in Artifact Registry to deploy."
  type        = string
}

variable "labels" {
  description = "Extra labels on every labelled resource."
  type        = map(string)
  default     = {}
}

variable "legacy" {
  description = "The legacy monolith's Cloud SQL PostgreSQL the migration bridge reaches by private IP (its password: the legacy-password secret)."
  type = object({
    database = optional(string, "monolith")
    host     = optional(string, "")
    user     = optional(string, "meridian-bridge")
  })
  default = {}
}

variable "network" {
  description = "Egress network: subnet and connector ranges, number of Cloud NAT addresses."
  type = object({
    ip_ranges = object({
      connector = string
      subnet    = string
    })
    nat_addresses = optional(number, 1)
  })
}

variable "pod" {
  description = "Proof-of-delivery photos: days until they move to Nearline, and until they are deleted."
  type = object({
    nearline_after_days = optional(number, 30)
    retention_days      = optional(number, 400)
  })
  default = {}
}

variable "prefix" {
  description = "Prefix of every resource name (short: service account ids are limited to 30 characters)."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,7}[a-z0-9]$", var.prefix))
    error_message = "prefix must be 2-9 lowercase letters, digits or dashes."
  }
}

variable "project_id" {
  description = "Project of the environment."
  type        = string
}

variable "providers" {
  description = "The third parties' endpoints (their API keys are Secret Manager secrets: README)."
  type = object({
    billing_url = string
    sms_url     = string
  })
}

variable "region" {
  description = "Region of Cloud Run, Workflows, Dataflow, the connector and the image repository."
  type        = string
}

variable "services" {
  description = "Per-service overrides of what the catalog does not say: invokers of public services (label => member, e.g. the API gateway's identity), sizing."
  type = map(object({
    invokers      = optional(map(string), {})
    max_instances = optional(number, 20)
    resources = optional(object({
      cpu      = optional(string, "1")
      cpu_idle = optional(bool, true)
      memory   = optional(string, "512Mi")
    }), {})
  }))
  default = {}
}

variable "sla_tick_schedule" {
  description = "Cron schedule (UTC) of the ETA reactor's SLA check."
  type        = string
  default     = "* * * * *"
}

variable "sync_ready_timeout_s" {
  description = "How long workflows/sync.yaml polls its sync-ready job before the run ends in SyncError."
  type        = number
  default     = 120
}

variable "vpc_sc" {
  description = "VPC Service Controls perimeter around Firestore, BigQuery, Pub/Sub and Secret Manager; null (no organisation) for none. access_policy: the organisation's access policy number; ingress_identities: who may reach them from outside (the deployer, operators); dry_run: log violations only."
  type = object({
    access_levels      = optional(list(string), [])
    access_policy      = string
    dry_run            = optional(bool, true)
    ingress_identities = optional(list(string), [])
  })
  default = null
}
