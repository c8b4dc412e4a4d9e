-- Operator bearer tokens. Only the SHA-256 of a token is kept: a copied
-- database grants nothing.
CREATE TABLE api_token (
    name        TEXT PRIMARY KEY,
    digest      TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

-- Per-boot worker credentials, one per worker id (a new boot replaces the
-- last one), so the table is bounded by the number of machines.
CREATE TABLE worker_credential (
    worker       TEXT PRIMARY KEY,
    digest       TEXT NOT NULL UNIQUE,
    hardware_id  TEXT NOT NULL REFERENCES hardware(id) ON DELETE CASCADE,
    workflow_id  TEXT NOT NULL,
    address      TEXT,
    issued_at    INTEGER NOT NULL
);

-- Who changed what through the management API.
CREATE TABLE audit (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    method  TEXT NOT NULL,
    path    TEXT NOT NULL,
    status  INTEGER NOT NULL
);
