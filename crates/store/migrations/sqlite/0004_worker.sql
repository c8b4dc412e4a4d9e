-- Output of workflow actions, streamed by workers, kept per workflow.
CREATE TABLE action_log (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow_id  TEXT NOT NULL REFERENCES workflow(id) ON DELETE CASCADE,
    action       TEXT NOT NULL,
    at           INTEGER NOT NULL,
    body         TEXT NOT NULL
);
CREATE INDEX action_log_by_wf ON action_log(workflow_id, seq);

-- Facts a worker reported about its machine (CPU, memory, disks, NICs).
CREATE TABLE inventory (
    hardware_id  TEXT PRIMARY KEY REFERENCES hardware(id) ON DELETE CASCADE,
    worker       TEXT NOT NULL,
    body         TEXT NOT NULL,
    updated_at   INTEGER NOT NULL
);
