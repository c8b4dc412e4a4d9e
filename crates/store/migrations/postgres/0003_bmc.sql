-- BMC records: how to reach a machine's baseboard management controller.
-- The password is write-only through the API and never leaves the store
-- except to the BMC client.
CREATE TABLE bmc (
    hardware_id   TEXT COLLATE "C" PRIMARY KEY REFERENCES hardware(id) ON DELETE CASCADE,
    body          TEXT COLLATE "C" NOT NULL,
    secret        TEXT COLLATE "C" NOT NULL,
    updated_at    BIGINT NOT NULL
);
