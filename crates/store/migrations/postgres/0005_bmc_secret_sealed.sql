-- BMC passwords are sealed (AEAD) from now on. Rows written before this
-- migration hold clear text and keep format 0 until the store, at open,
-- seals them and sets format 1; the value itself then starts with "v1:".
ALTER TABLE bmc ADD COLUMN secret_format BIGINT NOT NULL DEFAULT 0;

-- Which key sealed them: a fingerprint of it (never the key), so a store
-- opened with another key refuses at once instead of at the next power call.
CREATE TABLE secret_key (
    id           BIGINT PRIMARY KEY CHECK (id = 1),
    fingerprint  TEXT COLLATE "C" NOT NULL
);
