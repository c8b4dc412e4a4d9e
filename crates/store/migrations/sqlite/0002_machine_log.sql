-- Logs booting machines send (syslog), filed per machine. `machine` is the
-- hardware id, or `ip:<address>` for a sender Bellows does not know.
CREATE TABLE machine_log (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    machine  TEXT NOT NULL,
    at       INTEGER NOT NULL,
    body     TEXT NOT NULL
);
CREATE INDEX machine_log_by_machine ON machine_log(machine, seq);
