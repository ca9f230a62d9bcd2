variable "database" {
  description = "The database: name, location (a multi-region such as nam5/eur3 in production), protections."
  type = object({
    delete_protection      = optional(bool, true)
    location               = string
    name                   = optional(string, "(default)")
    point_in_time_recovery = optional(bool, true)
  })
}

variable "indexes" {
  description = "Composite indexes, keyed by a readable name."
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

variable "project_id" {
  description = "Project of the database."
  type        = string
}

variable "ttl_collections" {
  description = "Collection group => timestamp field after which Firestore deletes the document."
  type        = map(string)
  default     = {}
}
