-- Each machine's boot timeline (bellows_model::timeline): the steps the
-- services saw it take, newest kept (a bounded number per machine).
CREATE TABLE boot_event (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    hardware_id  TEXT NOT NULL,
    at           INTEGER NOT NULL,
    step         TEXT NOT NULL,
    detail       TEXT NOT NULL
);
CREATE INDEX boot_event_by_hardware ON boot_event(hardware_id, seq);
