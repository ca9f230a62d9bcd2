variable "bigquery" {
  description = "Where BigQuery subscriptions land: dataset location, partition expiry, deletion protection."
  type = object({
    deletion_protection       = optional(bool, true)
    location                  = string
    partition_expiration_days = optional(number, 90)
  })
}

variable "catalog_path" {
  description = "Path of schemas/catalog.yaml; Avro schema paths in it are relative to its directory."
  type        = string
}

variable "labels" {
  description = "Labels on every topic, subscription and table."
  type        = map(string)
  default     = {}
}

variable "prefix" {
  description = "Prefix of Pub/Sub schema names (topics and subscriptions keep catalog names); null for none."
  type        = string
  default     = null
}

variable "project_id" {
  description = "Project that owns the topics and subscriptions."
  type        = string
}

variable "publishers" {
  description = "Producer service name (as in the catalog) => IAM member allowed to publish its event types' topics."
  type        = map(string)
  default     = {}
}

variable "pull_consumers" {
  description = "Pull consumer name (delivery.consumer in the catalog) => IAM member that subscribes."
  type        = map(string)
  default     = {}
}

variable "push_endpoints" {
  description = "Push target service name => its base HTTPS URL (also the OIDC audience)."
  type        = map(string)
  default     = {}
}

variable "push_service_account_email" {
  description = "Identity Pub/Sub signs push requests as; the only run.invoker on reactors."
  type        = string
}
