-- The legacy monolith's PostgreSQL, as the migration bridge (#21, services/sync/) sees it: a
-- representative subset of its tables, and the bridge's own tables.
--
-- Every monolith table has:
--   id          text primary key
--   updated_at  timestamptz, set by the touch trigger to the time of the write, after the
--               writing transaction has taken its transaction id: a transaction that commits
--               late carries an older stamp than rows committed before it
--               (services/sync/pull.py says how the pull copes)
--   version     bigint, +1 on every update (the trigger)
--   written_by  'monolith' or 'meridian': who made the row's latest change. The trigger sets it
--               from the session setting meridian.origin, which only the bridge's push direction
--               sets (SET LOCAL meridian.origin = 'meridian'); the monolith's own code knows
--               nothing of it, so each of its writes is 'monolith'. The pull reads only
--               'monolith' rows: what the bridge wrote never comes back (echo suppression).
--   deleted_at  soft delete: the monolith never deletes a row, it stamps deleted_at, which is an
--               ordinary change the pull sees like any other (no tombstones).

CREATE TABLE clients (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    email       text,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    version     bigint NOT NULL DEFAULT 1,
    written_by  text NOT NULL DEFAULT 'monolith' CHECK (written_by IN ('monolith', 'meridian')),
    deleted_at  timestamptz
);

CREATE TABLE drivers (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    phone       text NOT NULL,
    status      text NOT NULL DEFAULT 'AVAILABLE',
    updated_at  timestamptz NOT NULL DEFAULT now(),
    version     bigint NOT NULL DEFAULT 1,
    written_by  text NOT NULL DEFAULT 'monolith' CHECK (written_by IN ('monolith', 'meridian')),
    deleted_at  timestamptz
);

CREATE TABLE vehicles (
    id                text PRIMARY KEY,
    capacity_kg       numeric(10, 2) NOT NULL,
    capacity_parcels  integer NOT NULL,
    depot_lat         double precision NOT NULL,
    depot_lng         double precision NOT NULL,
    status            text NOT NULL DEFAULT 'AVAILABLE',
    updated_at        timestamptz NOT NULL DEFAULT now(),
    version           bigint NOT NULL DEFAULT 1,
    written_by        text NOT NULL DEFAULT 'monolith' CHECK (written_by IN ('monolith', 'meridian')),
    deleted_at        timestamptz
);

CREATE TABLE shipments (
    id          text PRIMARY KEY,
    client_id   text NOT NULL REFERENCES clients (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    version     bigint NOT NULL DEFAULT 1,
    written_by  text NOT NULL DEFAULT 'monolith' CHECK (written_by IN ('monolith', 'meridian')),
    deleted_at  timestamptz
);

CREATE TABLE parcels (
    id               text PRIMARY KEY,
    shipment_id      text NOT NULL REFERENCES shipments (id),
    client_id        text NOT NULL REFERENCES clients (id),
    recipient_name   text NOT NULL,
    recipient_phone  text NOT NULL,
    weight_kg        numeric(8, 3) NOT NULL,
    -- the stop: where and when the parcel must arrive
    stop_address     text NOT NULL,
    stop_lat         double precision NOT NULL,
    stop_lng         double precision NOT NULL,
    window_start     timestamptz NOT NULL,
    window_end       timestamptz NOT NULL,
    status           text NOT NULL DEFAULT 'CREATED',
    driver_id        text,
    vehicle_id       text,
    attempts         integer NOT NULL DEFAULT 0,
    failure_reason   text,
    delivered_at     timestamptz,
    delivered_lat    double precision,
    delivered_lng    double precision,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    version          bigint NOT NULL DEFAULT 1,
    written_by       text NOT NULL DEFAULT 'monolith' CHECK (written_by IN ('monolith', 'meridian')),
    deleted_at       timestamptz
);

CREATE INDEX parcels_shipment ON parcels (shipment_id);

-- Who wrote a change: the bridge's push direction sets meridian.origin for its transaction; any
-- other writer is the monolith. Stamps every insert and update, whatever the writer says.
CREATE FUNCTION bridge_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- The transaction id first, so that pg_stat_activity shows this transaction as a writer
    -- before any row carries its stamp: the pull's horizon (services/sync/pull.py) relies on it.
    PERFORM pg_current_xact_id();
    NEW.updated_at := clock_timestamp();
    NEW.written_by := coalesce(nullif(current_setting('meridian.origin', true), ''), 'monolith');
    IF TG_OP = 'UPDATE' THEN
        NEW.version := OLD.version + 1;
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER clients_touch BEFORE INSERT OR UPDATE ON clients
    FOR EACH ROW EXECUTE FUNCTION bridge_touch();
CREATE TRIGGER drivers_touch BEFORE INSERT OR UPDATE ON drivers
    FOR EACH ROW EXECUTE FUNCTION bridge_touch();
CREATE TRIGGER vehicles_touch BEFORE INSERT OR UPDATE ON vehicles
    FOR EACH ROW EXECUTE FUNCTION bridge_touch();
CREATE TRIGGER shipments_touch BEFORE INSERT OR UPDATE ON shipments
    FOR EACH ROW EXECUTE FUNCTION bridge_touch();
CREATE TRIGGER parcels_touch BEFORE INSERT OR UPDATE ON parcels
    FOR EACH ROW EXECUTE FUNCTION bridge_touch();

-- The pull's keyset: what changed since the cursor, in (updated_at, id) order.
CREATE INDEX clients_changes ON clients (updated_at, id);
CREATE INDEX drivers_changes ON drivers (updated_at, id);
CREATE INDEX vehicles_changes ON vehicles (updated_at, id);
CREATE INDEX shipments_changes ON shipments (updated_at, id);
CREATE INDEX parcels_changes ON parcels (updated_at, id);

-- The bridge's own tables ------------------------------------------------------------------------

-- The pull's cursor per entity: the (updated_at, id) of the last row published in a
-- SyncRequested page. Advanced only after that page's event is published (services/sync/pull.py).
CREATE TABLE bridge_cursors (
    entity      text PRIMARY KEY,
    updated_at  timestamptz NOT NULL,
    id          text NOT NULL,
    moved_at    timestamptz NOT NULL DEFAULT now()
);

-- The push direction: each Meridian event applied, written in the same transaction as its effect,
-- so a redelivered event changes nothing (a duplicate key means: already done, ack). ``subject``
-- (the parcel) and ``occurred_at`` (Meridian's commit) let the writer tell a stale event: one
-- older than a fact already applied to the same parcel changes nothing
-- (services/sync/writer/handlers.py).
CREATE TABLE bridge_processed_events (
    event_id      text PRIMARY KEY,
    event_type    text NOT NULL,
    subject       text NOT NULL,
    occurred_at   timestamptz NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX bridge_processed_events_subject ON bridge_processed_events (subject, occurred_at);
