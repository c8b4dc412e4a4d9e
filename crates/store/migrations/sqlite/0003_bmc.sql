-- BMC records: how to reach a machine's baseboard management controller.
-- The password is write-only through the API and never leaves the store
-- except to the BMC client.
CREATE TABLE bmc (
    hardware_id   TEXT PRIMARY KEY REFERENCES hardware(id) ON DELETE CASCADE,
    body          TEXT NOT NULL,
    secret        TEXT NOT NULL,
    updated_at    INTEGER NOT NULL
);
