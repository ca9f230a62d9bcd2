"""Embedded stand-ins for third parties (SMS provider, a client's billing API) and local adapters
for the external ports (travel time, blob store). Never used on the gcp backend."""
