-- Enrolment rules (bellows_model::discovery::rule): tried in order on each
-- discovered machine. `enrolled` counts the machines each rule took, the
-- {counter} of its hostname pattern.
CREATE TABLE rule (
    name        TEXT PRIMARY KEY,
    body        TEXT NOT NULL,
    enrolled    INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
