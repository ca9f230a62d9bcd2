output "platform" {
  description = "Everything a deployer or an operator looks up: urls, ids, identities, egress addresses."
  value = {
    bigquery_tables   = module.meridian.bigquery_tables
    dataflow          = module.meridian.dataflow
    edge              = module.meridian.edge
    egress_addresses  = module.meridian.egress_addresses
    eventarc_triggers = module.meridian.eventarc_triggers
    firestore         = module.meridian.firestore
    identity_tenants  = module.meridian.identity_tenants
    image_repository  = module.meridian.image_repository
    pod_bucket        = module.meridian.pod_bucket
    secrets           = module.meridian.secrets
    service_accounts  = module.meridian.service_accounts
    service_urls      = module.meridian.service_urls
    subscriptions     = module.meridian.subscriptions
    topics            = module.meridian.topics
    workflows         = module.meridian.workflows
  }
}
