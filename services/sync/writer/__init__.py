"""The migration bridge's push direction (#21 item 5): the ``legacy-writer`` push reactor writes
Meridian's parcel facts from ``logistics.events`` into the monolith's PostgreSQL tables, each
event in one transaction with its id in ``bridge_processed_events``. ``tables`` is the port it
writes through, ``postgres`` its PostgreSQL adapter, ``handlers`` the rules, ``app`` the entrypoint.
"""
