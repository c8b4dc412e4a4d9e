-- Portable SQL: TEXT for ids and JSON, INTEGER for Unix-millisecond times,
-- so the PostgreSQL schema is the same statements with BIGINT/BIGSERIAL.

CREATE TABLE hardware (
    id          TEXT PRIMARY KEY,
    body        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- One row per MAC / reserved IP: the primary keys make both unique across
-- all hardware, whatever the application layer does.
CREATE TABLE hardware_mac (
    mac          TEXT PRIMARY KEY,
    hardware_id  TEXT NOT NULL REFERENCES hardware(id) ON DELETE CASCADE
);
CREATE INDEX hardware_mac_by_hw ON hardware_mac(hardware_id);

CREATE TABLE hardware_ip (
    ip           TEXT PRIMARY KEY,
    hardware_id  TEXT NOT NULL REFERENCES hardware(id) ON DELETE CASCADE
);
CREATE INDEX hardware_ip_by_hw ON hardware_ip(hardware_id);

CREATE TABLE template (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    data        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE workflow (
    id           TEXT PRIMARY KEY,
    template_id  TEXT NOT NULL,
    hardware_id  TEXT,
    state        TEXT NOT NULL,
    body         TEXT NOT NULL,
    version      INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX workflow_by_state ON workflow(state);

-- Which workers a workflow has tasks for (lowercased), so a worker finds
-- its work and hardware deletion can see active workflows.
CREATE TABLE workflow_worker (
    workflow_id  TEXT NOT NULL REFERENCES workflow(id) ON DELETE CASCADE,
    worker       TEXT NOT NULL,
    PRIMARY KEY (workflow_id, worker)
);
CREATE INDEX workflow_worker_by_worker ON workflow_worker(worker);

CREATE TABLE workflow_event (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow_id  TEXT NOT NULL REFERENCES workflow(id) ON DELETE CASCADE,
    at           INTEGER NOT NULL,
    body         TEXT NOT NULL
);
CREATE INDEX workflow_event_by_wf ON workflow_event(workflow_id, seq);
